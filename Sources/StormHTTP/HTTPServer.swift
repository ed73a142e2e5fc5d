#if canImport(Glibc)
import Glibc
#endif
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle
import StormCore
import StormObservability

/// How an accepted connection enters a role's HTTP server, the gateway's and the consumer's alike: the
/// connection gate decides (`--max-connections`, per address, connect rate), the decision is counted
/// and released when the connection closes, and the connection gets its deadlines (`--header-timeout`,
/// shorter for a refused one, and `--idle-timeout`).
package final class HTTPAdmission: Sendable {
    private let gate: NIOLockedValueBox<ConnectionGate>
    private let limits: ConnectionLimits
    private let metrics: any HTTPServerMetrics
    private let logger: Logger

    package init(limits: ConnectionLimits, metrics: any HTTPServerMetrics, logger: Logger) {
        self.gate = NIOLockedValueBox(ConnectionGate(limits: limits, openFilesLimit: ResourceLimits.openFilesLimit()))
        self.limits = limits
        self.metrics = metrics
        self.logger = logger
    }

    /// Admits `channel` (on its event loop, in the child initializer): throws for a connection past
    /// the probe reserve (failing the initializer closes it unanswered), else returns the decision the
    /// request handler applies and the connection's deadlines, to put first in its pipeline.
    package func admit(_ channel: any Channel) throws -> (ConnectionAdmission, RequestDeadlineHandler) {
        let address = channel.remoteAddress?.ipAddress
        let outcome = gate.withLockedValue { $0.admit(address: address, now: .now()) }
        let admission = outcome.admission
        if outcome.limitReached {
            logger.warning(
                "connection limit reached: new connections get only /healthz, /readyz and /metrics (others 503 too_many_connections) until some close",
                metadata: ["storm.max_connections": "\(gate.withLockedValue { $0.maxConnections })"])
        }
        switch admission {
        case .closeNow:
            metrics.countRefusal(.maxConnections)
            throw StormError(.tooManyConnections, "past --max-connections and its probe reserve")
        case .refused(let reason, _):
            metrics.countRefusal(reason)
        case .admitted, .probesOnly:
            break
        }
        channel.closeFuture.whenComplete { _ in self.gate.withLockedValue { $0.release(address: address, admission: admission) } }
        let headerTimeout = admission == .admitted ? limits.headerTimeout : min(limits.headerTimeout, limits.refusedHeaderTimeout)
        return (admission, RequestDeadlineHandler(headerTimeout: headerTimeout, idleTimeout: limits.idleTimeout, metrics: metrics))
    }
}

/// The HTTP server of a role without WebSocket, event streams or TLS (the consumer): the same accept
/// backoff, connection gate, deadlines, pipeline (with pipelining assistance) and `HTTPRequestHandler`
/// as the gateway's listener, answering from the role's `HTTPRoutes`. A `Service`: serves until
/// graceful shutdown.
///
/// - `backlog` (`Int`, 256): the listen backlog.
package final class HTTPServer: Service, Sendable {
    package typealias MakeRoutes = @Sendable () -> any HTTPRoutes

    private let host: String
    private let port: Int
    private let backlog: Int
    private let settings: HTTPServerSettings
    private let makeRoutes: MakeRoutes
    private let admission: HTTPAdmission
    private let group: MultiThreadedEventLoopGroup
    private let channel = NIOLockedValueBox<(any Channel)?>(nil)

    package init(host: String, port: Int, backlog: Int = 256, settings: HTTPServerSettings, makeRoutes: @escaping MakeRoutes) {
        self.host = host
        self.port = port
        self.backlog = backlog
        self.settings = settings
        self.makeRoutes = makeRoutes
        self.admission = HTTPAdmission(limits: settings.connectionLimits, metrics: settings.metrics, logger: settings.logger)
        self.group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    }

    /// The bound address (port 0 becomes a real port).
    package var localAddress: SocketAddress? { channel.withLockedValue { $0?.localAddress } }

    /// Binds the socket; split from `run()` so the caller can report the address first.
    package func start() async throws {
        let settings = self.settings
        let makeRoutes = self.makeRoutes
        let admission = self.admission
        let logger = settings.logger
        let bound = try await ServerBootstrap(group: group)
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(AcceptBackoff(logger: logger), name: "AcceptBackoff")
                }
            }
            .serverChannelOption(.backlog, value: Int32(clamping: backlog))
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let (decision, deadlines) = try admission.admit(channel)
                    let sync = channel.pipeline.syncOperations
                    try sync.addHandler(deadlines)
                    try sync.configureHTTPServerPipeline(withPipeliningAssistance: true, withErrorHandling: true)
                    try sync.addHandler(HTTPRequestHandler(settings: settings, routes: makeRoutes(), admission: decision, deadlines: deadlines))
                }
            }
            .bind(host: host, port: port).get()
        channel.withLockedValue { $0 = bound }
    }

    package func run() async throws {
        if localAddress == nil { try await start() }
        guard let bound = channel.withLockedValue({ $0 }) else { return }
        try await withGracefulShutdownHandler {
            try await bound.closeFuture.get()
        } onGracefulShutdown: {
            bound.close(promise: nil)
        }
        try? await group.shutdownGracefully()
    }

    /// Closes the socket and stops the thread (tests, and callers without a `ServiceGroup`).
    package func stop() async {
        if let bound = channel.withLockedValue({ $0 }) { try? await bound.close() }
        try? await group.shutdownGracefully()
    }
}
