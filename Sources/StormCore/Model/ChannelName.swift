/// A validated channel name.
///
/// Channels map one to one onto NATS subjects, so a name that slipped a wildcard (`*`, `>`), a space
/// or an empty token through would subscribe to, or publish on, subjects the caller never named. Every
/// entry point (HTTP, SSE, WebSocket, CLI) builds a `ChannelName` first and handles the error.
///
/// Names that start with `_` are reserved and never valid: STORM's own traffic (the control plane) must
/// not be nameable by a client on any path, so the rule sits here, where every path passes, rather than
/// in each route's permission check.
public struct ChannelName: Hashable, Sendable, CustomStringConvertible, Comparable {
    /// Longest accepted name, in bytes.
    public static let maximumLength = 255

    public let rawValue: String

    public init(validating raw: String) throws(StormError) {
        let bytes = Array(raw.utf8)
        guard !bytes.isEmpty else {
            throw StormError(.invalidChannel, "channel name is empty")
        }
        guard bytes.count <= Self.maximumLength else {
            throw StormError(.invalidChannel, "channel '\(raw.prefix(40))…' is \(bytes.count) bytes long; the limit is \(Self.maximumLength)")
        }
        guard bytes[0] != UInt8(ascii: "_") else {
            throw StormError(.invalidChannel, "channel '\(Self.printable(raw))' is reserved: names that start with '_' belong to STORM itself, whatever a token allows")
        }
        var previousWasDot = true  // a leading dot is an empty token
        for byte in bytes {
            if byte == UInt8(ascii: ".") {
                if previousWasDot {
                    throw StormError(.invalidChannel, "channel '\(Self.printable(raw))' is invalid: empty token between dots")
                }
                previousWasDot = true
                continue
            }
            guard Self.isAllowed(byte) else {
                throw StormError(.invalidChannel, "channel '\(Self.printable(raw))' is invalid: character '\(Self.printable(byte))' is not allowed (use A-Z a-z 0-9 _ - : @ = and dots)")
            }
            previousWasDot = false
        }
        if previousWasDot {
            throw StormError(.invalidChannel, "channel '\(Self.printable(raw))' is invalid: it ends with a dot")
        }
        self.rawValue = raw
    }

    public var description: String { rawValue }

    public static func < (lhs: ChannelName, rhs: ChannelName) -> Bool { lhs.rawValue < rhs.rawValue }

    /// Whether `byte` may appear in a channel token (dots separate tokens).
    @inline(__always)
    public static func isAllowedCharacter(_ byte: UInt8) -> Bool { isAllowed(byte) }

    @inline(__always)
    static func isAllowed(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"):
            return true
        case UInt8(ascii: "_"), UInt8(ascii: "-"), UInt8(ascii: ":"), UInt8(ascii: "@"), UInt8(ascii: "="):
            return true
        default:
            return false
        }
    }

    /// Echoes user input into an error message without letting control bytes through.
    private static func printable(_ raw: String) -> String {
        var out = ""
        for scalar in raw.unicodeScalars.prefix(64) {
            out.unicodeScalars.append(scalar.value < 0x20 || scalar.value == 0x7F ? "?" : scalar)
        }
        return out
    }

    private static func printable(_ byte: UInt8) -> String {
        if (0x21...0x7E).contains(byte) { return String(UnicodeScalar(byte)) }
        return "\\x" + (byte < 16 ? "0" : "") + String(byte, radix: 16)
    }
}
