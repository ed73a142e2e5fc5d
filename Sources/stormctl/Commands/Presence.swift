import ArgumentParser
import Foundation
import StormCore

extension Stormctl {
    /// `stormctl presence CHANNEL [--stats]`: who is subscribed to a channel, across the cluster.
    struct Presence: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show who is subscribed to a channel (GET /api/v1/channels/CHANNEL/presence).",
            discussion: """
                Lists every connection subscribed to CHANNEL on every gateway that shares the presence \
                store (Redis), with its user, gateway and connection age. The channel must have presence \
                enabled on the gateway (stormd --presence-channels). --stats prints only the counts.

                Examples:
                  stormctl presence chat.lobby
                  stormctl presence chat.lobby --stats
                  stormctl presence chat.lobby --json | jq '.clients[].user'

                \(ExitStatus.helpText)
                """
        )

        @OptionGroup var global: GlobalOptions

        @Argument(help: "Channel, e.g. chat.lobby.")
        var channel: String

        @Flag(name: .long, help: "Print the number of clients and unique users only.")
        var stats = false

        func run() async throws {
            try await reportingFailures {
                let channelName = try ChannelName(validating: channel)
                let client = StormHTTPClient(endpoint: try global.endpoint())
                defer { Task { await client.close() } }
                let path = "/api/v1/channels/\(channelName.rawValue)/\(stats ? "presence-stats" : "presence")"
                let body = try await PresenceAPI.get(client, path: path)
                if global.json {
                    StandardOutput.write(body.last == 0x0A ? body : body + [0x0A])
                    return
                }
                let members = try PresenceAPI.object(body)
                if stats {
                    let clients = members["clients"].flatMap(JSONScanner.wholeNumber).map { Int($0) } ?? 0
                    let users = members["users"].flatMap(JSONScanner.wholeNumber).map { Int($0) } ?? 0
                    StandardOutput.write("\(channelName): \(clients) client\(clients == 1 ? "" : "s"), \(users) user\(users == 1 ? "" : "s")\n")
                    return
                }
                let entries = try PresenceAPI.array(members["clients"])
                var table = ColumnTable(headers: ["CLIENT", "USER", "GATEWAY", "CONNECTED", "INFO"])
                let now = Date().timeIntervalSince1970 * 1000
                var users: Set<String> = []
                for entry in entries {
                    let fields = (try? JSONScanner.objectMembers(entry)) ?? [:]
                    let user = fields["user"].flatMap { try? JSONScanner.string($0) } ?? ""
                    users.insert(user)
                    let since = fields["since"].flatMap(JSONScanner.number) ?? now
                    let info = fields["info"].map { String(decoding: $0, as: UTF8.self) } ?? ""
                    table.add([
                        fields["client"].flatMap { try? JSONScanner.string($0) } ?? "?", user,
                        fields["gateway"].flatMap { try? JSONScanner.string($0) } ?? "?",
                        Age.format(milliseconds: now - since) + " ago", info,
                    ])
                }
                StandardOutput.write(table.render())
                StandardOutput.write("\(entries.count) client\(entries.count == 1 ? "" : "s"), \(users.count) user\(users.count == 1 ? "" : "s")\n")
            }
        }
    }
}

/// Shared by `presence` and `gateways`: the request, and reading the answer.
enum PresenceAPI {
    /// GETs `path`; a `presence_unavailable` answer (Redis down) exits 75 like other temporary failures.
    static func get(_ client: StormHTTPClient, path: String) async throws(StormError) -> [UInt8] {
        do {
            return try await client.request(path: path).body
        } catch where error.code.rawValue == "presence_unavailable" {
            throw StormError(.brokerUnavailable, error.message)
        }
    }

    static func object(_ body: [UInt8]) throws(StormError) -> [String: [UInt8]] {
        do {
            return try JSONScanner.objectMembers(body)
        } catch {
            throw StormError(.protocolViolation, "the server's answer is not a JSON object: \(error)")
        }
    }

    /// The elements of a JSON array member, each as its raw bytes.
    static func array(_ raw: [UInt8]?) throws(StormError) -> [[UInt8]] {
        guard let raw else { return [] }
        guard let elements = splitArray(raw) else {
            throw StormError(.protocolViolation, "the server's answer holds a malformed array")
        }
        return elements
    }

    /// Splits a JSON array into its elements' bytes at top-level commas (strings and nesting respected);
    /// nil when `raw` is not an array.
    static func splitArray(_ raw: [UInt8]) -> [[UInt8]]? {
        var start = 0
        var end = raw.count
        while start < end, raw[start] == 0x20 || raw[start] == 0x0A || raw[start] == 0x0D || raw[start] == 0x09 { start += 1 }
        while end > start, raw[end - 1] == 0x20 || raw[end - 1] == 0x0A || raw[end - 1] == 0x0D || raw[end - 1] == 0x09 { end -= 1 }
        guard end - start >= 2, raw[start] == UInt8(ascii: "["), raw[end - 1] == UInt8(ascii: "]") else { return nil }
        var elements: [[UInt8]] = []
        var depth = 0
        var inString = false
        var escaped = false
        var elementStart = start + 1
        for index in (start + 1)..<(end - 1) {
            let byte = raw[index]
            if inString {
                if escaped { escaped = false } else if byte == UInt8(ascii: "\\") { escaped = true } else if byte == UInt8(ascii: "\"") { inString = false }
                continue
            }
            switch byte {
            case UInt8(ascii: "\""): inString = true
            case UInt8(ascii: "{"), UInt8(ascii: "["): depth += 1
            case UInt8(ascii: "}"), UInt8(ascii: "]"): depth -= 1
            case UInt8(ascii: ",") where depth == 0:
                elements.append(Array(raw[elementStart..<index]))
                elementStart = index + 1
            default: break
            }
        }
        let last = Array(raw[elementStart..<(end - 1)])
        if last.contains(where: { $0 != 0x20 && $0 != 0x0A && $0 != 0x0D && $0 != 0x09 }) { elements.append(last) }
        return elements
    }
}

/// Ages as people read them: `42 s`, `5 min`, `3 h`, `2 d`.
enum Age {
    static func format(milliseconds: Double) -> String {
        let seconds = max(0, Int(milliseconds / 1000))
        if seconds < 120 { return "\(seconds) s" }
        if seconds < 7200 { return "\(seconds / 60) min" }
        if seconds < 172_800 { return "\(seconds / 3600) h" }
        return "\(seconds / 86_400) d"
    }
}

/// A table with a header row and left-aligned columns.
struct ColumnTable {
    private let headers: [String]
    private var rows: [[String]] = []

    init(headers: [String]) { self.headers = headers }

    mutating func add(_ row: [String]) { rows.append(row) }

    func render() -> String {
        var widths = headers.map(\.count)
        for row in rows {
            for (index, cell) in row.enumerated() where index < widths.count { widths[index] = max(widths[index], cell.count) }
        }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { index, cell in
                index == cells.count - 1 ? cell : cell + String(repeating: " ", count: widths[index] - cell.count + 2)
            }.joined() + "\n"
        }
        return line(headers) + rows.map(line).joined()
    }
}
