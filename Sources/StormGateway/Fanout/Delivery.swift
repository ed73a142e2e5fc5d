import NIOCore
import StormCore
import StormObservability

/// One message ready for fan-out: the envelope framed once per transport, shared by every subscriber.
///
/// Building both frames costs two small copies per message per gateway; writing the same `ByteBuffer` to
/// ten thousand connections then costs a reference-count increment each, with no encoding on the loops.
package struct Delivery: Sendable {
    package let channel: ChannelName
    /// A complete unmasked WebSocket text frame (header and payload).
    package let webSocketFrame: ByteBuffer
    /// A complete HTTP/1.1 chunk holding one Server-Sent Event.
    package let sseChunk: ByteBuffer
    /// When the publishing gateway accepted the message (µs since the epoch), for the fan-out latency.
    package let publishedAtMicros: UInt64
    /// The message's offset in the channel's history (0 when the broker keeps none).
    package let offset: UInt64
    /// The fan-out span of a traced message; `nil` (and never looked at beyond that) without a tracer.
    package var trace: FanoutTrace?
    /// The number of the local connection that published it with `exclude_self` (0: none), which the
    /// loop's pass skips (`PublisherExclusions`).
    package var excludedConnection: UInt64 = 0

    /// Frames an envelope received from the broker; `nil` when the bytes are not a STORM envelope (another
    /// program publishing on STORM's subjects), which the caller counts and drops.
    ///
    /// The offset is only known once the broker stored the message, after the publishing gateway built
    /// the envelope, so it is spliced in here: `{"type":"message","offset":N,…}`. The SSE event id is the
    /// offset, which is what `Last-Event-ID` resumes from.
    package init?(envelope: ByteBuffer, offset: UInt64, channel: ChannelName, allocator: ByteBufferAllocator) {
        guard let fields = EnvelopeFields(envelope) else { return nil }
        self.channel = channel
        self.offset = offset
        self.publishedAtMicros = fields.timestampMicros
        let framed = offset > 0 ? Self.withOffset(envelope, offset: offset, allocator: allocator) : envelope
        self.webSocketFrame = WebSocketWire.textFrame(payload: framed, allocator: allocator)
        if offset > 0 {
            self.sseChunk = SSEWire.eventChunk(id: ByteBuffer(string: String(offset)).readableBytesView, envelope: framed, allocator: allocator)
        } else {
            self.sseChunk = SSEWire.eventChunk(id: fields.id, envelope: framed, allocator: allocator)
        }
    }

    /// The envelope as delivered (with its offset): the WebSocket frame without its header, a slice that
    /// shares the frame's storage. For the few writers that frame it otherwise (multi-channel SSE ids).
    package var envelope: ByteBuffer {
        var frame = webSocketFrame
        guard let second = frame.getInteger(at: frame.readerIndex + 1, as: UInt8.self) else { return frame }
        let length = second & 0x7F
        frame.moveReaderIndex(forwardBy: min(frame.readableBytes, length < 126 ? 2 : (length == 126 ? 4 : 10)))
        return frame
    }

    private static let typePrefix = Array(#"{"type":"message","#.utf8)

    package static func withOffset(_ envelope: ByteBuffer, offset: UInt64, allocator: ByteBufferAllocator) -> ByteBuffer {
        var out = allocator.buffer(capacity: envelope.readableBytes + 32)
        let view = envelope.readableBytesView
        if view.starts(with: typePrefix) {
            out.writeBytes(typePrefix)
            out.writeString("\"offset\":\(offset),")
            out.writeBytes(view.dropFirst(typePrefix.count))
        } else {
            out.writeString("{\"offset\":\(offset),")
            out.writeBytes(view.dropFirst())
        }
        return out
    }
}

/// The deliveries of one channel in one drain of a loop, in order, each transport's frames concatenated
/// so that a subscriber gets all of them with one write.
///
/// Why: with a few messages per flush, queueing each frame on each connection (a pipeline write, a
/// pending-write entry and a retain per frame) cost the gateway more than the frames' bytes. The
/// concatenation is made once per loop, and only for a transport that has a subscriber there.
package final class DeliveryRun {
    package let channel: ChannelName
    package let deliveries: [Delivery]
    private let allocator: ByteBufferAllocator

    /// Some delivery of the run skips its publisher (`exclude_self`): sessions then filter the run.
    package let hasExclusions: Bool

    package init(channel: ChannelName, deliveries: [Delivery], allocator: ByteBufferAllocator) {
        self.channel = channel
        self.deliveries = deliveries
        self.allocator = allocator
        self.hasExclusions = deliveries.contains { $0.excludedConnection != 0 }
    }

    package var count: Int { deliveries.count }

    /// Every delivery's WebSocket frame, back to back.
    private(set) lazy var webSocketFrames: ByteBuffer = concatenated(\.webSocketFrame)

    /// Every delivery's SSE chunk, back to back.
    private(set) lazy var sseChunks: ByteBuffer = concatenated(\.sseChunk)

    private func concatenated(_ frame: KeyPath<Delivery, ByteBuffer>) -> ByteBuffer {
        if deliveries.count == 1 { return deliveries[0][keyPath: frame] }
        var size = 0
        for delivery in deliveries { size += delivery[keyPath: frame].readableBytes }
        var out = allocator.buffer(capacity: size)
        for delivery in deliveries { out.writeImmutableBuffer(delivery[keyPath: frame]) }
        return out
    }
}

/// The two envelope fields the gateway needs without parsing the whole JSON: the message id (SSE `id:`)
/// and the publish timestamp. Envelopes are written by `Envelope.encoded()`, whose field order is fixed.
package struct EnvelopeFields {
    package let id: ByteBufferView
    package let timestampMicros: UInt64

    package init?(_ envelope: ByteBuffer) {
        let view = envelope.readableBytesView
        guard view.first == UInt8(ascii: "{"), view.last == UInt8(ascii: "}"),
            let idStart = Self.valueStart(of: Self.idKey, in: view),
            let idEnd = view[idStart...].firstIndex(of: UInt8(ascii: "\"")),
            let tsStart = Self.valueStart(of: Self.tsKey, in: view)
        else { return nil }
        var index = tsStart
        var millis: UInt64 = 0
        var digits = 0
        while index < view.endIndex, let digit = Self.digit(view[index]), digits < 16 {
            millis = millis * 10 + digit
            index += 1
            digits += 1
        }
        guard digits > 0 else { return nil }
        var micros = millis * 1000
        if index < view.endIndex, view[index] == UInt8(ascii: ".") {
            index += 1
            var scale: UInt64 = 100
            while index < view.endIndex, let digit = Self.digit(view[index]) {
                micros += digit * scale
                scale /= 10
                index += 1
            }
        }
        self.id = view[idStart..<idEnd]
        self.timestampMicros = micros
    }

    private static let idKey = Array(#","id":""#.utf8)
    private static let tsKey = Array(#","ts":"#.utf8)

    @inline(__always)
    private static func digit(_ byte: UInt8) -> UInt64? {
        byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") ? UInt64(byte - UInt8(ascii: "0")) : nil
    }

    /// Index just after the first occurrence of `key`; envelopes put `id` and `ts` before the payload, so the
    /// first match is the envelope's own field, never one inside `data`.
    private static func valueStart(of key: [UInt8], in view: ByteBufferView) -> Int? {
        guard let first = key.first else { return nil }
        var index = view.startIndex
        let end = view.endIndex - key.count
        while index <= end {
            if view[index] == first {
                var matched = true
                for offset in 1..<key.count where view[index + offset] != key[offset] {
                    matched = false
                    break
                }
                if matched { return index + key.count }
            }
            index += 1
        }
        return nil
    }
}

/// Server-side WebSocket framing (RFC 6455 section 5.2). Server frames are never masked, so a frame is a
/// 2-to-10-byte header and the payload: written once here and then shared.
package enum WebSocketWire {
    package static func frame(opcode: UInt8, payload: ByteBuffer, allocator: ByteBufferAllocator) -> ByteBuffer {
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

    package static func textFrame(payload: ByteBuffer, allocator: ByteBufferAllocator) -> ByteBuffer {
        frame(opcode: 0x1, payload: payload, allocator: allocator)
    }

    package static func closeFrame(code: UInt16, reason: String, allocator: ByteBufferAllocator) -> ByteBuffer {
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

/// Server-Sent Events framing inside HTTP/1.1 chunked transfer encoding: each event is one complete chunk,
/// so the same bytes go to every SSE subscriber as they are.
package enum SSEWire {
    package static func eventChunk(id: ByteBufferView, envelope: ByteBuffer, allocator: ByteBufferAllocator) -> ByteBuffer {
        let bodyLength = 4 + id.count + 1 + 15 + 6 + envelope.readableBytes + 2
        var chunk = allocator.buffer(capacity: bodyLength + 12)
        chunk.writeString(String(bodyLength, radix: 16))
        chunk.writeStaticString("\r\nid: ")
        chunk.writeBytes(id)
        chunk.writeStaticString("\nevent: message\ndata: ")
        chunk.writeImmutableBuffer(envelope)
        chunk.writeStaticString("\n\n\r\n")
        return chunk
    }

    /// A comment event: keeps proxies from timing the stream out and finds dead peers.
    package static func commentChunk(_ text: String, allocator: ByteBufferAllocator) -> ByteBuffer {
        let body = ": \(text)\n\n"
        var chunk = allocator.buffer(capacity: body.utf8.count + 12)
        chunk.writeString(String(body.utf8.count, radix: 16))
        chunk.writeStaticString("\r\n")
        chunk.writeString(body)
        chunk.writeStaticString("\r\n")
        return chunk
    }

    /// The last chunk of a chunked body.
    package static func terminator(allocator: ByteBufferAllocator) -> ByteBuffer {
        var chunk = allocator.buffer(capacity: 5)
        chunk.writeStaticString("0\r\n\r\n")
        return chunk
    }
}
