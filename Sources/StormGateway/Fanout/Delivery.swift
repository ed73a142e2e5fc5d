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
        let framed = offset > 0 ? EnvelopeLayout.withOffset(envelope, offset: offset, allocator: allocator) : envelope
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
/// and the publish timestamp, found by `EnvelopeLayout.scan`.
package struct EnvelopeFields {
    package let id: ByteBufferView
    package let timestampMicros: UInt64

    package init?(_ envelope: ByteBuffer) {
        guard let scanned = envelope.withUnsafeReadableBytes({ EnvelopeLayout.scan($0) }) else { return nil }
        let view = envelope.readableBytesView
        self.id = view[(view.startIndex + scanned.id.lowerBound)..<(view.startIndex + scanned.id.upperBound)]
        self.timestampMicros = scanned.timestampMicros
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
