#if canImport(Glibc)
import Glibc
#endif
import Foundation
import StormTestSupport
import Testing

@testable import StormBroker
@testable import StormConfiguration
@testable import StormConsumer
@testable import StormGateway
@testable import StormNATS
@testable import StormObservability
@testable import StormPresence
@testable import StormStore

/// The systemd notifier against a datagram socket the test binds (path and abstract namespace), and the
/// process metrics against this very test process.
@Suite("Operations")
struct OperationsTests {
    // MARK: sd_notify

    @Test("READY, STATUS, STOPPING reach a socket bound at a path")
    func notifiesPathSocket() throws {
        let path = NSTemporaryDirectory() + "storm-notify-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).sock"
        let receiver = try DatagramReceiver(name: path)
        defer { receiver.close(); unlink(path) }
        let notifier = try #require(SystemdNotifier.fromEnvironment(["NOTIFY_SOCKET": path]))
        #expect(notifier.watchdogInterval == nil)

        notifier.ready(status: "listening on 127.0.0.1:8080\nsecond line")
        let ready = try #require(receiver.receive())
        #expect(ready.split(separator: "\n") == ["READY=1", "STATUS=listening on 127.0.0.1:8080 second line", "MAINPID=\(getpid())"])

        notifier.stopping()
        #expect(receiver.receive() == "STOPPING=1\nSTATUS=draining client connections")
        notifier.status("12 connections")
        #expect(receiver.receive() == "STATUS=12 connections")
    }

    @Test("an abstract socket (@name) works")
    func notifiesAbstractSocket() throws {
        let name = "@storm-test-notify-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let receiver = try DatagramReceiver(name: name)
        defer { receiver.close() }
        let notifier = try #require(SystemdNotifier.fromEnvironment(["NOTIFY_SOCKET": name]))
        notifier.watchdogPing()
        #expect(receiver.receive() == "WATCHDOG=1")
    }

    @Test("the watchdog pings every half of WATCHDOG_USEC until cancelled")
    func watchdogPings() async throws {
        let name = "@storm-test-watchdog-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let receiver = try DatagramReceiver(name: name)
        defer { receiver.close() }
        let notifier = try #require(SystemdNotifier.fromEnvironment(["NOTIFY_SOCKET": name, "WATCHDOG_USEC": "100000", "WATCHDOG_PID": "\(getpid())"]))
        #expect(notifier.watchdogInterval == .milliseconds(50))
        let task = try #require(notifier.startWatchdog())
        defer { task.cancel() }
        for _ in 0..<3 {
            #expect(receiver.receive(timeoutMilliseconds: 30_000) == "WATCHDOG=1")  // a deadline, not a timing: a busy machine may delay the task
        }
    }

    @Test("no NOTIFY_SOCKET, a bad one, or a watchdog for another PID")
    func environmentEdgeCases() {
        #expect(SystemdNotifier.fromEnvironment([:]) == nil)
        #expect(SystemdNotifier.fromEnvironment(["NOTIFY_SOCKET": ""]) == nil)
        #expect(SystemdNotifier.fromEnvironment(["NOTIFY_SOCKET": "relative/path"]) == nil)
        #expect(SystemdNotifier.fromEnvironment(["NOTIFY_SOCKET": "/" + String(repeating: "x", count: 200)]) == nil)
        #expect(SystemdNotifier.watchdogInterval(["WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"]) == (getpid() == 1 ? .seconds(1) : nil))
        #expect(SystemdNotifier.watchdogInterval(["WATCHDOG_USEC": "2000000"]) == .seconds(1))
        #expect(SystemdNotifier.watchdogInterval(["WATCHDOG_USEC": "zero"]) == nil)
    }

    @Test("sending to a socket nobody listens on is a typed failure, not a crash")
    func sendFailure() throws {
        let notifier = try #require(SystemdNotifier.fromEnvironment(["NOTIFY_SOCKET": "@storm-test-nobody-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"]))
        #expect(throws: SystemdNotifier.Failure.self) { try notifier.send("READY=1") }
        notifier.ready(status: "logged, not thrown")
    }

    // MARK: Process metrics

    @Test("process metrics of this process are plausible")
    func processSampleIsPlausible() throws {
        burnCPUUntilTicksShow()
        let sample = ProcessMetrics.read()
        let cpu = try #require(sample.cpuSeconds)
        #expect(cpu > 0)
        let resident = try #require(sample.residentMemoryBytes)
        #expect(resident > 1 << 20)
        let virtual = try #require(sample.virtualMemoryBytes)
        #expect(virtual >= resident)
        let open = try #require(sample.openFileDescriptors)
        #expect(open >= 3)
        let max = try #require(sample.maxFileDescriptors)
        #expect(max >= UInt64(open))
        let start = try #require(sample.startTimeSeconds)
        let now = Date().timeIntervalSince1970
        #expect(start > 1_600_000_000 && start <= now + 1)
    }

    @Test("the exposition has HELP, TYPE and a positive value for each family")
    func processExpositionParses() throws {
        burnCPUUntilTicksShow()
        var buffer: [UInt8] = Array("# earlier output\n".utf8)
        ProcessMetrics.append(to: &buffer)
        let text = String(decoding: buffer, as: UTF8.self)
        #expect(text.hasPrefix("# earlier output\n"))
        #expect(text.hasSuffix("\n"))
        let expected: [(String, String)] = [
            ("process_cpu_seconds_total", "counter"), ("process_resident_memory_bytes", "gauge"),
            ("process_virtual_memory_bytes", "gauge"), ("process_open_fds", "gauge"),
            ("process_max_fds", "gauge"), ("process_start_time_seconds", "gauge"),
        ]
        let lines = text.split(separator: "\n").map(String.init)
        for (name, type) in expected {
            #expect(lines.contains { $0.hasPrefix("# HELP \(name) ") }, "no HELP for \(name)")
            #expect(lines.contains("# TYPE \(name) \(type)"), "no TYPE for \(name)")
            let sample = lines.first { $0.hasPrefix("\(name) ") }
            let value = try #require(sample.flatMap { Double($0.dropFirst(name.count + 1)) }, "no sample for \(name)")
            #expect(value > 0, "\(name) is \(value)")
        }
    }

    @Test("/proc parsing copes with odd command names and fixed inputs")
    func procParsing() throws {
        // Field numbers from proc(5): 14 utime, 15 stime, 22 starttime, 23 vsize, 24 rss.
        var fields = (3...52).map { String($0) }
        fields[0] = "S"
        let stat = try #require(ProcessMetrics.parseStat("4242 (a) b (c)) " + fields.joined(separator: " ") + "\n"))
        #expect(stat == .init(userTicks: 14, systemTicks: 15, startTicks: 22, virtualBytes: 23, residentPages: 24))
        #expect(ProcessMetrics.parseStat("4242 (short) S 1 2") == nil)
        // Typed constants: an Optional compared with an arithmetic literal trips the #expect macro.
        let residentBytes: UInt64? = ProcessMetrics.parseResidentBytes("Name:\tx\nVmRSS:\t   2048 kB\nThreads:\t4\n")
        #expect(residentBytes == UInt64(2_097_152))
        let bootTime: UInt64? = ProcessMetrics.parseBootTime("cpu  1 2 3\nbtime 1700000000\nprocesses 9\n")
        #expect(bootTime == UInt64(1_700_000_000))
        // The fallback for a hidden /proc/stat (ProcSubset=pid) agrees with btime to within a second or two.
        if let btime = ProcessMetrics.readText("/proc/stat").flatMap(ProcessMetrics.parseBootTime) {
            let clocks = try #require(ProcessMetrics.bootTimeFromClocks())
            #expect(abs(clocks - Double(btime)) < 2)
        }

        var buffer: [UInt8] = []
        ProcessMetrics.append(.init(cpuSeconds: 1.5, residentMemoryBytes: 10, openFileDescriptors: 7), to: &buffer)
        #expect(String(decoding: buffer, as: UTF8.self) == """
            # HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.
            # TYPE process_cpu_seconds_total counter
            process_cpu_seconds_total 1.5
            # HELP process_resident_memory_bytes Resident memory size in bytes.
            # TYPE process_resident_memory_bytes gauge
            process_resident_memory_bytes 10
            # HELP process_open_fds Number of open file descriptors.
            # TYPE process_open_fds gauge
            process_open_fds 7

            """)
    }

    /// CPU time counts in clock ticks (10 ms): a test process that has barely run may show 0 s. Busy work
    /// for at most two seconds makes "greater than zero" a fair expectation.
    private func burnCPUUntilTicksShow() {
        let deadline = Date().addingTimeInterval(2)
        var accumulator: UInt64 = 1
        while (ProcessMetrics.read().cpuSeconds ?? 0) < 0.02, Date() < deadline {
            for index in 0..<200_000 { accumulator = accumulator &* 6364136223846793005 &+ UInt64(index) }
        }
        #expect(accumulator != 0)
    }
}

/// A bound `AF_UNIX` datagram socket standing in for systemd's notification socket.
private final class DatagramReceiver {
    private let descriptor: Int32

    struct SetupError: Error, CustomStringConvertible {
        var description: String
    }

    init(name: String) throws {
        guard let (address, length) = SystemdNotifier.makeAddress(name) else { throw SetupError(description: "bad socket name \(name)") }
        descriptor = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard descriptor >= 0 else { throw SetupError(description: "socket: \(String(cString: strerror(errno)))") }
        var target = address
        let status = withUnsafePointer(to: &target) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(descriptor, $0, length) }
        }
        guard status == 0 else {
            let message = String(cString: strerror(errno))
            Glibc.close(descriptor)
            throw SetupError(description: "bind \(name): \(message)")
        }
    }

    /// One datagram, or nil after `timeoutMilliseconds` (bounded so a missing message fails the test
    /// instead of hanging it).
    func receive(timeoutMilliseconds: Int32 = 1000) -> String? {
        var poller = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
        guard poll(&poller, 1, timeoutMilliseconds) == 1 else { return nil }
        var buffer = [UInt8](repeating: 0, count: 4096)
        let count = buffer.withUnsafeMutableBytes { recv(descriptor, $0.baseAddress, $0.count, 0) }
        guard count >= 0 else { return nil }
        return String(decoding: buffer[0..<count], as: UTF8.self)
    }

    func close() {
        Glibc.close(descriptor)
    }
}
