/// `stormctl publish --batch` over the gateway's batch endpoint (`POST /api/v1/publish/batch`, NDJSON):
/// each line of the file as the endpoint takes it, and the requests the lines are cut into.
public enum BatchRequest {
    /// Most lines, and bytes, one request carries (the gateway's bounds: 1,000 lines, 4 MiB).
    public static let maximumLines = 1000
    public static let maximumBytes = 4 << 20

    /// The line as the endpoint takes it: `{"channel":…,"data":…}` with the channel filled in from
    /// `defaultChannel` when the line names none, plus its `encoding` and `idempotency_key` if given.
    /// nil for a blank line; throws what is wrong with a line that cannot be sent.
    public static func wireLine(_ line: [UInt8], defaultChannel: String?) throws(StormError) -> [UInt8]? {
        guard let item = try BatchLine.parse(line, defaultChannel: defaultChannel) else { return nil }
        _ = try ChannelName(validating: item.channel)
        let members: [String: [UInt8]]
        do {
            members = try JSONScanner.objectMembers(JSONScanner.compacted(line))
        } catch {
            throw StormError(.badRequest, "not a JSON object")
        }
        var out = Array("{\"channel\":".utf8)
        JSONWriter.appendString(utf8: item.channel.utf8, to: &out)
        out += Array(",\"data\":".utf8)
        out += members["data"] ?? Array("null".utf8)
        for key in ["encoding", "idempotency_key"] {
            guard let value = members[key] else { continue }
            out += Array(",\"\(key)\":".utf8)
            out += value
        }
        out.append(UInt8(ascii: "}"))
        return out
    }
}
