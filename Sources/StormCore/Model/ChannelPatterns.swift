

/// A comma list of channel patterns (`*`, `chat.*`, `news.eu`), as `--presence-channels` takes it.
public struct ChannelPatterns: Sendable, Equatable, CustomStringConvertible {
    private(set) var matchesAll = false
    private(set) var exact: Set<String> = []
    /// Prefixes with their trailing dot (`chat.`).
    private(set) var prefixes: [String] = []

    public init() {}

    public init(parsing text: String, origin: String) throws(StormError) {
        for raw in text.split(separator: ",") {
            let pattern = raw.trimmingSpaces()
            if pattern.isEmpty { continue }
            if pattern == "*" {
                matchesAll = true
                continue
            }
            let name = pattern.hasSuffix(".*") ? String(pattern.dropLast(2)) : pattern
            do {
                _ = try ChannelName(validating: name)
            } catch {
                throw StormError(.configuration, "\(origin): '\(pattern)' is not a channel pattern (use *, a channel name, or a prefix like chat.*): \(error.message)")
            }
            if pattern.hasSuffix(".*") { prefixes.append(name + ".") } else { exact.insert(name) }
        }
    }

    public var isEmpty: Bool { !matchesAll && exact.isEmpty && prefixes.isEmpty }

    public func matches(_ channel: ChannelName) -> Bool {
        if matchesAll { return true }
        if exact.contains(channel.rawValue) { return true }
        for prefix in prefixes where channel.rawValue.hasPrefix(prefix) { return true }
        return false
    }

    public var description: String {
        ((matchesAll ? ["*"] : []) + exact.sorted() + prefixes.map { $0 + "*" }).joined(separator: ",")
    }
}

extension Substring {
    public func trimmingSpaces() -> String {
        String(drop(while: { $0 == " " || $0 == "\t" }).reversed().drop(while: { $0 == " " || $0 == "\t" }).reversed())
    }
}
