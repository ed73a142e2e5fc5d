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
        let bootstrap = try ClientBootstraps.make(group: group, options: options)
        let address = try endpoint.socketAddress()
        let connected: (any Channel, EventLoopFuture<Void>)
        do {
            connected = try await bootstrap.connect(to: address) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try configurePipeline(channel: channel, delegate: makeDelegate(channel.eventLoop))
                }
            }
        } catch {
            throw StormError.connectionFailure(error, endpoint: endpoint)
        }
        let (channel, upgraded) = connected
        var headers = HTTPHeaders()
        headers.add(name: "Host", value: endpoint.hostHeader)
        endpoint.addAuthorization(to: &headers)
        headers.add(name: "Content-Length", value: "0")
        let head = HTTPRequestHead(version: .http1_1, method: .GET, uri: path, headers: headers)
        channel.write(HTTPClientRequestPart.head(head), promise: nil)
        channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
        let timeout = channel.eventLoop.scheduleTask(in: options.connectTimeout) {
            channel.close(promise: nil)
        }
        defer { timeout.cancel() }
        do {
            try await upgraded.get()
        } catch {
            channel.close(promise: nil)
            throw StormError.lostConnection(error, endpoint: endpoint)
        }
        return StormWebSocketClient(channel: channel, endpoint: endpoint)
    }

    private static func configurePipeline(
        channel: any Channel, delegate: any StormStreamDelegate
    ) throws -> (any Channel, EventLoopFuture<Void>) {
        let upgraded = channel.eventLoop.makePromise(of: Void.self)
        let refusal = UpgradeRefusalHandler(upgraded: upgraded)
        let frames = WebSocketFrameHandler(delegate: delegate)
        let handlers = NIOLoopBound((refusal, frames), eventLoop: channel.eventLoop)
        let upgrader = NIOWebSocketClientUpgrader(maxFrameSize: maximumFrameSize, automaticErrorHandling: true) {
            channel, _ in
            channel.eventLoop.makeCompletedFuture {
                let (refusal, frames) = handlers.value
                channel.pipeline.syncOperations.removeHandler(refusal, promise: nil)
                try channel.pipeline.syncOperations.addHandler(
                    NIOWebSocketFrameAggregator(
                        minNonFinalFragmentSize: 0, maxAccumulatedFrameCount: 256,
                        maxAccumulatedFrameSize: maximumFrameSize))
                try channel.pipeline.syncOperations.addHandler(frames)
                upgraded.succeed()
            }
        }
        try channel.pipeline.syncOperations.addHTTPClientHandlers(
            withClientUpgrade: (upgraders: [upgrader], completionHandler: { _ in }))
        try channel.pipeline.syncOperations.addHandler(refusal)
        // Whatever ends the connection before the upgrade fails the wait for it.
        channel.closeFuture.whenComplete { _ in
            upgraded.fail(StormError(.connection, "the connection closed before the WebSocket upgrade completed"))
        }
        return (channel, upgraded.futureResult)
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

/// Delivers text frames to the delegate and keeps the connection healthy (pongs, close handshake).
final class WebSocketFrameHandler: ChannelDuplexHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    private let delegate: any StormStreamDelegate
    private var closeError: StormError?
    private var sentClose = false
    private var closingOnPurpose = false
    private var reported = false

    init(delegate: any StormStreamDelegate) {
        self.delegate = delegate
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = Self.unwrapInboundIn(data)
        switch frame.opcode {
        case .text:
            delegate.streamDidReceive(text: frame.unmaskedData)
        case .ping:
            let pong = WebSocketFrame(fin: true, opcode: .pong, maskKey: .random(), data: frame.unmaskedData)
            context.writeAndFlush(Self.wrapOutboundOut(pong), promise: nil)
        case .connectionClose:
            var payload = frame.unmaskedData
            let code = payload.readInteger(as: UInt16.self)
            let reason = payload.readString(length: payload.readableBytes) ?? ""
            if let code, code != 1000 {
                closeError = StormError(webSocketCloseCode: code, reason: reason)
            } else if !sentClose {
                closeError = StormError(.connection, "the server closed the connection\(reason.isEmpty ? "" : ": \(reason)")")
            }
            if !sentClose {
                sentClose = true
                var echo = context.channel.allocator.buffer(capacity: 2)
                echo.writeInteger(code ?? 1000)
                let reply = WebSocketFrame(fin: true, opcode: .connectionClose, maskKey: .random(), data: echo)
                // Closed through the context, not the channel: a close from outside would read as our own hang-up.
                let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
                context.writeAndFlush(Self.wrapOutboundOut(reply)).whenComplete { _ in bound.value.close(promise: nil) }
            } else {
                context.close(promise: nil)
            }
        case .binary:
            closeError = StormError(.protocolViolation, "the server sent a binary frame; the protocol only uses text frames")
            context.close(promise: nil)
        default:
            break
        }
    }

    /// Notes a close frame we send ourselves, so the server's echo counts as a clean end.
    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if Self.unwrapOutboundIn(data).opcode == .connectionClose {
            sentClose = true
        }
        context.write(data, promise: promise)
    }

    /// Only closes asked for from outside the pipeline pass here: the owner hanging up is a clean end.
    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        closingOnPurpose = true
        context.close(mode: mode, promise: promise)
    }

    func channelInactive(context: ChannelHandlerContext) {
        if closingOnPurpose {
            report(nil)
        } else {
            report(closeError ?? (sentClose ? nil : StormError(.connection, "connection lost")))
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if closeError == nil {
            closeError = (error as? StormError) ?? StormError(.connection, "connection failed: \(error)")
        }
        context.close(promise: nil)
    }

    private func report(_ error: StormError?) {
        guard !reported else { return }
        reported = true
        delegate.streamDidClose(error: error)
    }
}
