import NIOCore

// RFC 6455 server frames (section 5.2), both ways: `WebSocketWire` writes them (the gateway frames each
// message once and shares the bytes with every subscriber) and `ServerFrameParser` reads them (stormctl's
// clients and the bench). Server frames are never masked, so a frame is a 2-to-10-byte header and the
// payload. Client frames, which are masked, are NIO's: `WebSocketFrameEncoder` in the clients,
// `WebSocketFrameDecoder` and `NIOWebSocketFrameAggregator` in the gateway.

/// Server-side WebSocket framing (RFC 6455 section 5.2). Server frames are never masked, so a frame is a
/// 2-to-10-byte header and the payload: written once here and then shared.
public enum WebSocketWire {
    public static func frame(opcode: UInt8, payload: ByteBuffer, allocator: ByteBufferAllocator) -> ByteBuffer {
        let length = payload.readableBytes
        var frame = allocator.buffer(capacity: length + 10)
        frame.writeInteger(0x80 | opcode)  // FIN + opcode
        if length < 126 {
            frame.writeInteger(UInt8(length))
        } else if length <= Int(UInt16.max) {
            frame.writeInteger(UInt8(126))
            frame.writeInteger(UInt16(length))
        } else {
            frame.writeInteger(UInt8(127))
            frame.writeInteger(UInt64(length))
        }
        frame.writeImmutableBuffer(payload)
        return frame
    }

    public static func textFrame(payload: ByteBuffer, allocator: ByteBufferAllocator) -> ByteBuffer {
        frame(opcode: 0x1, payload: payload, allocator: allocator)
    }

    public static func closeFrame(code: UInt16, reason: String, allocator: ByteBufferAllocator) -> ByteBuffer {
        var payload = allocator.buffer(capacity: 2 + reason.utf8.count)
        payload.writeInteger(code)
        // Control frames carry at most 125 bytes: cut the reason on a character boundary.
        var budget = 123
        for scalar in reason.unicodeScalars {
            let size = String(scalar).utf8.count
            if size > budget { break }
            budget -= size
            payload.writeString(String(scalar))
        }
        return frame(opcode: 0x8, payload: payload, allocator: allocator)
    }
}

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
