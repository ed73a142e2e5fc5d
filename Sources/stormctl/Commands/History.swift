import ArgumentParser
import Foundation
import StormCore

extension Stormctl {
    /// `stormctl history CHANNEL [--since N] [--limit N]`: stored messages of a channel.
    struct History: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show a channel's stored messages (GET /api/v1/channels/CHANNEL/history).",
            discussion: """
                Prints the channel's messages after offset --since (0: from the oldest kept), oldest first, one envelope per line with its offset. Messages are kept by JetStream (with --nats) or in the gateway's in-memory window (zero-config). --json prints the server's answer as is.

                --since also takes a time, RFC 3339 (2026-12-04T01:00:00Z) or relative to now (-30s, -10m, -2h, -1d): history is paged by offset, so stormctl reads pages from the oldest kept message and starts at the first message whose ts is at or after the time (at most \(HistoryPager.maximumPages) pages of 1000).

                Examples:
                  stormctl history chat.lobby
                  stormctl history chat.lobby --since 1200 --limit 50
                  stormctl history chat.lobby --since -10m
                  stormctl history chat.lobby --json | jq '.messages[].data'

                \(ExitStatus.helpText)
                """
        )

        @OptionGroup var global: GlobalOptions

        @Argument(help: "Channel, e.g. chat.lobby.")
        var channel: String

        @Option(name: .long, parsing: .unconditional, help: "Only messages after this offset, or at or after this time: RFC 3339 or relative (-10m, -2h) (default 0).")
        var since: String = "0"

        @Option(name: .long, help: "At most this many messages, 1 to 1000 (default 100).")
        var limit: Int = 100

        func validate() throws {
            guard (1...1000).contains(limit) else { throw ValidationError("--limit must be from 1 to 1000") }
        }

        func run() async throws {
            try await reportingFailures {
                let channelName = try ChannelName(validating: channel)
                let client = StormHTTPClient(endpoint: try global.endpoint())
                defer { Task { await client.close() } }
                let pager = HistoryPager(client: client, channel: channelName)
                let offset: UInt64
                switch try HistoryPosition(parsing: since, now: Date().timeIntervalSince1970 * 1000) {
                case .offset(let value): offset = value
                case .time(let milliseconds):
                    guard let found = try await pager.offset(before: milliseconds) else {
                        // Nothing stored at or after the time.
                        if global.json { StandardOutput.write("{\"channel\":\(JSONWriter.quoted(channelName.rawValue)),\"messages\":[]}\n") }
                        return
                    }
                    offset = found
                }
                let response = try await client.request(
                    path: pager.path, query: [("since", String(offset)), ("limit", String(limit))])
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

/// Reads a channel's history page by page (1000 messages a page), for times and `subscribe --last`.
struct HistoryPager {
    static let maximumPages = 100
    static let pageSize = 1000
    let client: StormHTTPClient
    let channel: ChannelName

    var path: String { "/api/v1/channels/\(channel.rawValue)/history" }

    struct Page {
        var epoch: String?
        var latest: UInt64
        var envelopes: [[UInt8]]
    }

    /// One page after `since`; nil when the channel has no stored message (404).
    func page(after since: UInt64, limit: Int = pageSize) async throws(StormError) -> Page? {
        let body: [UInt8]
        do {
            body = try await client.request(path: path, query: [("since", String(since)), ("limit", String(limit))]).body
        } catch where error.code == .notFound {
            return nil
        }
        let members = try PresenceAPI.object(body)
        return Page(
            epoch: members["epoch"].flatMap { try? JSONScanner.string($0) },
            latest: members["latest"].flatMap(JSONScanner.wholeNumber) ?? 0,
            envelopes: Stormctl.History.elements(of: members["messages"] ?? []))
    }

    static func offset(of envelope: [UInt8]) -> UInt64? {
        (try? JSONScanner.objectMembers(envelope))?["offset"].flatMap(JSONScanner.wholeNumber)
    }

    /// The offset after which messages are at or after `milliseconds`; nil when none is (or no history).
    func offset(before milliseconds: Double) async throws(StormError) -> UInt64? {
        var seek = TimeSeek(milliseconds: milliseconds)
        var since: UInt64 = 0
        for _ in 0..<Self.maximumPages {
            guard let page = try await page(after: since) else { return nil }
            if seek.scan(page.envelopes) { return seek.position }
            if page.envelopes.isEmpty || seek.lastOffset >= page.latest { return nil }
            since = seek.lastOffset
        }
        throw StormError(.badRequest, "no message at or after that time in the first \(Self.maximumPages * Self.pageSize) stored messages: use an offset")
    }

    /// The `since` offset whose following messages are the `count` newest, and the epoch; nil without
    /// history. Offsets are one sequence for all channels, so it looks back from the newest offset in
    /// widening windows until the window holds `count` messages (or reaches the oldest).
    func position(beforeNewest count: Int) async throws(StormError) -> (offset: UInt64, epoch: String?)? {
        guard let first = try await page(after: 0, limit: 1) else { return nil }
        let latest = first.latest
        var window = UInt64(max(count, 1))
        for _ in 0..<Self.maximumPages {
            let start = latest > window ? latest - window : 0
            var offsets: [UInt64] = []
            var since = start
            var epoch = first.epoch
            for _ in 0..<Self.maximumPages {
                guard let page = try await page(after: since) else { return nil }
                epoch = page.epoch ?? epoch
                let seen = page.envelopes.compactMap(Self.offset(of:))
                offsets.append(contentsOf: seen)
                if offsets.count > count { offsets.removeFirst(offsets.count - count) }
                guard let last = seen.last, last < page.latest, seen.count == Self.pageSize else { break }
                since = last
            }
            if offsets.count >= count || start == 0 {
                guard let oldest = offsets.first else { return (latest, epoch) }
                return (oldest == 0 ? 0 : oldest - 1, epoch)
            }
            window = window.multipliedReportingOverflow(by: 4).overflow ? latest : window * 4
        }
        return (0, first.epoch)
    }
}
