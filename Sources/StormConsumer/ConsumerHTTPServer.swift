import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import Prometheus
import ServiceLifecycle
import StormCore
import StormObservability

/// The HTTP side of `stormd --role consumer`: `/healthz`, `/readyz` and `/metrics` only, on `--listen`,
/// so probes and Prometheus treat a consumer like a gateway. Everything else is 404.
///
/// `/readyz` is 200 while the consumer reads NATS and writes PostgreSQL, and 503 with the reason (the
/// database being down, say) otherwise, as the same JSON error body the gateway uses.
package final class ConsumerHTTPServer: Service, Sendable {
    package let consumer: HistoryConsumer
    package let registry: PrometheusCollectorRegistry
    private let host: String
    private let port: Int
    private let group: MultiThreadedEventLoopGroup
    private let channel = NIOLockedValueBox<(any Channel)?>(nil)
    private let logger: Logger

    package init(host: String, port: Int, consumer: HistoryConsumer, registry: PrometheusCollectorRegistry, logger: Logger) {
        self.host = host
        self.port = port
        self.consumer = consumer
        self.registry = registry
        self.logger = logger
        self.group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    }

    /// The bound address (port 0 becomes a real port).
    package var localAddress: SocketAddress? { channel.withLockedValue { $0?.localAddress } }

    /// Binds the socket; split from `run()` so the caller can report the address first.
    package func start() async throws {
        let consumer = self.consumer
        let registry = self.registry
        let bound = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(ConsumerHTTPHandler(consumer: consumer, registry: registry))
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

    /// Closes the socket (tests).
    package func stop() async {
        if let bound = channel.withLockedValue({ $0 }) { try? await bound.close() }
        try? await group.shutdownGracefully()
    }
}

private final class ConsumerHTTPHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let consumer: HistoryConsumer
    let registry: PrometheusCollectorRegistry
    private var head: HTTPRequestHead?

    init(consumer: HistoryConsumer, registry: PrometheusCollectorRegistry) {
        self.consumer = consumer
        self.registry = registry
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head): self.head = head
        case .body: break
        case .end:
            guard let head else { return }
            self.head = nil
            respond(context: context, head: head)
        }
    }

    private func respond(context: ChannelHandlerContext, head: HTTPRequestHead) {
        let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
        let status: HTTPResponseStatus
        let contentType: String
        let body: [UInt8]
        switch (path, head.method) {
        case ("/healthz", .GET), ("/healthz", .HEAD):
            (status, contentType, body) = (.ok, "text/plain; charset=utf-8", Array("ok\n".utf8))
        case ("/readyz", .GET), ("/readyz", .HEAD):
            if let error = consumer.notReadyError {
                (status, contentType, body) = (.serviceUnavailable, "application/json", Array((error.jsonBody + "\n").utf8))
            } else {
                (status, contentType, body) = (.ok, "application/json", Array("{\"status\":\"ready\",\"role\":\"consumer\"}\n".utf8))
            }
        case ("/metrics", .GET):
            var text = registry.emitToBuffer()
            ProcessMetrics.append(to: &text)
            (status, contentType, body) = (.ok, "text/plain; version=0.0.4; charset=utf-8", text)
        case ("/healthz", _), ("/readyz", _), ("/metrics", _):
            let error = StormError(.methodNotAllowed, "\(head.method) is not allowed on \(path)")
            (status, contentType, body) = (.methodNotAllowed, "application/json", Array((error.jsonBody + "\n").utf8))
        default:
            let error = StormError(.notFound, "no route for \(path): a consumer (--role consumer) serves /healthz, /readyz and /metrics only")
            (status, contentType, body) = (.notFound, "application/json", Array((error.jsonBody + "\n").utf8))
        }
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: contentType)
        headers.add(name: "Content-Length", value: String(body.count))
        let keepAlive = head.isKeepAlive
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))), promise: nil)
        if head.method != .HEAD {
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: body)))), promise: nil)
        }
        let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        if !keepAlive {
            let channel = context.channel
            done.whenComplete { _ in channel.close(promise: nil) }
        }
    }
}
