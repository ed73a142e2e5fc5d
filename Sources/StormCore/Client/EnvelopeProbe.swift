/// Reads the figures the bench needs from a delivered envelope without parsing it: the gateway's
/// `ts` and the publisher's sequence fields inside `data`.
///
/// Why a scan: the bench handles every delivery of every subscriber on two shared cores; building a
/// dictionary per message (`Envelope(decoding:)`) costs more than the gateway spends sending it. The
/// envelope's shape (`EnvelopeLayout`, docs/protocol.md) makes a scan safe: channel and id can hold no
/// quote, and `ts` precedes `data`.
public enum EnvelopeProbe {
    public enum Kind: Equatable, Sendable {
        case message
        case reply
        case error
        case other
    }

    /// The envelope's `type`, from its first field.
    public static func kind(_ bytes: UnsafeRawBufferPointer) -> Kind {
        guard let start = EnvelopeLayout.find(#""type":""#, in: bytes, from: 0) else { return .other }
        if EnvelopeLayout.hasPrefix("message\"", in: bytes, at: start) { return .message }
        if EnvelopeLayout.hasPrefix("reply\"", in: bytes, at: start) { return .reply }
        if EnvelopeLayout.hasPrefix("error\"", in: bytes, at: start) { return .error }
        return .other
    }

    /// The numeric `id` of a reply or error frame (`{"type":"reply","id":12,…}`): the first `id` field,
    /// which the gateway writes right after `type`; nil when it is `null`, a string, or absent.
    public static func requestID(_ bytes: UnsafeRawBufferPointer) -> UInt64? {
        guard let start = EnvelopeLayout.find(#""id":"#, in: bytes, from: 0) else { return nil }
        return EnvelopeLayout.integer(in: bytes, at: start)?.value
    }

    /// `ts` in microseconds since the epoch (`1764403915123.456` → `1764403915123456`).
    public static func timestampMicros(_ bytes: UnsafeRawBufferPointer) -> UInt64? {
        EnvelopeLayout.timestampMicros(bytes)
    }

    /// What the bench reads from each of its messages: the gateway's `ts` and the publisher's number,
    /// the bench's channel index and the sequence, which `stormctl bench` puts first in `data`
    /// (`{"p":3,"c":7,"seq":42,…}`; `c` may be absent, meaning channel 0).
    public struct BenchFields: Equatable, Sendable {
        public var timestampMicros: UInt64
        public var publisher: UInt64
        public var sequence: UInt64
        /// Index of the channel the publisher sent it to (`--channels`), so a subscriber can tell a
        /// message of another channel from one of its own.
        public var channel: UInt64 = 0
    }

    /// Reads `BenchFields` in one forward pass over a `message` envelope (`ts` precedes `data`); `nil` when
    /// the envelope does not have that shape.
    public static func benchFields(_ bytes: UnsafeRawBufferPointer) -> BenchFields? {
        guard let tsStart = EnvelopeLayout.find(EnvelopeLayout.timestampKey, in: bytes, from: 0),
            let (micros, afterTimestamp) = EnvelopeLayout.timestamp(in: bytes, at: tsStart),
            let publisherStart = EnvelopeLayout.find(#""data":{"p":"#, in: bytes, from: afterTimestamp),
            let (publisher, afterPublisher) = EnvelopeLayout.integer(in: bytes, at: publisherStart)
        else { return nil }
        var channel: UInt64 = 0
        var afterChannel = afterPublisher
        if EnvelopeLayout.hasPrefix(#","c":"#, in: bytes, at: afterPublisher) {
            guard let (value, end) = EnvelopeLayout.integer(in: bytes, at: afterPublisher + 5) else { return nil }
            channel = value
            afterChannel = end
        }
        guard EnvelopeLayout.hasPrefix(#","seq":"#, in: bytes, at: afterChannel),
            let (sequence, _) = EnvelopeLayout.integer(in: bytes, at: afterChannel + 7)
        else { return nil }
        return BenchFields(timestampMicros: micros, publisher: publisher, sequence: sequence, channel: channel)
    }
}

extension Envelope {
    /// What `stormctl subscribe --raw` prints for this message: JSON data as its JSON text, text as the
    /// text, base64 data decoded back to the original bytes; then a newline.
    public var rawOutputLine: [UInt8] {
        var line = payload
        line.append(0x0A)
        return line
    }
}
