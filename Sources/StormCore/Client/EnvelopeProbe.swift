/// Reads the figures the bench needs from a delivered envelope without parsing it: the gateway's
/// `ts` and the publisher's sequence fields inside `data`.
///
/// Why a scan: the bench handles every delivery of every subscriber on two shared cores; building a
/// dictionary per message (`Envelope(decoding:)`) costs more than the gateway spends sending it. The
/// envelope's shape (docs/protocol.md) makes a scan safe: channel and id can hold no quote, and `ts`
/// precedes `data`.
public enum EnvelopeProbe {
    public enum Kind: Equatable, Sendable {
        case message
        case reply
        case error
        case other
    }

    /// The envelope's `type`, from its first field.
    public static func kind(_ bytes: UnsafeRawBufferPointer) -> Kind {
        guard let start = find(#""type":""#, in: bytes, from: 0) else { return .other }
        if hasPrefix("message\"", in: bytes, at: start) { return .message }
        if hasPrefix("reply\"", in: bytes, at: start) { return .reply }
        if hasPrefix("error\"", in: bytes, at: start) { return .error }
        return .other
    }

    /// The numeric `id` of a reply or error frame (`{"type":"reply","id":12,…}`): the first `id` field,
    /// which the gateway writes right after `type`; nil when it is `null`, a string, or absent.
    public static func requestID(_ bytes: UnsafeRawBufferPointer) -> UInt64? {
        guard let start = find(#""id":"#, in: bytes, from: 0) else { return nil }
        return integer(in: bytes, at: start)?.value
    }

    /// `ts` in microseconds since the epoch (`1764403915123.456` → `1764403915123456`).
    public static func timestampMicros(_ bytes: UnsafeRawBufferPointer) -> UInt64? {
        guard let start = find(#""ts":"#, in: bytes, from: 0) else { return nil }
        return timestamp(in: bytes, at: start)?.micros
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
        guard let tsStart = find(#""ts":"#, in: bytes, from: 0),
            let (micros, afterTimestamp) = timestamp(in: bytes, at: tsStart),
            let publisherStart = find(#""data":{"p":"#, in: bytes, from: afterTimestamp),
            let (publisher, afterPublisher) = integer(in: bytes, at: publisherStart)
        else { return nil }
        var channel: UInt64 = 0
        var afterChannel = afterPublisher
        if hasPrefix(#","c":"#, in: bytes, at: afterPublisher) {
            guard let (value, end) = integer(in: bytes, at: afterPublisher + 5) else { return nil }
            channel = value
            afterChannel = end
        }
        guard hasPrefix(#","seq":"#, in: bytes, at: afterChannel),
            let (sequence, _) = integer(in: bytes, at: afterChannel + 7)
        else { return nil }
        return BenchFields(timestampMicros: micros, publisher: publisher, sequence: sequence, channel: channel)
    }

    /// Milliseconds with up to three decimals at `index`, as microseconds, and the index after them.
    private static func timestamp(in bytes: UnsafeRawBufferPointer, at start: Int) -> (micros: UInt64, end: Int)? {
        guard let (millis, afterMillis) = integer(in: bytes, at: start) else { return nil }
        var index = afterMillis
        var micros: UInt64 = 0
        var fractionDigits = 0
        if index < bytes.count, bytes[index] == UInt8(ascii: ".") {
            index += 1
            while index < bytes.count, let digit = digit(bytes[index]) {
                if fractionDigits < 3 {
                    micros = micros * 10 + digit
                    fractionDigits += 1
                }
                index += 1
            }
        }
        while fractionDigits < 3 {
            micros *= 10
            fractionDigits += 1
        }
        return (millis &* 1000 &+ micros, index)
    }

    /// The non-negative integer at `index` and the index after it.
    private static func integer(in bytes: UnsafeRawBufferPointer, at start: Int) -> (value: UInt64, end: Int)? {
        var index = start
        var value: UInt64 = 0
        while index < bytes.count, index - start < 19, let digit = digit(bytes[index]) {
            value = value &* 10 &+ digit
            index += 1
        }
        return index > start ? (value, index) : nil
    }

    @inline(__always)
    static func digit(_ byte: UInt8) -> UInt64? {
        byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") ? UInt64(byte - UInt8(ascii: "0")) : nil
    }

    static func hasPrefix(_ pattern: StaticString, in bytes: UnsafeRawBufferPointer, at index: Int) -> Bool {
        let count = pattern.utf8CodeUnitCount
        guard index + count <= bytes.count else { return false }
        let start = pattern.utf8Start
        for offset in 0..<count where bytes[index + offset] != start[offset] { return false }
        return true
    }

    /// The index just past the first occurrence of `pattern` at or after `from`.
    static func find(_ pattern: StaticString, in bytes: UnsafeRawBufferPointer, from: Int) -> Int? {
        let count = pattern.utf8CodeUnitCount
        guard count > 0, from >= 0 else { return nil }
        let needle = pattern.utf8Start
        let first = needle[0]
        var index = from
        let last = bytes.count - count
        while index <= last {
            if bytes[index] == first {
                var offset = 1
                while offset < count, bytes[index + offset] == needle[offset] { offset += 1 }
                if offset == count { return index + count }
            }
            index += 1
        }
        return nil
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
