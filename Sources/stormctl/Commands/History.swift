import ArgumentParser
import StormCore

extension Stormctl {
    /// `stormctl history CHANNEL [--since N] [--limit N]`: stored messages of a channel.
    struct History: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show a channel's stored messages (GET /api/v1/channels/CHANNEL/history).",
            discussion: """
                Prints the channel's messages after offset --since (0: from the oldest kept), oldest first, one \
                envelope per line with its offset. Messages are kept by JetStream (with --nats) or in the \
                gateway's in-memory window (zero-config). --json prints the server's answer as is.

                Examples:
                  stormctl history chat.lobby
                  stormctl history chat.lobby --since 1200 --limit 50
                  stormctl history chat.lobby --json | jq '.messages[].data'

                \(ExitStatus.helpText)
                """
        )

        @OptionGroup var global: GlobalOptions

        @Argument(help: "Channel, e.g. chat.lobby.")
        var channel: String

        @Option(name: .long, help: "Only messages after this offset (default 0).")
        var since: UInt64 = 0

        @Option(name: .long, help: "At most this many messages, 1 to 1000 (default 100).")
        var limit: Int = 100

        func validate() throws {
            guard (1...1000).contains(limit) else { throw ValidationError("--limit must be from 1 to 1000") }
        }

        func run() async throws {
            try await reportingFailures {
                let channelName = try ChannelName(validating: channel)
                let client = StormHTTPClient(endpoint: try global.endpoint())
                let response = try await client.request(
                    path: "/api/v1/channels/\(channelName.rawValue)/history",
                    query: [("since", String(since)), ("limit", String(limit))])
                await client.close()
                if global.json {
                    StandardOutput.write(response.body.last == 0x0A ? response.body : response.body + [0x0A])
                    return
                }
                let members = try JSONScanner.objectMembers(response.body)
                for message in Self.elements(of: members["messages"] ?? []) {
                    StandardOutput.write(message + [0x0A])
                }
            }
        }

        /// The raw elements of a JSON array of objects (the envelopes), without re-encoding them.
        static func elements(of array: [UInt8]) -> [[UInt8]] {
            var out: [[UInt8]] = []
            var depth = 0
            var start = 0
            var inString = false
            var escaped = false
            for (index, byte) in array.enumerated() {
                if inString {
                    if escaped { escaped = false } else if byte == UInt8(ascii: "\\") { escaped = true } else if byte == UInt8(ascii: "\"") { inString = false }
                    continue
                }
                switch byte {
                case UInt8(ascii: "\""): inString = true
                case UInt8(ascii: "{"):
                    if depth == 1 { start = index }
                    depth += 1
                case UInt8(ascii: "["): depth += 1
                case UInt8(ascii: "}"):
                    depth -= 1
                    if depth == 1 { out.append(Array(array[start...index])) }
                case UInt8(ascii: "]"): depth -= 1
                default: break
                }
            }
            return out
        }
    }
}
