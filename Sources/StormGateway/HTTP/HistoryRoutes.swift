import NIOCore
import NIOHTTP1
import StormBroker
import StormCore

/// `GET /api/v1/channels/{channel}/history?since=OFFSET&limit=N`: a channel's stored messages after an
/// offset, oldest first (docs/protocol.md, "History").
///
/// Recent history comes from the broker (JetStream, or the in-memory window); what the broker no longer
/// keeps (an offset older than its retention) comes from PostgreSQL when `--postgres` is set, both read
/// and stitched by `HistoryReader`, the reader recovery uses too. Work is
/// bounded: at most `maximumLimit` messages per request; an offset above the newest one is refused rather
/// than waited for.
package enum HistoryRoutes {
    package static let defaultLimit = 100
    package static let maximumLimit = 1000

    package static func handles(_ path: String) -> Bool {
        path.hasPrefix("/api/v1/channels/") && path.hasSuffix("/history")
    }

    package static func route(method: HTTPMethod, target: RequestTarget, gateway: GatewayContext, eventLoop: any EventLoop) -> EventLoopFuture<ByteBuffer> {
        guard method == .GET || method == .HEAD else {
            return eventLoop.makeFailedFuture(StormError(.methodNotAllowed, "\(method) is not allowed on \(target.path)"))
        }
        let request: (ChannelName, UInt64, Int)
        do {
            request = try parse(target)
        } catch {
            return eventLoop.makeFailedFuture(error)
        }
        let (channel, since, limit) = request
        let reader = gateway.historyReader
        let ticket = reader.makeTicket()
        let promise = eventLoop.makePromise(of: ByteBuffer.self)
        Task {
            do {
                // The one reader recovery uses: a deadline, a place in its bounded line, the broker first
                // and PostgreSQL for what the stream no longer keeps.
                let history = try await reader.read(channel, after: since, limit: limit, ticket: ticket)
                guard since <= history.brokerLatestOffset else {
                    throw StormError(.badRequest, "offset \(since) is in the future: the newest offset is \(history.brokerLatestOffset)")
                }
                guard history.latestOffset != nil else {
                    throw StormError(.notFound, "channel '\(channel)' has no stored messages")
                }
                promise.succeed(render(history, channel: channel, since: since))
            } catch {
                promise.fail(error)
            }
        }
        return promise.futureResult
    }

    package static func parse(_ target: RequestTarget) throws(StormError) -> (ChannelName, UInt64, Int) {
        let middle = target.path.dropFirst("/api/v1/channels/".count).dropLast("/history".count)
        let channel = try ChannelName(validating: RequestTarget.percentDecode(middle))
        var since: UInt64 = 0
        if let text = target.values(of: "since").first {
            guard let value = UInt64(text) else {
                throw StormError(.badRequest, "since must be an offset: a whole number of 0 or more, not '\(text.prefix(32))'")
            }
            since = value
        }
        var limit = defaultLimit
        if let text = target.values(of: "limit").first {
            guard let value = Int(text), (1...maximumLimit).contains(value) else {
                throw StormError(.badRequest, "limit must be a whole number from 1 to \(maximumLimit), not '\(text.prefix(32))'")
            }
            limit = value
        }
        return (channel, since, limit)
    }

    /// `{"channel":…,"epoch":…,"latest":N,"messages":[envelope,…]}`, each envelope with its offset.
    package static func render(_ history: ChannelHistory, channel: ChannelName, since: UInt64) -> ByteBuffer {
        let allocator = ByteBufferAllocator()
        var body = ByteBuffer(string: "{\"channel\":\(JSONWriter.quoted(channel.rawValue)),\"epoch\":\(JSONWriter.quoted(history.epoch))")
        body.writeString(",\"latest\":\(history.latestOffset ?? 0),\"complete\":\(since >= history.lostUpTo),\"messages\":[")
        for (index, message) in history.messages.enumerated() {
            if index > 0 { body.writeString(",") }
            var framed = EnvelopeLayout.withOffset(message.envelope, offset: message.offset, allocator: allocator)
            body.writeBuffer(&framed)
        }
        body.writeString("]}\n")
        return body
    }
}
