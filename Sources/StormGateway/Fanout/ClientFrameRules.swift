import NIOCore
import NIOWebSocket

/// A breach of RFC 6455 by the client, answered with a close frame carrying `code`.
package struct WebSocketViolation: Error, Equatable, Sendable {
    package var code: UInt16
    package var reason: String

    package init(code: UInt16, reason: String) {
        self.code = code
        self.reason = reason
    }
}

/// What RFC 6455 (section 5) requires of every frame a client sends, as plain decisions.
///
/// NIO's `WebSocketFrameDecoder` parses the frames and NIO's `NIOWebSocketFrameAggregator` joins
/// fragments; neither checks these rules, and the aggregator's joined frame no longer shows the mask or
/// the reserved bits of its fragments. So `ClientFrameCheck` applies them to each frame before the
/// aggregator, and the session only ever sees whole, valid messages and control frames.
package enum ClientFrameRules {
    /// Why `frame` must close the connection, or `nil` when it may go on.
    package static func violation(of frame: WebSocketFrame) -> WebSocketViolation? {
        violation(masked: frame.maskKey != nil, reservedBits: frame.rsv1 || frame.rsv2 || frame.rsv3, opcode: frame.opcode, fin: frame.fin, length: frame.length)
    }

    package static func violation(masked: Bool, reservedBits: Bool, opcode: WebSocketOpcode, fin: Bool, length: Int) -> WebSocketViolation? {
        guard masked else { return WebSocketViolation(code: 1002, reason: "client frames must be masked") }
        guard !reservedBits else { return WebSocketViolation(code: 1002, reason: "reserved bits set but no extension was negotiated") }
        switch opcode {
        case .text, .continuation:
            return nil
        case .binary:
            return WebSocketViolation(code: 1003, reason: "binary frames are not supported: send JSON requests in text frames")
        case .connectionClose, .ping, .pong:
            guard fin else { return WebSocketViolation(code: 1002, reason: "control frames must not be fragmented") }
            guard length <= 125 else { return WebSocketViolation(code: 1002, reason: "control frames carry at most 125 bytes") }
            return nil
        default:
            return WebSocketViolation(code: 1002, reason: "unknown opcode \(opcode)")
        }
    }

    /// The close that answers a fragment sequence NIO's aggregator refused.
    package static func violation(for error: NIOWebSocketFrameAggregator.Error, maxMessageSize: Int, maxFragments: Int) -> WebSocketViolation {
        switch error {
        case .accumulatedFrameSizeIsTooLarge:
            WebSocketViolation(code: 1009, reason: "message larger than \(maxMessageSize) bytes")
        case .tooManyFragments:
            WebSocketViolation(code: 1009, reason: "message in more than \(maxFragments) fragments")
        case .receivedNewFrameWithoutFinishingPrevious:
            WebSocketViolation(code: 1002, reason: "a new message started before the fragmented one ended")
        case .didReceiveFragmentBeforeReceivingTextOrBinaryFrame:
            WebSocketViolation(code: 1002, reason: "continuation frame with no message to continue")
        case .nonFinalFragmentSizeIsTooSmall:
            WebSocketViolation(code: 1002, reason: "fragment too small")
        }
    }

    /// The most fragments one message may arrive in: a bound on the aggregator's list, far above what a
    /// real client sends (browsers send one frame per message).
    package static let maxFragments = 1024
}

/// Runs `ClientFrameRules` on each inbound frame, between NIO's decoder and its aggregator. The first
/// violation goes up the pipeline as a `WebSocketViolation` error (the session closes with its code);
/// after it only close frames pass, for the closing handshake.
package final class ClientFrameCheck: ChannelInboundHandler {
    package typealias InboundIn = WebSocketFrame
    package typealias InboundOut = WebSocketFrame

    private var failed = false

    package init() {}

    package func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = Self.unwrapInboundIn(data)
        if failed {
            if frame.opcode == .connectionClose { context.fireChannelRead(data) }
            return
        }
        if let violation = ClientFrameRules.violation(of: frame) {
            failed = true
            context.fireErrorCaught(violation)
            return
        }
        context.fireChannelRead(data)
    }
}
