import NIOCore

/// The envelope's byte layout, in one place. `Envelope.encoded()` writes it with a fixed field order
/// (`type`, `channel`, `id`, `ts`, `data`, then `encoding`); the readers that must not parse JSON (the
/// gateway on every delivery, the bench on every receipt) scan for the fields they need, and the gateway
/// splices the stored offset in. Channel names and ids can hold no quote, and `id` and `ts` come before
/// `data`, so the first match of a key is always the envelope's own field, never one inside the payload.
public enum EnvelopeLayout {
    /// The start of every message envelope; the offset goes right after it.
    public static let messagePrefix: StaticString = #"{"type":"message","#
    static let channelKey: StaticString = #""channel":"#
    static let idKey: StaticString = #","id":"#
    static let timestampKey: StaticString = #","ts":"#
    static let dataKey: StaticString = #","data":"#
    static let encodingKey: StaticString = #","encoding":"#

    /// Where the id's characters are (without quotes) and the publish time in microseconds; `nil` when
    /// `bytes` is not a message envelope.
    public static func scan(_ bytes: UnsafeRawBufferPointer) -> (id: Range<Int>, timestampMicros: UInt64)? {
        guard bytes.first == UInt8(ascii: "{"), bytes.last == UInt8(ascii: "}"),
            let idKeyEnd = find(idKey, in: bytes, from: 0), idKeyEnd < bytes.count, bytes[idKeyEnd] == UInt8(ascii: "\"")
        else { return nil }
        let idStart = idKeyEnd + 1
        var idEnd = idStart
        while idEnd < bytes.count, bytes[idEnd] != UInt8(ascii: "\"") { idEnd += 1 }
        guard idEnd < bytes.count, let tsStart = find(timestampKey, in: bytes, from: idEnd),
            let (micros, _) = timestamp(in: bytes, at: tsStart)
        else { return nil }
        return (idStart..<idEnd, micros)
    }

    /// `ts` in microseconds since the epoch (`1764403915123.456` → `1764403915123456`).
    public static func timestampMicros(_ bytes: UnsafeRawBufferPointer) -> UInt64? {
        guard let start = find(timestampKey, in: bytes, from: 0) else { return nil }
        return timestamp(in: bytes, at: start)?.micros
    }

    /// The envelope as delivered from history or the broker: `{"type":"message","offset":N,…}`. The offset
    /// is only known once the broker stored the message, after the publishing gateway built the envelope.
    public static func withOffset(_ envelope: ByteBuffer, offset: UInt64, allocator: ByteBufferAllocator) -> ByteBuffer {
        var out = allocator.buffer(capacity: envelope.readableBytes + 32)
        let prefixLength = messagePrefix.utf8CodeUnitCount
        let startsWithPrefix = envelope.withUnsafeReadableBytes { hasPrefix(messagePrefix, in: $0, at: 0) }
        if startsWithPrefix {
            out.writeStaticString(messagePrefix)
            out.writeString("\"offset\":\(offset),")
            out.writeBytes(envelope.readableBytesView.dropFirst(prefixLength))
        } else {
            out.writeString("{\"offset\":\(offset),")
            out.writeBytes(envelope.readableBytesView.dropFirst())
        }
        return out
    }

    /// Milliseconds with up to three decimals at `start`, as microseconds, and the index after them. At
    /// most 16 digits of milliseconds, so the microseconds cannot overflow.
    public static func timestamp(in bytes: UnsafeRawBufferPointer, at start: Int) -> (micros: UInt64, end: Int)? {
        var index = start
        var millis: UInt64 = 0
        while index < bytes.count, index - start < 16, let digit = digit(bytes[index]) {
            millis = millis * 10 + digit
            index += 1
        }
        guard index > start else { return nil }
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
        return (millis * 1000 + micros, index)
    }

    /// The non-negative integer (at most 19 digits, wrapping) at `start` and the index after it.
    public static func integer(in bytes: UnsafeRawBufferPointer, at start: Int) -> (value: UInt64, end: Int)? {
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

    public static func hasPrefix(_ pattern: StaticString, in bytes: UnsafeRawBufferPointer, at index: Int) -> Bool {
        let count = pattern.utf8CodeUnitCount
        guard index >= 0, index + count <= bytes.count else { return false }
        let start = pattern.utf8Start
        for offset in 0..<count where bytes[index + offset] != start[offset] { return false }
        return true
    }

    /// The index just past the first occurrence of `pattern` at or after `from`.
    public static func find(_ pattern: StaticString, in bytes: UnsafeRawBufferPointer, from: Int) -> Int? {
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

extension Array where Element == UInt8 {
    mutating func append(_ text: StaticString) {
        append(contentsOf: UnsafeBufferPointer(start: text.utf8Start, count: text.utf8CodeUnitCount))
    }
}
