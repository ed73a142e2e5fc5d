#if canImport(Glibc)
import Glibc
#endif
import Foundation
import StormCore

/// The standard `process_*` metrics every Prometheus client library exports, read from `/proc` at scrape
/// time and appended to the gateway's exposition.
///
/// Why by hand: swift-prometheus has no process collector, and dashboards and alerts (CPU, resident
/// memory, open descriptors against the limit, restarts through the start time) expect exactly these
/// names and meanings:
///
/// | metric | type | source |
/// |---|---|---|
/// | `process_cpu_seconds_total` | counter | `/proc/self/stat` utime + stime, in clock ticks |
/// | `process_resident_memory_bytes` | gauge | `/proc/self/status` VmRSS (stat's rss as fallback) |
/// | `process_virtual_memory_bytes` | gauge | `/proc/self/stat` vsize |
/// | `process_open_fds` | gauge | entries of `/proc/self/fd` |
/// | `process_max_fds` | gauge | `getrlimit(RLIMIT_NOFILE)` soft limit |
/// | `process_start_time_seconds` | gauge | `/proc/stat` btime (or the clocks) + stat's starttime in ticks |
///
/// A source that cannot be read leaves its metric out rather than failing the scrape. Cost: a few
/// small file reads plus one directory listing of the open descriptors, about a millisecond for
/// 20,000 connections; scrapes come every few seconds, so it runs on the event loop that serves them.
package enum ProcessMetrics {
    /// One reading of the process's figures; nil fields were not readable.
    package struct Sample: Sendable, Equatable {
        package var cpuSeconds: Double?
        package var residentMemoryBytes: UInt64?
        package var virtualMemoryBytes: UInt64?
        package var openFileDescriptors: Int?
        package var maxFileDescriptors: UInt64?
        package var startTimeSeconds: Double?
    }

    /// Appends the `process_*` families, with HELP and TYPE lines, in Prometheus text format 0.0.4.
    package static func append(to buffer: inout [UInt8]) {
        append(read(), to: &buffer)
    }

    /// Renders `sample`; separated from reading so the format can be tested on fixed numbers.
    package static func append(_ sample: Sample, to buffer: inout [UInt8]) {
        func family(_ name: String, _ type: String, _ help: String, _ value: String?) {
            guard let value else { return }
            buffer.append(contentsOf: "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n\(name) \(value)\n".utf8)
        }
        family("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.", sample.cpuSeconds.map(format))
        family("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", sample.residentMemoryBytes.map { String($0) })
        family("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", sample.virtualMemoryBytes.map { String($0) })
        family("process_open_fds", "gauge", "Number of open file descriptors.", sample.openFileDescriptors.map { String($0) })
        family("process_max_fds", "gauge", "Maximum number of open file descriptors.", sample.maxFileDescriptors.map { String($0) })
        family("process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.", sample.startTimeSeconds.map(format))
    }

    /// Reads every figure now.
    package static func read() -> Sample {
        var sample = Sample()
        let ticksPerSecond = Double(sysconf(Int32(_SC_CLK_TCK)))
        let pageSize = UInt64(max(0, sysconf(Int32(_SC_PAGESIZE))))
        if let stat = readText("/proc/self/stat").flatMap(parseStat) {
            if ticksPerSecond > 0 {
                sample.cpuSeconds = Double(stat.userTicks + stat.systemTicks) / ticksPerSecond
                let bootTime: Double? =
                    if let seconds = readText("/proc/stat").flatMap(parseBootTime) { Double(seconds) } else { bootTimeFromClocks() }
                if let bootTime {
                    sample.startTimeSeconds = bootTime + Double(stat.startTicks) / ticksPerSecond
                }
            }
            sample.virtualMemoryBytes = stat.virtualBytes
            sample.residentMemoryBytes = stat.residentPages * pageSize
        }
        if let resident = readText("/proc/self/status").flatMap(parseResidentBytes) {
            sample.residentMemoryBytes = resident
        }
        sample.openFileDescriptors = countOpenDescriptors()
        var limit = rlimit()
        if getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 { sample.maxFileDescriptors = UInt64(limit.rlim_cur) }
        return sample
    }

    // MARK: Parsing (internal for the tests)

    package struct Stat: Equatable {
        package var userTicks: UInt64
        package var systemTicks: UInt64
        package var startTicks: UInt64
        package var virtualBytes: UInt64
        package var residentPages: UInt64
    }

    /// `/proc/self/stat`: `pid (comm) state ppid …`. The command name may hold spaces and parentheses,
    /// so fields are counted from the last `)`; after it, field 3 (state) comes first (proc(5)).
    package static func parseStat(_ text: String) -> Stat? {
        guard let close = text.lastIndex(of: ")") else { return nil }
        let fields = text[text.index(after: close)...].split(whereSeparator: { $0 == " " || $0 == "\n" })
        // proc(5) numbers fields from 1; fields[0] is field 3.
        func field(_ number: Int) -> UInt64? {
            let index = number - 3
            guard fields.indices.contains(index) else { return nil }
            return UInt64(fields[index])
        }
        guard let utime = field(14), let stime = field(15), let start = field(22), let vsize = field(23), let rss = field(24) else {
            return nil
        }
        return Stat(userTicks: utime, systemTicks: stime, startTicks: start, virtualBytes: vsize, residentPages: rss)
    }

    /// `VmRSS:  1234 kB` from `/proc/self/status`, in bytes.
    package static func parseResidentBytes(_ text: String) -> UInt64? {
        for line in text.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            // The kernel writes `VmRSS:\t   1234 kB`: a tab, then spaces.
            let parts = line.dropFirst("VmRSS:".count).split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard let number = parts.first.flatMap({ UInt64($0) }) else { return nil }
            let unit = parts.count > 1 ? parts[1].lowercased() : "kb"
            return unit == "kb" ? number * 1024 : number
        }
        return nil
    }

    /// `btime SECONDS` from `/proc/stat`: the boot time, Unix epoch.
    package static func parseBootTime(_ text: String) -> UInt64? {
        for line in text.split(separator: "\n") where line.hasPrefix("btime ") {
            return UInt64(line.dropFirst("btime ".count).trimmingCharacters(in: .whitespaces))
        }
        return nil
    }

    /// Boot time as wall clock minus time since boot, for when `/proc/stat` is hidden (systemd's
    /// `ProcSubset=pid` leaves only the per-process files); the kernel counts `starttime` on the same
    /// boot clock, so both routes agree to within a scrape.
    package static func bootTimeFromClocks() -> Double? {
        var wall = timespec()
        var boot = timespec()
        guard clock_gettime(CLOCK_REALTIME, &wall) == 0, clock_gettime(CLOCK_BOOTTIME, &boot) == 0 else { return nil }
        return (Double(wall.tv_sec) + Double(wall.tv_nsec) / 1e9) - (Double(boot.tv_sec) + Double(boot.tv_nsec) / 1e9)
    }

    /// Prometheus accepts Go's float syntax; Swift's shortest round-trip rendering is a subset of it.
    package static func format(_ value: Double) -> String {
        value.isFinite ? "\(value)" : "NaN"
    }

    // MARK: Reading

    /// `/proc` files report a size of 0, so read until end of file rather than trusting `stat` (which is
    /// also why Foundation's `String(contentsOfFile:)` is not used here).
    package static func readText(_ path: String) -> String? {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { return nil }
        defer { close(descriptor) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = chunk.withUnsafeMutableBytes { Glibc.read(descriptor, $0.baseAddress, $0.count) }
            if count < 0, errno == EINTR { continue }
            guard count > 0 else { break }
            bytes.append(contentsOf: chunk[0..<count])
            if bytes.count > 1 << 20 { break }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Entries of `/proc/self/fd`, less the descriptor the listing itself holds open.
    private static func countOpenDescriptors() -> Int? {
        guard let directory = opendir("/proc/self/fd") else { return nil }
        defer { closedir(directory) }
        var count = 0
        // Read the name's first byte in place: copying `entry.pointee` copies a full `dirent`, and the
        // kernel's records are shorter than that at the end of readdir's buffer (a crash seen in CI).
        let nameOffset = MemoryLayout<dirent>.offset(of: \dirent.d_name) ?? 19
        while let entry = readdir(directory) {
            let first = UnsafeRawPointer(entry).load(fromByteOffset: nameOffset, as: UInt8.self)
            if first != UInt8(ascii: ".") { count += 1 }
        }
        return max(0, count - 1)
    }
}
