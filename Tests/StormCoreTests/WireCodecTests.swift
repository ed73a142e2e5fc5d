import NIOCore
import NIOEmbedded
import NIOWebSocket
import StormCore
import Testing

/// The one server-frame codec (`WebSocketWire` writes, `ServerFrameParser` reads) and the one envelope
/// layout (`Envelope.encoded` writes, `EnvelopeLayout` scans and splices), each checked against the other
/// and against an independent reader.
@Suite("Wire codecs")
struct WireCodecTests {
    private let allocator = ByteBufferAllocator()

    @Test("server frames of every length class parse back, and NIO's decoder reads them too", arguments: [0, 1, 125, 126, 65_535, 65_536, 200_000])
    func serverFrames(length: Int) throws {
        let payload = ByteBuffer(bytes: (0..<length).map { UInt8(truncatingIfNeeded: $0) })
        var frame = WebSocketWire.textFrame(payload: payload, allocator: allocator)
        let parsed = try #require(try ServerFrameParser(maximumFrameSize: 1 << 20).next(&frame))
        #expect(parsed.fin && parsed.opcode == ServerFrame.text)
        #expect(parsed.payload == payload)
        #expect(frame.readableBytes == 0)

        let channel = EmbeddedChannel(handler: ByteToMessageHandler(WebSocketFrameDecoder(maxFrameSize: 1 << 20)))
        try channel.writeInbound(WebSocketWire.textFrame(payload: payload, allocator: allocator))
        let decoded = try #require(try channel.readInbound(as: WebSocketFrame.self))
        #expect(decoded.opcode == .text && decoded.fin && decoded.maskKey == nil)
        #expect(decoded.unmaskedData == payload)
        _ = try channel.finish()
    }

    @Test("a partial frame waits for more bytes; a close frame's reason is cut to fit 125 bytes")
    func partialAndClose() throws {
        let parser = ServerFrameParser(maximumFrameSize: 1 << 20)
        var whole = WebSocketWire.textFrame(payload: ByteBuffer(string: "hello"), allocator: allocator)
        var part = whole.readSlice(length: 4) ?? ByteBuffer()
        #expect(try parser.next(&part) == nil)
        var close = WebSocketWire.closeFrame(code: 4008, reason: String(repeating: "é", count: 100), allocator: allocator)
        let frame = try #require(try parser.next(&close))
        #expect(frame.opcode == ServerFrame.close)
        #expect(frame.payload.readableBytes <= 125)
        #expect(frame.payload.getInteger(at: frame.payload.readerIndex, as: UInt16.self) == 4008)
        #expect(frame.payload.getString(at: frame.payload.readerIndex + 2, length: frame.payload.readableBytes - 2) != nil)
    }

    @Test("the scanner finds id and ts in every encoded envelope, whatever the payload holds", arguments: [
        #"{"ts":1,"id":"fake","type":"message"}"#, "plain text with \",\"id\":\" inside", "",
    ])
    func scan(payload: String) throws {
        let envelope = Envelope(
            channel: try ChannelName(validating: "chat.room-1"), id: "0a1b2c-42", timestampMicros: 1_764_403_915_123_456,
            payload: Array(payload.utf8))
        let bytes = envelope.encoded()
        let scanned = try #require(bytes.withUnsafeBytes { EnvelopeLayout.scan($0) })
        #expect(String(decoding: bytes[scanned.id], as: UTF8.self) == "0a1b2c-42")
        #expect(scanned.timestampMicros == 1_764_403_915_123_456)
        #expect(bytes.withUnsafeBytes { EnvelopeLayout.timestampMicros($0) } == 1_764_403_915_123_456)
    }

    @Test("the offset splice keeps the envelope valid and readable by the decoder")
    func splice() throws {
        let envelope = Envelope(channel: try ChannelName(validating: "a"), id: "x-1", timestampMicros: 5_000, payload: Array(#"{"k":[1,2]}"#.utf8))
        let spliced = EnvelopeLayout.withOffset(ByteBuffer(bytes: envelope.encoded()), offset: 77, allocator: allocator)
        var decoded = try Envelope(decoding: Array(spliced.readableBytesView))
        #expect(decoded.offset == 77)
        decoded.offset = nil
        #expect(decoded == envelope)
        #expect(spliced.readableBytesView.starts(with: Array(#"{"type":"message","offset":77,"channel":"a""#.utf8)))
    }

    @Test("bytes that are not an envelope are not scanned as one", arguments: ["", "{}", "[1]", #"{"id":"x","ts":1}"#, #"{"type":"message","channel":"a","id":"x","ts":}"#])
    func notEnvelopes(text: String) {
        #expect(Array(text.utf8).withUnsafeBytes { EnvelopeLayout.scan($0) } == nil)
    }
}
