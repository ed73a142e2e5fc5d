/// Minimal JSON reading and writing for the wire protocol.
///
/// Why not `JSONSerialization`/`Codable`: STORM must pass a client's JSON payload through byte for byte
/// (a number like `12345678901234567890` or a key order must not change), must validate publish bodies
/// without building an object tree, and must stay cheap on the publish path. So this scanner validates
/// JSON per RFC 8259 and hands out the raw bytes of values; only strings are ever decoded.
public enum JSONWriter {
    /// Appends `value` as a JSON string literal (quotes included), escaping what RFC 8259 requires.
    public static func appendString(_ value: String, to out: inout String) {
        out.append("\"")
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\"": out.append("\\\"")
            case "\\": out.append("\\\\")
            case "\n": out.append("\\n")
            case "\r": out.append("\\r")
            case "\t": out.append("\\t")
            default:
                if scalar.value < 0x20 {
                    let hex = String(scalar.value, radix: 16)
                    out.append("\\u" + String(repeating: "0", count: 4 - hex.count) + hex)
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        out.append("\"")
    }

    /// Appends `bytes` (valid UTF-8) as a JSON string literal to a byte array.
    public static func appendString<Bytes: Sequence>(utf8 bytes: Bytes, to out: inout [UInt8]) where Bytes.Element == UInt8 {
        out.append(UInt8(ascii: "\""))
        for byte in bytes {
            switch byte {
            case UInt8(ascii: "\""): out.append(contentsOf: [0x5C, 0x22])
            case UInt8(ascii: "\\"): out.append(contentsOf: [0x5C, 0x5C])
            case 0x0A: out.append(contentsOf: [0x5C, UInt8(ascii: "n")])
            case 0x0D: out.append(contentsOf: [0x5C, UInt8(ascii: "r")])
            case 0x09: out.append(contentsOf: [0x5C, UInt8(ascii: "t")])
            case 0..<0x20:
                out.append(contentsOf: Array("\\u00".utf8))
                out.append(hexDigit(byte >> 4))
                out.append(hexDigit(byte & 0xF))
            default: out.append(byte)
            }
        }
        out.append(UInt8(ascii: "\""))
    }

    @inline(__always)
    static func hexDigit(_ nibble: UInt8) -> UInt8 {
        nibble < 10 ? UInt8(ascii: "0") + nibble : UInt8(ascii: "a") + nibble - 10
    }

    /// A JSON string literal for `value`.
    public static func quoted(_ value: String) -> String {
        var out = ""
        appendString(value, to: &out)
        return out
    }
}

/// A JSON document held as bytes, read without building a tree.
public struct JSONScanner {
    public enum Failure: Error, Equatable, Sendable {
        case malformed(String)
    }

    /// Nesting deeper than this is refused: it bounds the recursion any input can cause.
    public static let maximumDepth = 64

    /// Whether `bytes` is exactly one JSON value (with optional surrounding whitespace).
    public static func isValidDocument(_ bytes: UnsafeRawBufferPointer) -> Bool {
        var scanner = Cursor(bytes)
        do {
            scanner.skipWhitespace()
            _ = try scanner.skipValue(depth: 0)
            scanner.skipWhitespace()
            return scanner.atEnd
        } catch {
            return false
        }
    }

    public static func isValidDocument(_ bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBytes { isValidDocument($0) }
    }

    /// `json` (valid JSON) without whitespace outside strings. Envelopes are one line on every transport
    /// (an SSE `data:` line, a JSON line from `stormctl subscribe`), and a JSON string cannot hold a raw
    /// line break, so compacting is all it takes to keep a pretty-printed payload on one line.
    public static func compacted(_ json: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(json.count)
        var inString = false
        var escaped = false
        for byte in json {
            if inString {
                out.append(byte)
                if escaped {
                    escaped = false
                } else if byte == UInt8(ascii: "\\") {
                    escaped = true
                } else if byte == UInt8(ascii: "\"") {
                    inString = false
                }
                continue
            }
            switch byte {
            case 0x20, 0x09, 0x0A, 0x0D: continue
            case UInt8(ascii: "\""): inString = true
            default: break
            }
            out.append(byte)
        }
        return out
    }

    /// The members of a top-level JSON object, each value as its raw bytes (later duplicates win).
    public static func objectMembers(_ bytes: [UInt8]) throws(Failure) -> [String: [UInt8]] {
        do {
            return try bytes.withUnsafeBytes { raw throws -> [String: [UInt8]] in
                var cursor = Cursor(raw)
                cursor.skipWhitespace()
                guard cursor.peek() == UInt8(ascii: "{") else {
                    throw Failure.malformed("expected a JSON object")
                }
                cursor.index += 1
                var members: [String: [UInt8]] = [:]
                cursor.skipWhitespace()
                if cursor.peek() == UInt8(ascii: "}") {
                    cursor.index += 1
                } else {
                    while true {
                        cursor.skipWhitespace()
                        let key = try cursor.readString()
                        cursor.skipWhitespace()
                        try cursor.expect(UInt8(ascii: ":"))
                        cursor.skipWhitespace()
                        let start = cursor.index
                        try cursor.skipValue(depth: 1)
                        members[key] = Array(raw[start..<cursor.index])
                        cursor.skipWhitespace()
                        if cursor.peek() == UInt8(ascii: ",") {
                            cursor.index += 1
                            continue
                        }
                        try cursor.expect(UInt8(ascii: "}"))
                        break
                    }
                }
                cursor.skipWhitespace()
                guard cursor.atEnd else { throw Failure.malformed("unexpected bytes after the JSON object") }
                return members
            }
        } catch let failure as Failure {
            throw failure
        } catch {
            throw .malformed("unreadable JSON")
        }
    }

    /// Decodes a raw JSON string value (quotes included) into a Swift string.
    public static func string(_ raw: [UInt8]) throws(Failure) -> String {
        do {
            return try raw.withUnsafeBytes { buffer throws -> String in
                var cursor = Cursor(buffer)
                let value = try cursor.readString()
                cursor.skipWhitespace()
                guard cursor.atEnd else { throw Failure.malformed("expected a single string") }
                return value
            }
        } catch let failure as Failure {
            throw failure
        } catch {
            throw .malformed("unreadable JSON")
        }
    }

    /// Decodes a raw JSON array of strings.
    public static func stringArray(_ raw: [UInt8]) throws(Failure) -> [String] {
        do {
            return try raw.withUnsafeBytes { buffer throws -> [String] in
                var cursor = Cursor(buffer)
                cursor.skipWhitespace()
                try cursor.expect(UInt8(ascii: "["))
                var out: [String] = []
                cursor.skipWhitespace()
                if cursor.peek() == UInt8(ascii: "]") {
                    cursor.index += 1
                    return out
                }
                while true {
                    cursor.skipWhitespace()
                    out.append(try cursor.readString())
                    cursor.skipWhitespace()
                    if cursor.peek() == UInt8(ascii: ",") {
                        cursor.index += 1
                        continue
                    }
                    try cursor.expect(UInt8(ascii: "]"))
                    return out
                }
            }
        } catch let failure as Failure {
            throw failure
        } catch {
            throw .malformed("unreadable JSON")
        }
    }

    /// Reads a raw JSON number as a `Double`, if it is one.
    public static func number(_ raw: [UInt8]) -> Double? {
        guard let text = String(validating: raw, as: UTF8.self), let first = raw.first,
            first == UInt8(ascii: "-") || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(first)
        else { return nil }
        return Double(text)
    }

    /// Reads a raw JSON number as a whole number from 0 to 2^53 (what a Double holds exactly), or nil:
    /// never a trapping conversion, whatever the input says (1e300, -1, 0.5).
    public static func wholeNumber(_ raw: [UInt8]) -> UInt64? {
        guard let value = number(raw) else { return nil }
        return UInt64(wholeNumber: value)
    }

    struct Cursor {
        let bytes: UnsafeRawBufferPointer
        var index = 0

        init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

        var atEnd: Bool { index >= bytes.count }

        @inline(__always)
        func peek() -> UInt8? { index < bytes.count ? bytes[index] : nil }

        mutating func skipWhitespace() {
            while index < bytes.count {
                switch bytes[index] {
                case 0x20, 0x09, 0x0A, 0x0D: index += 1
                default: return
                }
            }
        }

        mutating func expect(_ byte: UInt8) throws(Failure) {
            guard peek() == byte else {
                throw .malformed("expected '\(Character(UnicodeScalar(byte)))' at byte \(index)")
            }
            index += 1
        }

        mutating func expectLiteral(_ literal: StaticString) throws(Failure) {
            let count = literal.utf8CodeUnitCount
            guard index + count <= bytes.count else { throw .malformed("truncated literal at byte \(index)") }
            let start = literal.utf8Start
            for offset in 0..<count where bytes[index + offset] != start[offset] {
                throw .malformed("invalid literal at byte \(index)")
            }
            index += count
        }

        mutating func skipValue(depth: Int) throws(Failure) {
            guard depth < JSONScanner.maximumDepth else { throw .malformed("nesting deeper than \(JSONScanner.maximumDepth)") }
            guard let byte = peek() else { throw .malformed("unexpected end of input") }
            switch byte {
            case UInt8(ascii: "{"):
                index += 1
                skipWhitespace()
                if peek() == UInt8(ascii: "}") { index += 1; return }
                while true {
                    skipWhitespace()
                    try skipString()
                    skipWhitespace()
                    try expect(UInt8(ascii: ":"))
                    skipWhitespace()
                    try skipValue(depth: depth + 1)
                    skipWhitespace()
                    if peek() == UInt8(ascii: ",") { index += 1; continue }
                    try expect(UInt8(ascii: "}"))
                    return
                }
            case UInt8(ascii: "["):
                index += 1
                skipWhitespace()
                if peek() == UInt8(ascii: "]") { index += 1; return }
                while true {
                    skipWhitespace()
                    try skipValue(depth: depth + 1)
                    skipWhitespace()
                    if peek() == UInt8(ascii: ",") { index += 1; continue }
                    try expect(UInt8(ascii: "]"))
                    return
                }
            case UInt8(ascii: "\""):
                try skipString()
            case UInt8(ascii: "t"): try expectLiteral("true")
            case UInt8(ascii: "f"): try expectLiteral("false")
            case UInt8(ascii: "n"): try expectLiteral("null")
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
                try skipNumber()
            default:
                throw .malformed("unexpected byte at \(index)")
            }
        }

        mutating func skipNumber() throws(Failure) {
            if peek() == UInt8(ascii: "-") { index += 1 }
            guard let first = peek(), isDigit(first) else { throw .malformed("invalid number at byte \(index)") }
            if first == UInt8(ascii: "0") {
                index += 1
            } else {
                while let d = peek(), isDigit(d) { index += 1 }
            }
            if peek() == UInt8(ascii: ".") {
                index += 1
                guard let d = peek(), isDigit(d) else { throw .malformed("invalid fraction at byte \(index)") }
                while let d = peek(), isDigit(d) { index += 1 }
            }
            if let e = peek(), e == UInt8(ascii: "e") || e == UInt8(ascii: "E") {
                index += 1
                if let sign = peek(), sign == UInt8(ascii: "+") || sign == UInt8(ascii: "-") { index += 1 }
                guard let d = peek(), isDigit(d) else { throw .malformed("invalid exponent at byte \(index)") }
                while let d = peek(), isDigit(d) { index += 1 }
            }
        }

        @inline(__always)
        func isDigit(_ byte: UInt8) -> Bool { byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") }

        /// Skips a string literal, checking escapes, control bytes and UTF-8 well-formedness.
        mutating func skipString() throws(Failure) {
            try expect(UInt8(ascii: "\""))
            while index < bytes.count {
                let byte = bytes[index]
                switch byte {
                case UInt8(ascii: "\""):
                    index += 1
                    return
                case UInt8(ascii: "\\"):
                    index += 1
                    guard let escaped = peek() else { throw .malformed("unterminated escape") }
                    switch escaped {
                    case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"), UInt8(ascii: "b"),
                        UInt8(ascii: "f"), UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "t"):
                        index += 1
                    case UInt8(ascii: "u"):
                        index += 1
                        _ = try readHex4()
                    default:
                        throw .malformed("invalid escape at byte \(index)")
                    }
                case 0..<0x20:
                    throw .malformed("control byte in string at byte \(index)")
                case 0x20..<0x80:
                    index += 1
                default:
                    try skipUTF8Sequence()
                }
            }
            throw .malformed("unterminated string")
        }

        mutating func skipUTF8Sequence() throws(Failure) {
            let lead = bytes[index]
            let length: Int
            var minimum: UInt32
            var scalar: UInt32
            switch lead {
            case 0xC2...0xDF: length = 2; minimum = 0x80; scalar = UInt32(lead & 0x1F)
            case 0xE0...0xEF: length = 3; minimum = 0x800; scalar = UInt32(lead & 0x0F)
            case 0xF0...0xF4: length = 4; minimum = 0x10000; scalar = UInt32(lead & 0x07)
            default: throw .malformed("invalid UTF-8 at byte \(index)")
            }
            guard index + length <= bytes.count else { throw .malformed("truncated UTF-8 at byte \(index)") }
            for offset in 1..<length {
                let next = bytes[index + offset]
                guard next & 0xC0 == 0x80 else { throw .malformed("invalid UTF-8 at byte \(index)") }
                scalar = scalar << 6 | UInt32(next & 0x3F)
            }
            guard scalar >= minimum, scalar <= 0x10FFFF, !(0xD800...0xDFFF).contains(scalar) else {
                throw .malformed("invalid UTF-8 at byte \(index)")
            }
            minimum = 0
            index += length
        }

        mutating func readHex4() throws(Failure) -> UInt32 {
            guard index + 4 <= bytes.count else { throw .malformed("truncated \\u escape") }
            var value: UInt32 = 0
            for _ in 0..<4 {
                let byte = bytes[index]
                let digit: UInt32
                switch byte {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = UInt32(byte - UInt8(ascii: "0"))
                case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = UInt32(byte - UInt8(ascii: "a") + 10)
                case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = UInt32(byte - UInt8(ascii: "A") + 10)
                default: throw .malformed("invalid \\u escape at byte \(index)")
                }
                value = value << 4 | digit
                index += 1
            }
            return value
        }

        /// Reads and decodes a string literal.
        mutating func readString() throws(Failure) -> String {
            guard peek() == UInt8(ascii: "\"") else { throw .malformed("expected a string at byte \(index)") }
            let start = index
            try skipString()
            // Fast path: no escapes.
            let body = UnsafeRawBufferPointer(rebasing: bytes[(start + 1)..<(index - 1)])
            if !body.contains(UInt8(ascii: "\\")) {
                return String(decoding: body, as: UTF8.self)
            }
            var out = String.UnicodeScalarView()
            var inner = Cursor(body)
            while !inner.atEnd {
                let byte = inner.bytes[inner.index]
                if byte != UInt8(ascii: "\\") {
                    let scalarStart = inner.index
                    if byte < 0x80 { inner.index += 1 } else { try inner.skipUTF8Sequence() }
                    let piece = String(decoding: UnsafeRawBufferPointer(rebasing: inner.bytes[scalarStart..<inner.index]), as: UTF8.self)
                    out.append(contentsOf: piece.unicodeScalars)
                    continue
                }
                inner.index += 1
                guard let escaped = inner.peek() else { throw .malformed("unterminated escape") }
                inner.index += 1
                switch escaped {
                case UInt8(ascii: "\""): out.append("\"")
                case UInt8(ascii: "\\"): out.append("\\")
                case UInt8(ascii: "/"): out.append("/")
                case UInt8(ascii: "b"): out.append("\u{08}")
                case UInt8(ascii: "f"): out.append("\u{0C}")
                case UInt8(ascii: "n"): out.append("\n")
                case UInt8(ascii: "r"): out.append("\r")
                case UInt8(ascii: "t"): out.append("\t")
                default:
                    var code = try inner.readHex4()
                    if (0xD800...0xDBFF).contains(code) {
                        // A high surrogate must be followed by an escaped low surrogate.
                        guard inner.index + 6 <= inner.bytes.count, inner.bytes[inner.index] == UInt8(ascii: "\\"),
                            inner.bytes[inner.index + 1] == UInt8(ascii: "u")
                        else { throw .malformed("unpaired surrogate in string") }
                        inner.index += 2
                        let low = try inner.readHex4()
                        guard (0xDC00...0xDFFF).contains(low) else { throw .malformed("unpaired surrogate in string") }
                        code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                    }
                    guard let scalar = Unicode.Scalar(code) else { throw .malformed("invalid \\u escape in string") }
                    out.append(scalar)
                }
            }
            return String(out)
        }
    }
}

extension UInt64 {
    /// `value` as a whole number from 0 to 2^53, or nil when it is not one: the conversion for numbers
    /// that come from outside, where `UInt64(_:)` would trap on 1e300, -1 or NaN.
    public init?(wholeNumber value: Double) {
        guard value >= 0, value <= 9_007_199_254_740_992, value == value.rounded(.towardZero) else { return nil }
        self.init(value)
    }

    /// `value` rounded down and clamped into 0...2^53 (NaN is 0): for figures from outside where a
    /// wrong value must not stop the reader (timestamps of records another process wrote).
    public init(clamping value: Double) {
        guard value.isFinite else {
            self = value > 0 ? 9_007_199_254_740_992 : 0
            return
        }
        self.init(Swift.min(Swift.max(value, 0), 9_007_199_254_740_992).rounded(.down))
    }
}
