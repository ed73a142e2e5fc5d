import NIOCore
import NIOHTTP1
import NIOWebSocket

/// One frame a WebSocket server sent: opcode and payload, a slice of the bytes read.
public struct ServerFrame {
    public var fin: Bool
    public var opcode: UInt8
    public var payload: ByteBuffer

    public static let continuation: UInt8 = 0x0
    public static let text: UInt8 = 0x1
    public static let binary: UInt8 = 0x2
    public static let close: UInt8 = 0x8
    public static let ping: UInt8 = 0x9
    public static let pong: UInt8 = 0xA
}

/// Splits the bytes a WebSocket server sends into frames (RFC 6455 section 5.2), in place.
///
/// Why not NIO's `WebSocketFrameDecoder`: the bench client reads half a million frames a second on the
/// two cores it shares with the gateway, and the profile showed it spending more on passing each frame
/// through the pipeline (an existential box, a dynamic cast and a context hop per frame, twice with the
/// aggregator) than on reading it. Server frames are the easy direction: never masked, so a frame is a
/// 2-to-10-byte header and a payload that can be handed on as a slice of the read buffer.
public struct ServerFrameParser: Sendable {
    public let maximumFrameSize: Int

    public init(maximumFrameSize: Int) {
        self.maximumFrameSize = maximumFrameSize
    }

    public enum Failure: Error, Equatable {
        case masked
        case reservedBits
        case tooLarge(UInt64)
        case badControlFrame

        /// What the server did wrong, for the operator.
        public var message: String {
            switch self {
            case .masked: "the server sent a masked frame (RFC 6455 forbids it)"
            case .reservedBits: "the server set reserved bits without a negotiated extension"
            case .tooLarge(let size): "the server sent a \(size)-byte frame, more than this client accepts"
            case .badControlFrame: "the server sent a fragmented or oversized control frame"
            }
        }
    }

    /// The next complete frame at the start of `bytes`, consuming it; `nil` when more bytes are needed.
    public func next(_ bytes: inout ByteBuffer) throws(Failure) -> ServerFrame? {
        guard let first = bytes.getInteger(at: bytes.readerIndex, as: UInt8.self),
            let second = bytes.getInteger(at: bytes.readerIndex + 1, as: UInt8.self)
        else { return nil }
        guard second & 0x80 == 0 else { throw .masked }
        guard first & 0x70 == 0 else { throw .reservedBits }
        let opcode = first & 0x0F
        var header = 2
        var length = UInt64(second & 0x7F)
        if length == 126 {
            guard let extended = bytes.getInteger(at: bytes.readerIndex + 2, as: UInt16.self) else { return nil }
            length = UInt64(extended)
            header = 4
        } else if length == 127 {
            guard let extended = bytes.getInteger(at: bytes.readerIndex + 2, as: UInt64.self) else { return nil }
            length = extended
            header = 10
        }
        guard length <= UInt64(maximumFrameSize) else { throw .tooLarge(length) }
        if opcode >= 0x8, first & 0x80 == 0 || length > 125 { throw .badControlFrame }
        guard bytes.readableBytes >= header + Int(length),
            let payload = bytes.getSlice(at: bytes.readerIndex + header, length: Int(length))
        else { return nil }
        bytes.moveReaderIndex(forwardBy: header + Int(length))
        return ServerFrame(fin: first & 0x80 != 0, opcode: opcode, payload: payload)
    }
}

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
