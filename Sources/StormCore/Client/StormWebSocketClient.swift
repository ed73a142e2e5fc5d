import NIOCore
import NIOHTTP1
import NIOPosix
import NIOWebSocket

/// A WebSocket connection to the gateway's `/ws` (RFC 6455, client side: every frame masked).
///
/// Frames are handed to a `StormStreamDelegate` on the connection's event loop as they arrive; nothing is
/// queued here, so an idle connection costs its socket and a few handler objects, which matters when the
/// bench holds ten thousand of them. Pings are answered and close frames echoed without the caller's help.
public final class StormWebSocketClient: Sendable {
    public let channel: any Channel
    public let endpoint: StormEndpoint

    /// Largest frame accepted from the server: a 64 KiB payload base64-encoded inside an envelope, with room.
    public static let maximumFrameSize = 1 << 18

    private init(channel: any Channel, endpoint: StormEndpoint) {
        self.channel = channel
        self.endpoint = endpoint
    }

    /// Connects, upgrades to WebSocket and returns once the server accepted the upgrade.
    ///
    /// - Throws: `StormError(.connection)` when the server cannot be reached; the server's own error (code
    ///   and message from its JSON body) when it answered the upgrade request with an HTTP error.
    public static func connect(
        to endpoint: StormEndpoint, path: String = "/ws", options: StormConnectOptions = .init(),
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        delegate makeDelegate: @escaping StormStreamDelegateFactory
    ) async throws(StormError) -> StormWebSocketClient {
        do {
            return try await connecting(to: endpoint, path: path, options: options, on: group.next(), delegate: makeDelegate).get()
        } catch let error as StormError {
            throw error
        } catch {
            throw StormError.connectionFailure(error, endpoint: endpoint)
        }
    }

    /// `connect` as a future, on `eventLoop`, failing with a `StormError`. The bench opens thousands of
    /// connections a second: chaining futures on the connection's loop spares each one the hops between
    /// the event loop and Swift tasks that awaiting costs (a fifth of the bench's CPU while ramping).
    public static func connecting(
        to endpoint: StormEndpoint, path: String = "/ws", options: StormConnectOptions = .init(),
        on eventLoop: any EventLoop, delegate makeDelegate: @escaping StormStreamDelegateFactory
    ) -> EventLoopFuture<StormWebSocketClient> {
        let upgraded = eventLoop.makePromise(of: Void.self)
        return ClientBootstraps.connect(to: endpoint, options: options, on: eventLoop) { channel in
            channel.eventLoop.makeCompletedFuture {
                try configurePipeline(channel: channel, delegate: makeDelegate(channel.eventLoop), upgraded: upgraded)
            }
        }
        .flatMapError { error in
            upgraded.fail(error)
            return eventLoop.makeFailedFuture(error)
        }
        .flatMap { channel in
            var headers = HTTPHeaders()
            headers.add(name: "Host", value: endpoint.hostHeader)
            endpoint.addAuthorization(to: &headers)
            headers.add(name: "Content-Length", value: "0")
            let head = HTTPRequestHead(version: .http1_1, method: .GET, uri: path, headers: headers)
            channel.write(HTTPClientRequestPart.head(head), promise: nil)
            channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
            let timeout = eventLoop.scheduleTask(in: options.connectTimeout) { channel.close(promise: nil) }
            return upgraded.futureResult
                .always { _ in timeout.cancel() }
                .map { StormWebSocketClient(channel: channel, endpoint: endpoint) }
                .flatMapError { error in
                    channel.close(promise: nil)
                    return eventLoop.makeFailedFuture(StormError.lostConnection(error, endpoint: endpoint))
                }
        }
    }

    private static func configurePipeline(
        channel: any Channel, delegate: any StormStreamDelegate, upgraded: EventLoopPromise<Void>
    ) throws {
        let refusal = UpgradeRefusalHandler(upgraded: upgraded)
        let handlers = NIOLoopBound((refusal, delegate), eventLoop: channel.eventLoop)
        let upgrader = StormWebSocketUpgrader { channel in
            let (refusal, delegate) = handlers.value
            channel.pipeline.syncOperations.removeHandler(refusal, promise: nil)
            try channel.pipeline.syncOperations.addHandler(ServerFrameReader(delegate: delegate, maximumFrameSize: maximumFrameSize))
            upgraded.succeed()
        }
        try channel.pipeline.syncOperations.addHTTPClientHandlers(
            withClientUpgrade: (upgraders: [upgrader], completionHandler: { _ in }))
        try channel.pipeline.syncOperations.addHandler(refusal)
        // Whatever ends the connection before the upgrade fails the wait for it.
        channel.closeFuture.whenComplete { _ in
            upgraded.fail(StormError(.connection, "the connection closed before the WebSocket upgrade completed"))
        }
    }

    /// Sends one text frame (masked, as RFC 6455 requires of clients).
    public func send(text: String) async throws(StormError) {
        try await send(bytes: ByteBuffer(string: text))
    }

    public func send(bytes: ByteBuffer) async throws(StormError) {
        let frame = WebSocketFrame(fin: true, opcode: .text, maskKey: .random(), data: bytes)
        do {
            try await channel.writeAndFlush(frame)
        } catch {
            throw StormError.lostConnection(error, endpoint: endpoint)
        }
    }

    /// Sends without waiting: for the bench, which subscribes thousands of connections at once.
    public func sendWithoutWaiting(text: String) {
        let frame = WebSocketFrame(fin: true, opcode: .text, maskKey: .random(), data: ByteBuffer(string: text))
        channel.writeAndFlush(frame, promise: nil)
    }

    /// Starts a clean close (close frame 1000); the connection ends when the server echoes it or after
    /// `timeout`.
    public func close(timeout: TimeAmount = .seconds(2)) async {
        let channel = self.channel
        channel.eventLoop.execute {
            guard channel.isActive else { return }
            var data = channel.allocator.buffer(capacity: 2)
            data.write(webSocketErrorCode: .normalClosure)
            let frame = WebSocketFrame(fin: true, opcode: .connectionClose, maskKey: .random(), data: data)
            channel.writeAndFlush(frame, promise: nil)
            channel.eventLoop.scheduleTask(in: timeout) { channel.close(promise: nil) }
        }
        try? await channel.closeFuture.get()
    }

    /// Ends the connection at once, without a close handshake.
    public func closeImmediately() {
        channel.close(promise: nil)
    }
}

/// Sees the HTTP answer when the server refuses the upgrade, and turns its body into the server's error.
final class UpgradeRefusalHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPClientResponsePart

    private let upgraded: EventLoopPromise<Void>
    private var status: Int?
    private var body: [UInt8] = []

    init(upgraded: EventLoopPromise<Void>) {
        self.upgraded = upgraded
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch Self.unwrapInboundIn(data) {
        case .head(let head):
            status = Int(head.status.code)
        case .body(let part):
            if body.count < 4096 { body.append(contentsOf: part.readableBytesView.prefix(4096 - body.count)) }
        case .end:
            let status = self.status ?? 0
            let error =
                status >= 400
                ? StormError(httpStatus: status, body: body)
                : StormError(.protocolViolation, "the server answered the WebSocket upgrade with HTTP \(status)")
            upgraded.fail(error)
            context.close(promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        upgraded.fail(error)
        context.close(promise: nil)
    }
}
