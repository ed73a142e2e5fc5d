import NIOCore
import StormCore
import StormObservability

/// The connection limits a gateway applies at accept (docs/security.md, "Connection limits and
/// timeouts"). Defaults are the documented ones.
package struct ConnectionLimits: Sendable, Equatable {
    /// Any limit not given at its default.
    package init(
        maxConnections: Int? = nil, maxConnectionsPerIP: Int = 1_000, connectRatePerIP: Int = 200, limitLoopback: Bool = false,
        headerTimeout: TimeAmount = .seconds(10), idleTimeout: TimeAmount = .seconds(60), refusedHeaderTimeout: TimeAmount = .seconds(2)
    ) {
        self.maxConnections = maxConnections
        self.maxConnectionsPerIP = maxConnectionsPerIP
        self.connectRatePerIP = connectRatePerIP
        self.limitLoopback = limitLoopback
        self.headerTimeout = headerTimeout
        self.idleTimeout = idleTimeout
        self.refusedHeaderTimeout = refusedHeaderTimeout
    }

    /// `--max-connections N` (`STORM_MAX_CONNECTIONS`), default `nil`: derived from the open-files limit
    /// (soft limit minus `fileReserve`, at least `minimumConnections`). An explicit value is clamped to
    /// the same bound, so that the process never runs out of file descriptors for its own needs.
    package var maxConnections: Int?
    /// `--max-connections-per-ip N` (`STORM_MAX_CONNECTIONS_PER_IP`), default 1,000; 0 is unlimited.
    package var maxConnectionsPerIP = 1_000
    /// `--connect-rate-per-ip N` (`STORM_CONNECT_RATE_PER_IP`), default 200: new connections per second
    /// and source address, with a burst of as many; 0 turns it off.
    package var connectRatePerIP = 200
    /// `--limit-loopback on|off` (`STORM_LIMIT_LOOPBACK`), default off: whether the two per-address limits
    /// above apply to loopback clients too. Off by default because every client of a reverse proxy on
    /// the same host arrives from 127.0.0.1 (the limits belong at the proxy then), and local tools and
    /// load generators are the operator's own; `--max-connections` applies to everyone regardless.
    package var limitLoopback = false
    /// `--header-timeout` (`STORM_HEADER_TIMEOUT`), default 10 s: time a connection has to complete a
    /// request head once it is open (or once it sent the first byte of its next request).
    package var headerTimeout: TimeAmount = .seconds(10)
    /// `--idle-timeout` (`STORM_IDLE_TIMEOUT`), default 60 s: time a kept-alive HTTP connection may stay
    /// silent between requests. WebSocket and SSE sessions are governed by their ping and heartbeat.
    package var idleTimeout: TimeAmount = .seconds(60)

    /// File descriptors kept out of `--max-connections` for everything else the process opens (the
    /// listener, NATS, Redis, PostgreSQL, event loop descriptors, files) and for `probeReserve`.
    package static let fileReserve = 256
    /// The lowest connection limit the derivation and the clamp produce.
    package static let minimumConnections = 16
    /// Connections accepted beyond `--max-connections` that may only ask `/healthz`, `/readyz` and
    /// `/metrics`; every other request on them is answered 503 `too_many_connections`. Past these, a
    /// new connection is closed at once.
    package static let probeReserve = 32
    /// Time a refused or probe-only connection has to send its request head (at most the header
    /// timeout): refused connections must not hold descriptors for long.
    /// Not a flag; tests raise it so that a busy machine cannot cut a refusal before it is read.
    package var refusedHeaderTimeout: TimeAmount = .seconds(2)

    /// `--max-connections` as applied with an open-files soft limit of `openFiles`.
    package func effectiveMaxConnections(openFilesLimit openFiles: Int) -> Int {
        let bound = max(Self.minimumConnections, openFiles - Self.fileReserve)
        guard let maxConnections else { return bound }
        return max(1, min(maxConnections, bound))
    }
}

/// Whether a new connection is let in, and how: the decision `ConnectionGate` takes at accept, which
/// the gateway's channel initializer only carries out.
package enum ConnectionAdmission: Equatable, Sendable {
    /// A normal connection, counted against its address until `release`.
    case admitted
    /// Past `--max-connections`, within the probe reserve: `/healthz`, `/readyz` and `/metrics` only.
    case probesOnly
    /// Refused: its first request is answered with this error (503) and these seconds as `Retry-After`,
    /// then the connection is closed.
    case refused(ConnectionRefusal, retryAfterSeconds: Int)
    /// Past the probe reserve too: closed at once, without an answer.
    case closeNow

    /// Why a connection was refused (declared beside the metric whose label it is).
    package typealias ConnectionRefusal = GatewayMetrics.ConnectionRefusal
}

/// Counts connections and decides, at accept, whether a new one is let in: a limit for the process
/// (`--max-connections`, with a small reserve for the probes), one per source address
/// (`--max-connections-per-ip`), and a token bucket per source address for the connect rate
/// (`--connect-rate-per-ip`).
///
/// A plain value with no clock and no I/O: callers pass the time in, and the gateway keeps one behind a
/// lock, shared by its event loops (a decision costs a dictionary lookup). Memory is bounded: an
/// address is tracked while it has connections or while its bucket refills; idle entries are swept
/// every `sweepInterval`, and at `maxTrackedAddresses` at once (then, if all are still refilling, the
/// ones without connections are forgotten: the rate limit fails open rather than grow without bound).
package struct ConnectionGate: Sendable {
    package struct Entry: Sendable, Equatable {
        /// Admitted connections from this address that are still open.
        package var open = 0
        /// Tokens in the connect-rate bucket, as of `refilled`.
        package var tokens: Double
        package var refilled: NIODeadline
    }

    /// What `admit` returns besides the decision.
    package struct Outcome: Equatable, Sendable {
        package var admission: ConnectionAdmission
        /// True the first time `--max-connections` is reached (again after the count fell to 90% of
        /// it): the gateway logs it once.
        package var limitReached = false
    }

    package let maxConnections: Int
    package let maxPerAddress: Int
    package let ratePerSecond: Int
    package let probeReserve: Int
    package let maxTrackedAddresses: Int
    package let sweepInterval: TimeAmount

    /// Every accepted connection still open, admitted or not (each holds a file descriptor).
    private(set) var total = 0
    /// Open connections that were admitted (`total` minus probe-only and refused ones).
    private(set) var admitted = 0
    private(set) var entries: [String: Entry] = [:]
    private var nextSweep: NIODeadline?
    private var atLimit = false

    package init(maxConnections: Int, maxPerAddress: Int, ratePerSecond: Int, probeReserve: Int = ConnectionLimits.probeReserve, maxTrackedAddresses: Int = 100_000, sweepInterval: TimeAmount = .seconds(10)) {
        self.maxConnections = max(1, maxConnections)
        self.maxPerAddress = max(0, maxPerAddress)
        self.ratePerSecond = max(0, ratePerSecond)
        self.probeReserve = max(0, probeReserve)
        self.maxTrackedAddresses = max(1, maxTrackedAddresses)
        self.sweepInterval = sweepInterval
    }

    package init(limits: ConnectionLimits, openFilesLimit: Int) {
        self.init(maxConnections: limits.effectiveMaxConnections(openFilesLimit: openFilesLimit), maxPerAddress: limits.maxConnectionsPerIP, ratePerSecond: limits.connectRatePerIP)
        self.exemptsLoopback = !limits.limitLoopback
    }

    /// Whether loopback addresses skip the per-address limits (`ConnectionLimits.limitLoopback` off).
    package var exemptsLoopback = false

    /// 127.0.0.0/8, ::1 and IPv4-mapped loopback, as `SocketAddress.ipAddress` spells them.
    package static func isLoopback(_ address: String) -> Bool {
        address.hasPrefix("127.") || address == "::1" || address.hasPrefix("::ffff:127.")
    }

    /// Decides about a new connection from `address` (nil when it has none, a Unix socket: then only the
    /// process limit applies). Every outcome but `.closeNow` must be matched by one `release` with the
    /// same admission when the connection closes.
    package mutating func admit(address: String?, now: NIODeadline) -> Outcome {
        sweepIfDue(now: now)
        if total >= maxConnections + probeReserve { return Outcome(admission: .closeNow) }
        var reached = false
        if admitted >= maxConnections {
            total += 1
            if !atLimit {
                atLimit = true
                reached = true
            }
            return Outcome(admission: .probesOnly, limitReached: reached)
        }
        guard let address, maxPerAddress > 0 || ratePerSecond > 0, !(exemptsLoopback && Self.isLoopback(address)) else {
            total += 1
            admitted += 1
            return Outcome(admission: .admitted)
        }
        var entry = entries[address] ?? Entry(tokens: Double(ratePerSecond), refilled: now)
        if entries[address] == nil, entries.count >= maxTrackedAddresses { makeRoom(now: now) }
        if maxPerAddress > 0, entry.open >= maxPerAddress {
            total += 1
            entries[address] = entry
            return Outcome(admission: .refused(.maxConnectionsPerIP, retryAfterSeconds: 1))
        }
        if ratePerSecond > 0 {
            refill(&entry, now: now)
            guard entry.tokens >= 1 else {
                total += 1
                entries[address] = entry
                return Outcome(admission: .refused(.connectRate, retryAfterSeconds: retryAfter(tokens: entry.tokens)))
            }
            entry.tokens -= 1
        }
        entry.open += 1
        entries[address] = entry
        total += 1
        admitted += 1
        return Outcome(admission: .admitted)
    }

    /// A connection `admit` let in (in any way but `.closeNow`) has closed.
    package mutating func release(address: String?, admission: ConnectionAdmission) {
        guard admission != .closeNow else { return }
        total = max(0, total - 1)
        guard admission == .admitted else { return }
        admitted = max(0, admitted - 1)
        if atLimit, admitted * 10 <= maxConnections * 9 { atLimit = false }
        if let address, var entry = entries[address] {
            entry.open = max(0, entry.open - 1)
            entries[address] = entry
        }
    }

    /// Open admitted connections from `address`.
    package func openConnections(from address: String) -> Int { entries[address]?.open ?? 0 }

    private func refill(_ entry: inout Entry, now: NIODeadline) {
        guard now > entry.refilled else { return }
        let elapsed = Double((now - entry.refilled).nanoseconds) / 1e9
        entry.tokens = min(Double(ratePerSecond), entry.tokens + elapsed * Double(ratePerSecond))
        entry.refilled = now
    }

    /// Whole seconds until one token is back, at least 1 (`Retry-After` takes whole seconds).
    private func retryAfter(tokens: Double) -> Int {
        guard ratePerSecond > 0 else { return 1 }
        let seconds = (1 - tokens) / Double(ratePerSecond)
        guard seconds.isFinite, seconds > 0 else { return 1 }
        return max(1, min(3600, Int(seconds.rounded(.up))))
    }

    /// Whether an entry is worth keeping: it has connections, or its bucket is still refilling.
    private func isActive(_ entry: Entry, now: NIODeadline) -> Bool {
        if entry.open > 0 { return true }
        guard ratePerSecond > 0 else { return false }
        var refilled = entry
        refill(&refilled, now: now)
        return refilled.tokens < Double(ratePerSecond)
    }

    private mutating func sweepIfDue(now: NIODeadline) {
        if let nextSweep, now < nextSweep { return }
        nextSweep = now + sweepInterval
        sweep(now: now)
    }

    private mutating func sweep(now: NIODeadline) {
        entries = entries.filter { isActive($0.value, now: now) }
    }

    /// At `maxTrackedAddresses`: forget idle entries, then, if none was idle, those without connections.
    private mutating func makeRoom(now: NIODeadline) {
        sweep(now: now)
        if entries.count >= maxTrackedAddresses { entries = entries.filter { $0.value.open > 0 } }
    }
}
