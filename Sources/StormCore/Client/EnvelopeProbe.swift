/// Reads the two figures the bench needs from a delivered envelope without parsing it: the gateway's
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

    /// `ts` in microseconds since the epoch (`1764403915123.456` → `1764403915123456`).
    public static func timestampMicros(_ bytes: UnsafeRawBufferPointer) -> UInt64? {
        guard var index = find(#""ts":"#, in: bytes, from: 0) else { return nil }
        var millis: UInt64 = 0
        var digits = 0
        while index < bytes.count, let digit = digit(bytes[index]) {
            millis = millis &* 10 &+ digit
            index += 1
            digits += 1
        }
        guard digits > 0 else { return nil }
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
        return millis &* 1000 &+ micros
    }

    /// The non-negative integer after `"name":`, searched from the start of `data`.
    public static func integerField(_ name: String, in bytes: UnsafeRawBufferPointer) -> UInt64? {
        let dataStart = find(#""data":"#, in: bytes, from: 0) ?? 0
        let key = "\"" + name + "\":"
        guard var index = find(key, in: bytes, from: dataStart) else { return nil }
        var value: UInt64 = 0
        var digits = 0
        while index < bytes.count, let digit = digit(bytes[index]) {
            value = value &* 10 &+ digit
            index += 1
            digits += 1
        }
        return digits > 0 ? value : nil
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
    static func find(_ pattern: String, in bytes: UnsafeRawBufferPointer, from: Int) -> Int? {
        var pattern = pattern
        return pattern.withUTF8 { needle -> Int? in
            guard let first = needle.first, needle.count <= bytes.count else { return nil }
            var index = from
            let last = bytes.count - needle.count
            while index <= last {
                if bytes[index] == first {
                    var offset = 1
                    while offset < needle.count, bytes[index + offset] == needle[offset] { offset += 1 }
                    if offset == needle.count { return index + needle.count }
                }
                index += 1
            }
            return nil
        }
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
