import NIOCore
import NIOHTTP1
import StormCore

/// `GET /api/v1/channels?pattern=P`: the channels this gateway has local subscribers for, with their
/// local subscriber counts, sorted by name (Centrifugo's `channels` API, per gateway).
///
/// `pattern` takes what `--presence-channels` takes (`*`, `chat.*`, `news.eu`, a comma list); default
/// every channel. The answer is `{"gateway":"ID","channels":[{"channel":"chat.a","subscribers":3,"messages":120}…]}`:
/// `messages` counts what the broker delivered for the channel since this gateway subscribed to it (it
/// restarts at 0 when the last subscriber leaves); stormtop's connections view turns it into rates.
/// `stormctl channels` asks every gateway of the cluster and sums.
package enum ChannelsRoutes {
    package static func handles(_ path: String) -> Bool { path == "/api/v1/channels" }

    package static func route(method: HTTPMethod, target: RequestTarget, gateway: GatewayContext) throws(StormError) -> ByteBuffer {
        guard method == .GET || method == .HEAD else {
            throw StormError(.methodNotAllowed, "\(method) is not allowed on \(target.path)")
        }
        let text = target.values(of: "pattern").first.flatMap { $0.isEmpty ? nil : $0 } ?? "*"
        let patterns: ChannelPatterns
        do {
            patterns = try ChannelPatterns(parsing: text, origin: "pattern")
        } catch {
            // The parser speaks of configuration; here it is a bad query parameter (400).
            throw StormError(.badRequest, error.message)
        }
        if patterns.isEmpty { throw StormError(.badRequest, "pattern '\(text.prefix(64))' names no channel") }
        let counts = gateway.router.subscriberCounts()
            .filter { patterns.matches($0.channel) }
            .sorted { $0.channel.rawValue < $1.channel.rawValue }
        var body = "{\"gateway\":\(JSONWriter.quoted(gateway.presence.gatewayID)),\"channels\":["
        for (index, item) in counts.enumerated() {
            if index > 0 { body += "," }
            body += "{\"channel\":\(JSONWriter.quoted(item.channel.rawValue)),\"subscribers\":\(item.subscribers),\"messages\":\(item.messages)}"
        }
        return ByteBuffer(string: body + "]}\n")
    }
}
