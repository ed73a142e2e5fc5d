import NIOCore
import NIOHTTP1
import NIOWebSocket

/// The client's side of an open WebSocket: reads the server's frames straight from the socket's bytes,
/// hands text messages to the delegate, answers pings, and does the close handshake.
///
/// Outbound, it passes `WebSocketFrame`s on to NIO's encoder, which masks them.
final class ServerFrameReader: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    private let delegate: any StormStreamDelegate
    private let parser: ServerFrameParser
    /// The start of a frame that has not fully arrived, copied out of the read buffer so that an idle
    /// connection pins at most the bytes it is owed, not NIO's whole receive buffer.
    private var carried: ByteBuffer?
    /// The fragments of a text message the server split (our gateway never does; a proxy might).
    private var fragments: ByteBuffer?
    private var closeError: StormError?
    private var sentClose = false
    private var closingOnPurpose = false
    private var reported = false
    /// Set when a protocol error ends the connection: the rest of the read is not looked at.
    private var failed = false

    init(delegate: any StormStreamDelegate, maximumFrameSize: Int) {
        self.delegate = delegate
        self.parser = ServerFrameParser(maximumFrameSize: maximumFrameSize)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = Self.unwrapInboundIn(data)
        if var carried {
            carried.writeBuffer(&bytes)
            bytes = carried
            self.carried = nil
        }
        do {
            while !failed, let frame = try parser.next(&bytes) {
                handle(frame, context: context)
            }
        } catch {
            return fail(context: context, StormError(.protocolViolation, error.message))
        }
        if !failed, bytes.readableBytes > 0 { carried = ByteBuffer(bytes.readableBytesView) }
    }

    private func handle(_ frame: ServerFrame, context: ChannelHandlerContext) {
        switch frame.opcode {
        case ServerFrame.text where frame.fin && fragments == nil:
            delegate.streamDidReceive(text: frame.payload)
        case ServerFrame.text where fragments == nil:
            fragments = frame.payload
        case ServerFrame.continuation where fragments != nil:
            var payload = frame.payload
            fragments?.writeBuffer(&payload)
            if let size = fragments?.readableBytes, size > parser.maximumFrameSize {
                return fail(context: context, StormError(.protocolViolation, "the server sent a message larger than \(parser.maximumFrameSize) bytes"))
            }
            if frame.fin, let message = fragments {
                fragments = nil
                delegate.streamDidReceive(text: message)
            }
        case ServerFrame.ping:
            let pong = WebSocketFrame(fin: true, opcode: .pong, maskKey: .random(), data: frame.payload)
            context.writeAndFlush(Self.wrapOutboundOut(pong), promise: nil)
        case ServerFrame.pong:
            break
        case ServerFrame.close:
            receivedClose(frame.payload, context: context)
        case ServerFrame.binary:
            fail(context: context, StormError(.protocolViolation, "the server sent a binary frame; the protocol only uses text frames"))
        default:
            fail(context: context, StormError(.protocolViolation, "the server sent an unexpected frame (opcode \(frame.opcode))"))
        }
    }

    private func receivedClose(_ payload: ByteBuffer, context: ChannelHandlerContext) {
        var payload = payload
        let code = payload.readInteger(as: UInt16.self)
        let reason = payload.readString(length: payload.readableBytes) ?? ""
        if let code, code != 1000 {
            closeError = StormError(webSocketCloseCode: code, reason: reason)
        } else if !sentClose {
            closeError = StormError(.connection, "the server closed the connection\(reason.isEmpty ? "" : ": \(reason)")")
        }
        guard !sentClose else { return context.close(promise: nil) }
        sentClose = true
        var echo = context.channel.allocator.buffer(capacity: 2)
        echo.writeInteger(code ?? 1000)
        let reply = WebSocketFrame(fin: true, opcode: .connectionClose, maskKey: .random(), data: echo)
        // Closed through the context, not the channel: a close from outside would read as our own hang-up.
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        context.writeAndFlush(Self.wrapOutboundOut(reply)).whenComplete { _ in bound.value.close(promise: nil) }
    }

    private func fail(context: ChannelHandlerContext, _ error: StormError) {
        if closeError == nil { closeError = error }
        failed = true
        carried = nil
        fragments = nil
        context.close(promise: nil)
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

/// NIO's WebSocket client upgrader for the handshake (the request key and the check of the server's
/// `Sec-WebSocket-Accept`), with STORM's `ServerFrameReader` in place of NIO's frame decoder once the
/// connection is upgraded.
struct StormWebSocketUpgrader: NIOHTTPClientProtocolUpgrader {
    private let handshake: NIOWebSocketClientUpgrader
    private let reader: @Sendable (any Channel) throws -> Void

    /// - Parameter reader: adds the frame handling after the upgrade, on the channel's loop.
    init(reader: @escaping @Sendable (any Channel) throws -> Void) {
        self.handshake = NIOWebSocketClientUpgrader(automaticErrorHandling: false) { channel, _ in
            channel.eventLoop.makeSucceededVoidFuture()
        }
        self.reader = reader
    }

    var supportedProtocol: String { handshake.supportedProtocol }
    var requiredUpgradeHeaders: [String] { handshake.requiredUpgradeHeaders }

    func addCustom(upgradeRequestHeaders: inout HTTPHeaders) {
        handshake.addCustom(upgradeRequestHeaders: &upgradeRequestHeaders)
    }

    func shouldAllowUpgrade(upgradeResponse: HTTPResponseHead) -> Bool {
        handshake.shouldAllowUpgrade(upgradeResponse: upgradeResponse)
    }

    func upgrade(context: ChannelHandlerContext, upgradeResponse: HTTPResponseHead) -> EventLoopFuture<Void> {
        let channel = context.channel
        return channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.addHandler(WebSocketFrameEncoder())
            try reader(channel)
        }
    }
}
