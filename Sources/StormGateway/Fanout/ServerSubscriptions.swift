import StormCore

/// Server-side subscriptions: the channels a WebSocket (or SSE) connection is subscribed to when it
/// opens, with no subscribe request: the token's `storm.channels`, plus what the connect hook answered
/// (`ConnectHookAnswer.channels`, docs/hooks.md).
///
/// A plain decision, no sockets: which names are subscribed, and which are refused with the error the
/// client is told (an error frame with `"id":null` each on a WebSocket). Every name is checked as a
/// subscribe request's would be: a valid, unreserved name, the token's grants and the channel rules,
/// and the per-connection limit.
package struct ServerSubscriptions: Equatable, Sendable {
    /// Most names a token's `storm.channels` may carry; the rest are ignored (bounded work per connect).
    package static let maximumClaimed = 1024

    package var allowed: [ChannelName] = []
    package var refused: [Refusal] = []

    package struct Refusal: Equatable, Sendable {
        package var name: String
        package var error: StormError
    }

    package var isEmpty: Bool { allowed.isEmpty && refused.isEmpty }

    /// `claimed` then `added` (the connect hook's), duplicates dropped, order kept; `authorize` throws the
    /// refusal of one channel; at most `limit` are subscribed.
    package static func plan(
        claimed: [String], added: [String] = [], limit: Int, authorize: (ChannelName) throws(StormError) -> Void
    ) -> ServerSubscriptions {
        var plan = ServerSubscriptions()
        var seen: Set<String> = []
        for name in (claimed + added).prefix(maximumClaimed * 2) where seen.insert(name).inserted {
            do throws(StormError) {
                let channel = try ChannelName(validating: name)
                try authorize(channel)
                guard plan.allowed.count < limit else {
                    throw StormError(
                        .tooManyChannels,
                        "server-side subscription to '\(channel.rawValue)' refused: a connection may hold at most \(limit) channels (--max-channels-per-connection)")
                }
                plan.allowed.append(channel)
            } catch {
                plan.refused.append(Refusal(name: name, error: error))
            }
        }
        return plan
    }
}
