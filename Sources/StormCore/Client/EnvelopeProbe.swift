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

    /// `ts` in microseconds since the epoch (`1764403915123.456` → `1764403915123456`).
    public static func timestampMicros(_ bytes: UnsafeRawBufferPointer) -> UInt64? {
        EnvelopeLayout.timestampMicros(bytes)
    }

    /// What the bench reads from each of its messages: the gateway's `ts` and the publisher's number and
    /// sequence, which `stormctl bench` puts first in `data` (`{"p":3,"seq":42,…}`).
    public struct BenchFields: Equatable, Sendable {
        public var timestampMicros: UInt64
        public var publisher: UInt64
        public var sequence: UInt64
    }

    /// Reads `BenchFields` in one forward pass over a `message` envelope (`ts` precedes `data`); `nil` when
    /// the envelope does not have that shape.
    public static func benchFields(_ bytes: UnsafeRawBufferPointer) -> BenchFields? {
        guard let tsStart = EnvelopeLayout.find(EnvelopeLayout.timestampKey, in: bytes, from: 0),
            let (micros, afterTimestamp) = EnvelopeLayout.timestamp(in: bytes, at: tsStart),
            let publisherStart = EnvelopeLayout.find(#""data":{"p":"#, in: bytes, from: afterTimestamp),
            let (publisher, afterPublisher) = EnvelopeLayout.integer(in: bytes, at: publisherStart),
            EnvelopeLayout.hasPrefix(#","seq":"#, in: bytes, at: afterPublisher),
            let (sequence, _) = EnvelopeLayout.integer(in: bytes, at: afterPublisher + 7)
        else { return nil }
        return BenchFields(timestampMicros: micros, publisher: publisher, sequence: sequence)
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
