#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Logging
import ServiceLifecycle
import StormCore

/// Tells systemd about stormd's state through the `sd_notify` datagram protocol, without libsystemd.
///
/// Why not libsystemd: the protocol is one `AF_UNIX` datagram of `KEY=VALUE` lines sent to the socket
/// named by `NOTIFY_SOCKET`, so a few lines of code avoid a C dependency and its `-dev` package on every
/// build machine. What stormd sends:
///
/// - `READY=1` (with `STATUS=` and `MAINPID=`) once the listener is bound and the broker is connected,
///   so `Type=notify` units are "started" only when the gateway can really serve;
/// - `STOPPING=1` when a graceful shutdown begins (draining clients);
/// - `WATCHDOG=1` every half of `WATCHDOG_USEC`, so `WatchdogSec=` restarts a hung process;
/// - `STATUS=…` for `systemctl status`.
///
/// `NOTIFY_SOCKET` is either a filesystem path (`/run/systemd/notify`) or, with a leading `@`, a name
/// in the abstract namespace (`@/org/freedesktop/systemd1/notify/…`). Outside systemd the variable is
/// unset and `fromEnvironment()` returns nil: callers write `notifier?.ready(…)` and need no other check.
///
/// Thread safety: the socket descriptor is created once and never changes; `sendto` on a datagram
/// socket is atomic, so every method may be called from any thread or task.
package final class SystemdNotifier: Sendable {
    /// Why a notification could not be sent; stormd logs it and carries on (systemd then times out the
    /// start, which is the visible symptom an operator needs).
    package struct Failure: Error, CustomStringConvertible {
        package var call: String
        package var errno: Int32
        package var socket: String
        package var description: String { "\(call) on NOTIFY_SOCKET '\(socket)' failed: \(String(cString: strerror(errno)))" }
    }

    /// The socket as given in `NOTIFY_SOCKET` (`@` marks the abstract namespace).
    package let socketName: String
    /// How often to send `WATCHDOG=1`: half of `WATCHDOG_USEC`, or nil when the unit has no watchdog (or
    /// the watchdog is meant for another process, `WATCHDOG_PID`).
    package let watchdogInterval: Duration?

    private let descriptor: Int32
    private let address: sockaddr_un
    private let addressLength: socklen_t
    private let logger: Logger

    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID`; nil when not started by systemd with
    /// `Type=notify` (or the variable is unusable, which is logged).
    ///
    /// - Parameters:
    ///   - environment: the process environment (a parameter so tests can pass their own).
    ///   - unsetEnvironment: remove the three variables from this process's environment, so child
    ///     processes (`--workers` spawns copies of stormd) do not notify on the supervisor's behalf:
    ///     systemd only accepts messages from the main PID under the default `NotifyAccess=main`.
    package static func fromEnvironment(
        _ environment: [String: String] = ProcessInfo.processInfo.environment,
        unsetEnvironment: Bool = false,
        logger: Logger = Logger(label: "stormd.systemd")
    ) -> SystemdNotifier? {
        if unsetEnvironment {
            for name in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] { unsetenv(name) }
        }
        guard let socketName = environment["NOTIFY_SOCKET"], !socketName.isEmpty else { return nil }
        guard let (address, length) = makeAddress(socketName) else {
            logger.warning("NOTIFY_SOCKET is not a usable unix socket address; not notifying systemd", metadata: ["systemd.notify_socket": "\(socketName)"])
            return nil
        }
        let descriptor = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard descriptor >= 0 else {
            logger.warning("cannot create the sd_notify socket; not notifying systemd", metadata: ["error": "\(String(cString: strerror(errno)))"])
            return nil
        }
        return SystemdNotifier(
            socketName: socketName, descriptor: descriptor, address: address, addressLength: length,
            watchdogInterval: watchdogInterval(environment), logger: logger)
    }

    private init(socketName: String, descriptor: Int32, address: sockaddr_un, addressLength: socklen_t, watchdogInterval: Duration?, logger: Logger) {
        self.socketName = socketName
        self.descriptor = descriptor
        self.address = address
        self.addressLength = addressLength
        self.watchdogInterval = watchdogInterval
        self.logger = logger
    }

    deinit {
        close(descriptor)
    }

    // MARK: What stormd says

    /// `READY=1`: the service is up. `MAINPID` is sent too, so a process that is not the one systemd
    /// forked (a wrapper script that `exec`s nothing) still tells which PID to watch.
    package func ready(status: String) {
        notify(["READY=1", "STATUS=\(Self.clean(status))", "MAINPID=\(getpid())"])
    }

    /// `STOPPING=1`: a graceful shutdown began; systemd shows "deactivating" while clients drain.
    package func stopping(status: String = "draining client connections") {
        notify(["STOPPING=1", "STATUS=\(Self.clean(status))"])
    }

    /// `STATUS=…`: one line for `systemctl status`.
    package func status(_ text: String) {
        notify(["STATUS=\(Self.clean(text))"])
    }

    /// `WATCHDOG=1`: one keep-alive ping.
    package func watchdogPing() {
        notify(["WATCHDOG=1"])
    }

    /// Pings the watchdog every `watchdogInterval` until the returned task is cancelled; nil when the
    /// unit has no watchdog. The pings come from a Swift task, so a starved or deadlocked cooperative
    /// pool stops them and systemd restarts the process: that is the point.
    @discardableResult
    package func startWatchdog() -> Task<Void, Never>? {
        guard let interval = watchdogInterval else { return nil }
        watchdogPing()
        return Task { [self] in
            while !Task.isCancelled {
                do { try await Task.sleep(for: interval) } catch { return }
                watchdogPing()
            }
        }
    }

    // MARK: The protocol

    /// Sends `lines` as one datagram, logging (not throwing) a failure: notifications are advisory and
    /// must never stop the gateway from serving.
    package func notify(_ lines: [String]) {
        do {
            try send(lines.joined(separator: "\n"))
        } catch {
            logger.warning("sd_notify failed", metadata: ["error": "\(error)"])
        }
    }

    /// The one place that calls `sendto`: checks its status and throws a typed failure naming the call.
    package func send(_ message: String) throws(Failure) {
        let bytes = Array(message.utf8)
        var target = address
        let sent = bytes.withUnsafeBytes { buffer in
            withUnsafePointer(to: &target) { pointer in
                pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { socketAddress in
                    sendto(descriptor, buffer.baseAddress, buffer.count, Int32(MSG_NOSIGNAL), socketAddress, addressLength)
                }
            }
        }
        guard sent == bytes.count else { throw Failure(call: "sendto", errno: sent < 0 ? errno : EMSGSIZE, socket: socketName) }
    }

    /// `NOTIFY_SOCKET` to a socket address: a path, or `@name` for the abstract namespace (its first byte
    /// becomes NUL and the length counts exactly the name's bytes, no terminator).
    package static func makeAddress(_ name: String) -> (sockaddr_un, socklen_t)? {
        var bytes = Array(name.utf8)
        let abstract = bytes.first == UInt8(ascii: "@")
        guard abstract || bytes.first == UInt8(ascii: "/") else { return nil }
        if abstract { bytes[0] = 0 }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        // A path needs room for its terminating NUL; an abstract name does not.
        guard bytes.count >= 2, bytes.count + (abstract ? 0 : 1) <= capacity else { return nil }
        withUnsafeMutableBytes(of: &address.sun_path) { path in
            path.copyBytes(from: bytes)
        }
        let pathOffset = MemoryLayout<sockaddr_un>.offset(of: \.sun_path) ?? MemoryLayout<sa_family_t>.size
        let length = pathOffset + bytes.count + (abstract ? 0 : 1)
        return (address, socklen_t(length))
    }

    /// Half of `WATCHDOG_USEC` (systemd's advice), when `WATCHDOG_PID` is absent or names this process.
    package static func watchdogInterval(_ environment: [String: String]) -> Duration? {
        guard let text = environment["WATCHDOG_USEC"], let microseconds = UInt64(text), microseconds > 0 else { return nil }
        if let pid = environment["WATCHDOG_PID"], !pid.isEmpty, pid != String(getpid()) { return nil }
        return .microseconds(Int64(clamping: microseconds / 2))
    }

    /// A status is one line: a newline would start a new (unintended) assignment.
    private static func clean(_ text: String) -> String {
        String(text.map { $0.isNewline ? " " : $0 })
    }
}

/// Runs beside the gateway in its `ServiceGroup`: pings the watchdog while the process serves and says
/// `STOPPING=1` as soon as a graceful shutdown begins.
///
/// Why a service: ServiceLifecycle signals graceful shutdown to services in reverse order, so listed
/// after the gateway this one hears SIGTERM first and tells systemd before the (up to
/// `--drain-timeout`) drain starts; returning then lets the group go on to the gateway.
package struct SystemdNotifierService: Service {
    package let notifier: SystemdNotifier

    package func run() async throws {
        let watchdog = notifier.startWatchdog()
        defer { watchdog?.cancel() }
        // Returns when graceful shutdown begins; throws only when the task is cancelled.
        try? await gracefulShutdown()
        notifier.stopping()
    }

    package init(notifier: SystemdNotifier) {
        self.notifier = notifier
    }
}
