#if canImport(Glibc)
import Glibc
#endif
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import NIOWebSocket
import ServiceLifecycle
import StormBroker
import StormCore
import StormObservability
import StormPresence
import StormStore
import Tracing

/// A running gateway: the listening socket, one `LoopHub` per event loop, the router and the broker.
///
/// It is a `Service`: `run()` serves until graceful shutdown (SIGTERM/SIGINT through the
/// `ServiceGroup`), then drains: it stops accepting, closes every client (WebSocket close 1001, SSE end
/// of stream), waits briefly for in-flight publishes, and drains the broker.
package final class Gateway: Service, Sendable {
    package let configuration: GatewayConfiguration
    package let context: GatewayContext
    package let ids: MessageIDGenerator
    private let group: any EventLoopGroup
    private let ownsGroup: Bool
    private let hubs: [LoopHub]
    private let serverChannel = NIOLockedValueBox<(any Channel)?>(nil)
    private let connections = NIOLockedValueBox<[ObjectIdentifier: any Channel]>([:])
    private let logger: Logger
    /// Connection counts and the decisions at accept (`--max-connections`, per address, connect rate),
    /// shared by every event loop.
    private let admission: HTTPAdmission
    /// What the shared HTTP request handler applies to every request of this gateway.
    private let httpSettings: HTTPServerSettings
    /// The PostgreSQL client of the users/channels store and the history archive, when `--postgres` is
    /// set: the process's one client when `stormd` passed it (`--role all`), else the gateway's own.
    private let postgres: PostgresClient?
    /// Whether the gateway made `postgres` itself, and so shuts it down when it stops.
    private let ownsPostgres: Bool
    /// The listener's certificate with `--tls-cert`/`--tls-key` (reloaded on SIGHUP), else nil: plain HTTP.
    package let tls: TLSCertificateStore?

    /// `presenceStore` defaults to the one the configuration names (Redis with `--redis`, else memory);
    /// `authStore` to PostgreSQL with `--postgres`, else memory. `postgres`: the process's PostgreSQL
    /// client, shared with the other roles and shut down by whoever made it; without one, `--postgres`
    /// gives the gateway a client of its own. `tracer`: spans for publishes and fan-out (`nil` or a
    /// `NoOpTracer`: no tracing at all, and nothing spent on it).
    package init(
        configuration: GatewayConfiguration, broker: any MessageBroker, logger: Logger, group: (any EventLoopGroup)? = nil, presenceStore: (any PresenceStore)? = nil,
        authStore: (any AuthStore)? = nil, postgres: PostgresClient? = nil, tracer: (any Tracer)? = nil
    ) {
        self.configuration = configuration
        self.logger = logger
        let ids = MessageIDGenerator()
        self.ids = ids
        if let group {
            self.group = group
            self.ownsGroup = false
        } else {
            self.group = MultiThreadedEventLoopGroup(numberOfThreads: configuration.eventLoops)
            self.ownsGroup = true
        }
        let metrics = GatewayMetrics(instanceID: ids.instanceID)
        self.admission = HTTPAdmission(limits: configuration.connections, metrics: metrics, logger: logger)
        var hubs: [LoopHub] = []
        for (index, loop) in self.group.makeIterator().enumerated() {
            hubs.append(LoopHub(eventLoop: loop, index: index, flushDelay: configuration.limits.flushDelay, maxFlushDelay: configuration.limits.effectiveMaxFlushDelay, metrics: metrics))
        }
        self.hubs = hubs
        let state = GatewayState()
        let tracing = tracer.flatMap { $0 is NoOpTracer ? nil : StormTracing($0) }
        let exclusions = PublisherExclusions()
        let router = ChannelRouter(
            broker: broker, hubs: hubs, metrics: metrics, logger: logger, tracing: tracing, maxChannels: configuration.limits.maxChannels, exclusions: exclusions)
        let publisher = Publisher(
            broker: broker, ids: ids, metrics: metrics, maxMessageSize: configuration.limits.maxMessageSize, state: state, tracing: tracing, exclusions: exclusions)
        let presence = PresenceTracker(
            configuration: configuration.presence, store: presenceStore ?? PresenceTracker.makeStore(configuration.presence), broker: broker, publisher: publisher, ids: ids,
            metrics: metrics, logger: logger)
        let client = postgres ?? configuration.store.postgresURL.map { PostgresClient(conninfo: $0, size: 1, logger: logger) }
        self.postgres = client
        self.ownsPostgres = postgres == nil && client != nil
        let store: any AuthStore
        if let authStore {
            store = authStore
        } else if let client {
            store = PostgresAuthStore(client: client)
        } else {
            store = MemoryAuthStore()
        }
        self.tls = configuration.tls.certificateFile.flatMap { cert in
            configuration.tls.keyFile.map { TLSCertificateStore(certificateFile: cert, keyFile: $0, logger: logger) }
        }
        let auth = Authenticator(configuration: configuration.auth, store: store, metrics: metrics, logger: logger)
        presence.setChannelOverride { [weak auth] channel in auth?.rule(for: channel)?.options.presence }
        self.context = GatewayContext(
            router: router, publisher: publisher, metrics: metrics, limits: configuration.limits, state: state, broker: broker, presence: presence, auth: auth, logger: logger,
            connectionIDs: ConnectionIDs(instanceID: ids.instanceID), historyStore: client.map { PostgresHistoryStore(client: $0) },
            requestPolicy: configuration.requestPolicy, historyReads: configuration.historyReads, connectionLimits: configuration.connections,
            hooks: GatewayHooks(configuration: configuration.hooks, metrics: metrics, logger: logger),
            role: configuration.store.role.rawValue)
        self.httpSettings = GatewayRoutes.settings(context)
    }

    /// The address actually bound (port 0 in tests becomes a real port).
    package var localAddress: SocketAddress? {
        serverChannel.withLockedValue { $0?.localAddress }
    }

    /// Connects the broker and binds the listening socket. Split from `run()` so tests and `stormd` can
    /// report the bound address before serving.
    package func start() async throws {
        // The process's migrations: with `--role all` the consumer beside the gateway relies on them.
        if let postgres, configuration.store.migrateOnStart {
            try await Migrations.apply(using: postgres, logger: logger)
        }
        try tls?.load()
        try await context.auth.start()
        try await context.broker.start()
        for hub in hubs { hub.start() }
        let channel = try await makeBootstrap().bind(host: configuration.listen.host, port: configuration.listen.port).get()
        serverChannel.withLockedValue { $0 = channel }
        await context.presence.start(httpURL: PresenceTracker.advertisedURL(bound: channel.localAddress, listen: configuration.listen, scheme: tls == nil ? "http" : "https"))
    }

    package func run() async throws {
        if localAddress == nil { try await start() }
        guard let channel = serverChannel.withLockedValue({ $0 }) else { return }
        try await withGracefulShutdownHandler {
            try await channel.closeFuture.get()
        } onGracefulShutdown: {
            self.logger.notice("shutting down: closing the listener, then client connections")
            channel.close(promise: nil)
        }
        await drain()
    }

    /// Stops the gateway without a `ServiceGroup` (tests).
    package func stop() async {
        if let channel = serverChannel.withLockedValue({ $0 }) {
            try? await channel.close()
        }
        await drain()
    }

    private func drain() async {
        guard !context.state.isDraining else { return }
        context.state.beginDraining()
        // Idle keep-alive HTTP connections close now, and a request in flight is answered with
        // `Connection: close` and its connection closed after it (NIO's HTTPServerPipelineHandler
        // quiescing): no request can arrive on them later only to be cut without an answer at the end
        // of the drain. WebSocket and SSE connections ignore the event; the hubs close them next.
        for channel in connections.withLockedValue({ Array($0.values) }) {
            channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        }
        for hub in hubs { _ = try? await hub.closeAll().get() }
        // Give in-flight requests, publishes and the close frames a moment, then cut what is left.
        let deadline = ContinuousClock.now + .seconds(configuration.drainSeconds)
        while ContinuousClock.now < deadline, !connections.withLockedValue({ $0.isEmpty }) {
            try? await Task.sleep(for: .milliseconds(20))
        }
        let remaining = connections.withLockedValue { Array($0.values) }
        for channel in remaining { channel.close(promise: nil) }
        await context.presence.stop()
        await context.hooks.shutdown()
        context.auth.stop()
        if ownsPostgres { await postgres?.shutdown() }
        await context.broker.shutdown()
        if ownsGroup { try? await group.shutdownGracefully() }
        logger.notice("gateway stopped")
    }

    // MARK: Pipeline

    private func makeBootstrap() -> ServerBootstrap {
        let limits = configuration.limits
        let logger = logger
        return ServerBootstrap(group: group)
            // At the open-files limit accepts fail; AcceptBackoff pauses them instead of spinning.
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(AcceptBackoff(logger: logger), name: "AcceptBackoff")
                }
            }
            .serverChannelOption(.backlog, value: Int32(configuration.backlog))
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelOption(ChannelOptions.socket(SocketOptionLevel(SOL_SOCKET), SocketOptionName(SO_REUSEPORT)), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.writeBufferWaterMark, value: .init(low: limits.clientBufferBytes / 2, high: limits.clientBufferBytes))
            .childChannelOption(.maxMessagesPerRead, value: 4)
            // Clients mostly send small requests: start reads at 256 bytes (NIO grows the buffer for
            // bigger ones). An idle connection's last read buffer can stay referenced by its frame decoder,
            // so this is memory per connection, not per read.
            .childChannelOption(.recvAllocator, value: AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 256, maximum: 65_536))
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try self.configureConnection(channel)
                }
            }
    }

    private func configureConnection(_ channel: any Channel) throws {
        guard let hub = context.router.hub(for: channel.eventLoop) else {
            throw StormError(.internalError, "connection on an event loop that has no hub")
        }
        let (admission, deadlines) = try self.admission.admit(channel)
        let id = ObjectIdentifier(channel)
        connections.withLockedValue { $0[id] = channel }
        channel.closeFuture.whenComplete { _ in self.connections.withLockedValue { $0[id] = nil } }

        let gateway = context
        let connectionID = gateway.connectionIDs.nextConnection()
        // The connect hook's refusal of an upgrade, answered by the HTTP routes (like a refused token).
        let upgradeRefusal = NIOLoopBoundBox<StormError?>.makeBoxSendingValue(nil, eventLoop: channel.eventLoop)
        let httpHandler = HTTPRequestHandler(
            settings: httpSettings, routes: GatewayRoutes(gateway: gateway, hub: hub, connectionID: connectionID, upgradeRefusal: upgradeRefusal),
            connectionID: connectionID, admission: admission, deadlines: deadlines)
        // Who the upgrade request authenticated as, handed from `shouldUpgrade` to the session (both run
        // on this connection's event loop), and the channels the connect hook subscribes it to.
        let principal = NIOLoopBoundBox<Principal?>.makeBoxSendingValue(nil, eventLoop: channel.eventLoop)
        let maxMessageSize = limits.maxWebSocketMessageSize
        let connectChannels = NIOLoopBoundBox<[String]>.makeBoxSendingValue([], eventLoop: channel.eventLoop)
        let upgrader = NIOWebSocketServerUpgrader(
            maxFrameSize: limits.maxWebSocketMessageSize,
            automaticErrorHandling: false,
            shouldUpgrade: { channel, head in
                let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
                // A refused or probe-only connection is not upgraded: the routes answer it 503.
                guard path == "/ws", admission == .admitted, !gateway.state.isDraining else { return channel.eventLoop.makeSucceededFuture(nil) }
                // A refused Host or Origin, or a handshake that breaks RFC 6455, is not upgraded either:
                // the HTTP routes answer it with the reason (403, 421, 400 or 426).
                guard gateway.requestPolicy.evaluate(head) == .allow, WebSocketHandshakeCheck.evaluate(head) == .valid else {
                    return channel.eventLoop.makeSucceededFuture(nil)
                }
                // A refused token is not upgraded: the request goes on to the HTTP routes, which answer
                // 401 with a JSON body (a browser sees the status; a close frame would hide it).
                guard case .success(let who) = gateway.auth.authenticate(Authenticator.token(from: head), counting: false) else {
                    return channel.eventLoop.makeSucceededFuture(nil)
                }
                guard gateway.hooks.isEnabled(.connect) else {
                    principal.value = who
                    return channel.eventLoop.makeSucceededFuture(HTTPHeaders())
                }
                // The connect hook decides off the loop; a refusal is answered by the HTTP routes.
                let request = HookRequest(kind: .connect, client: "\(connectionID)", transport: .webSocket, principal: who, traceparent: head.headers.first(name: "traceparent"))
                return gateway.hooks.ask(.connect, request, eventLoop: channel.eventLoop).map { changes -> HTTPHeaders? in
                    var admitted = who
                    if let user = changes.user { admitted.user = user }
                    principal.value = admitted
                    connectChannels.value = changes.channels
                    return HTTPHeaders()
                }.recover { error in
                    upgradeRefusal.value = (error as? StormError) ?? StormError(.hookUnavailable, "the connect hook failed: \(error)")
                    return nil
                }
            },
            upgradePipelineHandler: { channel, _ in
                channel.eventLoop.makeCompletedFuture {
                    guard let who = principal.value else { throw StormError(.unauthorized, "upgrade without an authenticated request") }
                    try channel.pipeline.syncOperations.addHandlers([
                        ClientFrameCheck(),
                        NIOWebSocketFrameAggregator(
                            minNonFinalFragmentSize: 0, maxAccumulatedFrameCount: ClientFrameRules.maxFragments,
                            maxAccumulatedFrameSize: maxMessageSize),
                        WebSocketSession(gateway: gateway, hub: hub, principal: who, connectionID: connectionID, connectChannels: connectChannels.value),
                    ])
                }
            }
        )
        let sync = channel.pipeline.syncOperations
        // With TLS, the handshake comes first and everything after it is as without: the context is the one
        // current when the connection was accepted (a SIGHUP reload affects later connections only).
        if let tls {
            guard let sslContext = tls.current else { throw StormError(.internalError, "TLS connection before the certificate was loaded") }
            try sync.addHandler(NIOSSLServerHandler(context: sslContext))
        }
        // After TLS, so that a 408 is written inside the TLS session (a handshake that never completes
        // is cut by the same clock, as a connection that sent nothing).
        try sync.addHandler(deadlines)
        try sync.configureHTTPServerPipeline(
            withPipeliningAssistance: true,
            withServerUpgrade: (upgraders: [upgrader], completionHandler: { context in
                // The connection speaks WebSocket now: the HTTP routes leave the pipeline.
                let sync = context.pipeline.syncOperations
                if let routes = try? sync.context(handlerType: HTTPRequestHandler.self) {
                    sync.removeHandler(context: routes, promise: nil)
                }
            }),
            withErrorHandling: true
        )
        try sync.addHandler(httpHandler)
    }

    private var limits: GatewayLimits { configuration.limits }
}
