/// One line of `stormctl publish --batch` (NDJSON): `{"channel":"c","data":…}`, channel optional.
public struct BatchLine: Sendable, Equatable {
    public var channel: String
    /// The payload bytes to POST: JSON stays JSON; a JSON string is sent as its text.
    public var payload: [UInt8]

    public init(channel: String, payload: [UInt8]) {
        self.channel = channel
        self.payload = payload
    }

    /// Parses one line; blank lines are nil. `defaultChannel` is used when the line names none.
    public static func parse(_ line: [UInt8], defaultChannel: String?) throws(StormError) -> BatchLine? {
        let trimmed = JSONScanner.compacted(line)
        guard !trimmed.isEmpty else { return nil }
        let fields: [String: [UInt8]]
        do {
            fields = try JSONScanner.objectMembers(trimmed)
        } catch {
            throw StormError(.badRequest, "not a JSON object")
        }
        var channel = defaultChannel
        if let raw = fields["channel"] {
            guard let name = try? JSONScanner.string(raw) else { throw StormError(.badRequest, "\"channel\" must be a string") }
            channel = name
        }
        guard let channel else { throw StormError(.badRequest, "no \"channel\" in the line and no CHANNEL argument") }
        guard let data = fields["data"] else { throw StormError(.badRequest, "no \"data\" in the line") }
        if data.first == UInt8(ascii: "\""), let text = try? JSONScanner.string(data) {
            return BatchLine(channel: channel, payload: Array(text.utf8))
        }
        return BatchLine(channel: channel, payload: data)
    }
}
