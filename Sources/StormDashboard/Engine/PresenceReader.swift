import Dispatch
import StormCore
import Synchronization

/// A gateway found in the registry in Redis (`P:gateway:<id>`, see docs/protocol.md, "Data model in Redis").
package struct DiscoveredGateway: Sendable, Equatable, Codable {
    package var id: String
    package var metricsURL: String
    package var version: String
    /// `ok`, or `degraded` when the gateway could not write to Redis at its last heartbeat.
    package var presence: String

    /// Reads a registry record; nil for anything stormd did not write or without a usable URL.
    ///
    /// The record is parsed here rather than shared with stormd's `GatewayRecord`: stormtop needs three of
    /// its fields and must keep working when a newer stormd adds some.
    package init?(json bytes: [UInt8]) {
        guard let members = try? JSONScanner.objectMembers(bytes),
            let id = members["id"].flatMap({ try? JSONScanner.string($0) }), !id.isEmpty
        else { return nil }
        let metrics = members["metrics"].flatMap { try? JSONScanner.string($0) } ?? ""
        let http = members["http"].flatMap { try? JSONScanner.string($0) } ?? ""
        guard !metrics.isEmpty || !http.isEmpty else { return nil }
        self.id = id
        self.metricsURL = metrics.isEmpty ? http + "/metrics" : metrics
        self.version = members["version"].flatMap { try? JSONScanner.string($0) } ?? ""
        self.presence = members["presence"].flatMap { try? JSONScanner.string($0) } ?? "ok"
    }

    package init(id: String, metricsURL: String, version: String = "", presence: String = "ok") {
        self.id = id
        self.metricsURL = metricsURL
        self.version = version
        self.presence = presence
    }
}

/// One row of the busiest-channels view: who is subscribed to a channel, across the cluster.
package struct ChannelFigures: Sendable, Equatable, Codable {
    package var channel: String
    /// Subscribed connections held by live gateways.
    package var clients: Int
    /// Distinct users among them; nil when the channel was too big to read its entries this poll
    /// (`clients` is then the hash length, which may still count a crashed gateway's entries).
    package var users: Int?
    /// Distinct live gateways holding those connections.
    package var gateways: Int?
}

/// What stormtop last read from Redis.
package struct PresenceSnapshot: Sendable {
    package enum State: Sendable, Equatable {
        case waiting
        case up
        case down(String)
    }

    package var endpoint: String
    package var state: State = .waiting
    /// Live gateways of the registry, in start order as the index keeps them.
    package var gateways: [DiscoveredGateway] = []
    /// Channels with presence, busiest first.
    package var channels: [ChannelFigures] = []
    /// The key scan stopped at its budget: the channel list is incomplete.
    package var truncated = false
    /// How long the last read took, in seconds.
    package var readSeconds: Double?

    package init(endpoint: String, state: State = .waiting, gateways: [DiscoveredGateway] = [], channels: [ChannelFigures] = [], readSeconds: Double? = nil) {
        self.endpoint = endpoint
        self.state = state
        self.gateways = gateways
        self.channels = channels
        self.readSeconds = readSeconds
    }
}

/// The key layout stormd writes, as docs/protocol.md ("Data model in Redis") describes it, and the
/// decoding of the replies: pure functions, unit-tested with recorded replies.
package enum PresenceKeys {
    package static func gatewayIndex(_ prefix: String) -> String { "\(prefix):gateways" }
    package static func gateway(_ prefix: String, _ id: String) -> String { "\(prefix):gateway:\(id)" }
    package static func presencePrefix(_ prefix: String) -> String { "\(prefix):presence:" }

    /// The SCAN pattern of every presence hash; glob characters in the prefix are escaped so that a
    /// prefix like `a*` does not match another cluster's keys.
    package static func presencePattern(_ prefix: String) -> String {
        var escaped = ""
        for character in presencePrefix(prefix) {
            if "*?[]\\".contains(character) { escaped.append("\\") }
            escaped.append(character)
        }
        return escaped + "*"
    }

    /// The live gateways from `ZRANGE P:gateways 0 -1` and the `MGET` of their records: an id whose
    /// record expired (its gateway stopped heartbeating) is left out.
    package static func gateways(ids: [String], records: RedisReply) -> [DiscoveredGateway] {
        let values = records.array ?? []
        var found: [DiscoveredGateway] = []
        for (id, value) in zip(ids, values) {
            guard let bytes = value.bytes, let record = DiscoveredGateway(json: bytes), record.id == id else { continue }
            found.append(record)
        }
        return found
    }

    /// Decodes one `SCAN` reply: the next cursor and the keys.
    package static func scanPage(_ reply: RedisReply) -> (cursor: String, keys: [String])? {
        guard let parts = reply.array, parts.count == 2, let cursor = parts[0].text, let keys = parts[1].array else { return nil }
        return (cursor, keys.compactMap(\.text))
    }

    /// Per-channel figures from the presence hashes: `lengths` are the `HLEN` replies of `keys`, `values`
    /// the `HVALS` replies of those that were read in full (nil where skipped). Entries of gateways not
    /// in `live` are not counted: their gateway crashed and its entries linger until the hash expires.
    package static func channels(
        keys: [String], prefix: String, lengths: [RedisReply], values: [RedisReply?], live: Set<String>
    ) -> [ChannelFigures] {
        let keyPrefix = presencePrefix(prefix)
        var result: [ChannelFigures] = []
        for (index, key) in keys.enumerated() where key.hasPrefix(keyPrefix) {
            let channel = String(key.dropFirst(keyPrefix.count))
            let length = index < lengths.count ? Int(lengths[index].integer ?? 0) : 0
            if index < values.count, let reply = values[index], let entries = reply.array {
                var clients = 0
                var users: Set<String> = []
                var gateways: Set<String> = []
                for entry in entries {
                    guard let bytes = entry.bytes, let members = try? JSONScanner.objectMembers(bytes),
                        let gateway = members["gateway"].flatMap({ try? JSONScanner.string($0) }), live.contains(gateway)
                    else { continue }
                    clients += 1
                    gateways.insert(gateway)
                    if let user = members["user"].flatMap({ try? JSONScanner.string($0) }) { users.insert(user) }
                }
                if clients > 0 { result.append(ChannelFigures(channel: channel, clients: clients, users: users.count, gateways: gateways.count)) }
            } else if length > 0 {
                result.append(ChannelFigures(channel: channel, clients: length, users: nil, gateways: nil))
            }
        }
        return result.sorted { ($1.clients, $0.channel) < ($0.clients, $1.channel) }
    }
}

/// Reads the gateway registry and the presence hashes from Redis, read-only, on its own serial queue.
///
/// hiredis blocks, so the reads never run on the screen's thread nor on Swift's cooperative pool (two
/// threads on a 2-core machine, which the scrapers need): the async `read()` hops to `queue` and every
/// round trip is bounded by `timeoutSeconds`. Unlike stormd's readers it deletes nothing: a dashboard
/// must not write to the cluster it watches.
///
/// Cost per poll: 2 round trips for the registry, 1 per `scanCount` keys for the scan, 1 pipelined `HLEN`
/// of every channel, 1 pipelined `HVALS` of the channels that fit in `valueBudget` entries (smallest
/// first; bigger ones show their `HLEN`).
package final class PresenceReader: Sendable {
    package let endpoint: RedisEndpoint
    package let prefix: String
    package let timeoutSeconds: Double
    /// Keys asked per `SCAN` step (a hint to Redis, which may return more or fewer).
    package static let scanCount = 500
    /// Most presence keys read per poll: beyond it the view says the list is incomplete.
    package static let keyBudget = 10_000
    /// Most entries fetched with `HVALS` per poll, over all channels.
    package static let valueBudget = 100_000

    private let queue = DispatchQueue(label: "stormtop.redis")
    private let connection = Mutex<RedisConnection?>(nil)

    package init(endpoint: RedisEndpoint, prefix: String, timeoutSeconds: Double) {
        self.endpoint = endpoint
        self.prefix = prefix
        self.timeoutSeconds = timeoutSeconds
    }

    /// One read of registry and presence, off the caller's thread.
    package func read() async -> PresenceSnapshot {
        await withCheckedContinuation { continuation in
            queue.async { continuation.resume(returning: self.readBlocking()) }
        }
    }

    package func close() {
        connection.withLock { $0?.close(); $0 = nil }
    }

    /// Blocks for at most a few round trips of `timeoutSeconds` each. A failure closes the connection,
    /// so the next poll reconnects (Redis restarted or came back).
    package func readBlocking() -> PresenceSnapshot {
        let started = ContinuousClock.now
        var snapshot = PresenceSnapshot(endpoint: endpoint.description)
        connection.withLock { connection in
            do throws(StormError) {
                if connection == nil || connection?.isOpen == false {
                    connection = try RedisConnection(endpoint: endpoint, timeoutSeconds: timeoutSeconds)
                }
                guard let open = connection else { throw StormError(.connection, "no connection to Redis at \(endpoint)") }
                try read(on: open, into: &snapshot)
                snapshot.state = .up
            } catch {
                connection?.close()
                connection = nil
                snapshot.state = .down(error.message)
            }
        }
        let duration = started.duration(to: .now)
        snapshot.readSeconds = Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
        return snapshot
    }

    private func read(on connection: RedisConnection, into snapshot: inout PresenceSnapshot) throws(StormError) {
        let index = try checked(connection.command(["ZRANGE", PresenceKeys.gatewayIndex(prefix), "0", "-1"]), "ZRANGE")
        let ids = index.array?.compactMap(\.text) ?? []
        if !ids.isEmpty {
            let records = try checked(connection.command(["MGET"] + ids.map { PresenceKeys.gateway(prefix, $0) }), "MGET")
            snapshot.gateways = PresenceKeys.gateways(ids: ids, records: records)
        }

        var keys: [String] = []
        var seen: Set<String> = []
        var cursor = "0"
        repeat {
            let reply = try checked(
                connection.command(["SCAN", cursor, "MATCH", PresenceKeys.presencePattern(prefix), "COUNT", String(Self.scanCount)]), "SCAN")
            guard let page = PresenceKeys.scanPage(reply) else { throw StormError(.protocolViolation, "Redis answered SCAN with \(reply)") }
            // SCAN may return a key twice while the keyspace is rehashed.
            for key in page.keys where seen.insert(key).inserted { keys.append(key) }
            cursor = page.cursor
        } while cursor != "0" && keys.count < Self.keyBudget
        snapshot.truncated = cursor != "0"
        guard !keys.isEmpty else { return }

        let lengths = try connection.pipeline(keys.map { [Array("HLEN".utf8), Array($0.utf8)] })
        // Read whole hashes smallest first until the budget is spent: the small channels get exact
        // figures, the few huge ones their length.
        var budget = Self.valueBudget
        var wanted = Array(repeating: false, count: keys.count)
        for position in keys.indices.sorted(by: { (lengths[$0].integer ?? 0) < (lengths[$1].integer ?? 0) }) {
            let length = Int(lengths[position].integer ?? 0)
            guard length > 0, length <= budget else { continue }
            budget -= length
            wanted[position] = true
        }
        let asked = keys.indices.filter { wanted[$0] }
        let replies = try connection.pipeline(asked.map { [Array("HVALS".utf8), Array(keys[$0].utf8)] })
        var values: [RedisReply?] = Array(repeating: nil, count: keys.count)
        for (position, reply) in zip(asked, replies) { values[position] = reply }
        snapshot.channels = PresenceKeys.channels(
            keys: keys, prefix: prefix, lengths: lengths, values: values, live: Set(snapshot.gateways.map(\.id)))
    }

    /// A Redis error reply (`-WRONGTYPE`, `-NOAUTH`) becomes a `.connection` error naming the command.
    private func checked(_ reply: RedisReply, _ command: String) throws(StormError) -> RedisReply {
        if case .error(let message) = reply { throw StormError(.connection, "Redis at \(endpoint) refused \(command): \(message)") }
        return reply
    }
}
