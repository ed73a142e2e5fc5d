import NIOConcurrencyHelpers
import StormCore

/// Presence, per-user routing and the gateway registry in Redis, shared by every gateway of a cluster.
///
/// Data model (every key starts with the configurable prefix `P`, `storm` by default, so several
/// clusters can share one Redis):
///
/// | key | type | content |
/// |---|---|---|
/// | `P:presence:<channel>` | hash | client id → `{"client","user","gateway","since","info"}` |
/// | `P:gateway:<id>` | string, expires after `ttl` | the gateway's registry record (JSON); its existence is the gateway's liveness |
/// | `P:gateways` | sorted set | gateway id → last heartbeat (ms), the index of the registry |
/// | `P:user:<user>` | hash | gateway id → connections of that named user on it |
///
/// Why this shape: a heartbeat costs one command per channel and per named user (refreshing key expiry)
/// plus one for the record, never one per connection, and joins are grouped into one `HSET` per channel,
/// so 10,000 clients joining a channel within a batch is one command. Entries carry no expiry of their
/// own (Redis 7.0 has no per-field expiry): an entry is live while its gateway's record exists, readers
/// leave out and delete entries of dead gateways, and each hash itself expires `ttl` after the last
/// heartbeat of any gateway with entries in it. A gateway whose record was found missing (Redis
/// restarted, or a heartbeat came too late) writes its whole state again.
///
/// Threading: the writer connection is used only by the tracker's writer thread; reads share a second
/// connection under a lock and block the calling thread (at most `timeout` per round trip).
package final class RedisPresenceStore: PresenceStore, @unchecked Sendable {
    // @unchecked: `writer` is touched only by the one writer thread (PresenceTracker's contract);
    // `reader` is behind its lock.
    package let endpoint: RedisEndpoint
    package let keyPrefix: String
    package let ttlMillis: Int
    private let timeoutSeconds: Double
    private var writer: RedisConnection?
    private let reader = NIOLockedValueBox<RedisConnection?>(nil)

    /// Largest number of fields one `HSET`/`HDEL` carries; bigger groups are split.
    private static let fieldsPerCommand = 2_000

    package init(endpoint: RedisEndpoint, keyPrefix: String = "storm", ttlMillis: Int, timeoutSeconds: Double = 2) {
        self.endpoint = endpoint
        self.keyPrefix = keyPrefix
        self.ttlMillis = ttlMillis
        self.timeoutSeconds = timeoutSeconds
    }

    package var endpointDescription: String { endpoint.description }
    package var isShared: Bool { true }

    // MARK: Keys

    package func presenceKey(_ channel: ChannelName) -> String { "\(keyPrefix):presence:\(channel.rawValue)" }
    package func gatewayKey(_ id: String) -> String { "\(keyPrefix):gateway:\(id)" }
    package var gatewayIndexKey: String { "\(keyPrefix):gateways" }
    package func userKey(_ user: String) -> String { "\(keyPrefix):user:\(user)" }

    // MARK: Writing (the writer thread)

    package func connect() throws(StormError) {
        writer?.close()
        writer = nil
        writer = try RedisConnection(endpoint: endpoint, timeoutSeconds: timeoutSeconds)
    }

    package func disconnect() {
        writer?.close()
        writer = nil
    }

    package func write(_ batch: PresenceBatch) throws(StormError) -> PresenceWriteOutcome {
        guard let writer, writer.isOpen else { throw StormError(.connection, "not connected to Redis at \(endpoint)") }
        let ttl = String(ttlMillis)
        var commands: [[[UInt8]]] = []
        func add(_ parts: [String]) { commands.append(parts.map { Array($0.utf8) }) }
        if let heartbeat = batch.heartbeat {
            add(["EXISTS", gatewayKey(heartbeat.record.id)])
            // The record before any entry: a reader deletes the entries of a gateway whose record is
            // missing, so an entry must never be visible before its gateway's record is.
            add(["SET", gatewayKey(heartbeat.record.id)] + [String(decoding: heartbeat.record.json(), as: UTF8.self), "PX", ttl])
        }
        for (channel, entries) in batch.joined where !entries.isEmpty {
            let key = Array(presenceKey(channel).utf8)
            var start = 0
            while start < entries.count {
                let end = min(entries.count, start + Self.fieldsPerCommand)
                var command: [[UInt8]] = [Array("HSET".utf8), key]
                command.reserveCapacity(2 + 2 * (end - start))
                for entry in entries[start..<end] {
                    command.append(Array(entry.client.utf8))
                    command.append(entry.json())
                }
                commands.append(command)
                start = end
            }
            add(["PEXPIRE", presenceKey(channel), ttl])
        }
        for (channel, clients) in batch.left where !clients.isEmpty {
            let key = presenceKey(channel)
            var start = 0
            while start < clients.count {
                let end = min(clients.count, start + Self.fieldsPerCommand)
                add(["HDEL", key] + clients[start..<end])
                start = end
            }
        }
        for (user, count) in batch.userCounts {
            if count > 0 {
                add(["HSET", userKey(user), batch.gateway, String(count)])
                add(["PEXPIRE", userKey(user), ttl])
            } else {
                add(["HDEL", userKey(user), batch.gateway])
            }
        }
        if let heartbeat = batch.heartbeat {
            add(["ZADD", gatewayIndexKey, String(heartbeat.record.heartbeatMillis), heartbeat.record.id])
            for channel in heartbeat.channels { add(["PEXPIRE", presenceKey(channel), ttl]) }
            for user in heartbeat.users { add(["PEXPIRE", userKey(user), ttl]) }
        }
        if batch.deregister {
            add(["DEL", gatewayKey(batch.gateway)])
            add(["ZREM", gatewayIndexKey, batch.gateway])
        }
        guard !commands.isEmpty else { return PresenceWriteOutcome() }
        let replies = try writer.pipeline(commands)
        for (index, reply) in replies.enumerated() {
            if case .error(let message) = reply {
                let name = commands[index].first.map { String(decoding: $0, as: UTF8.self) } ?? "?"
                throw StormError(.connection, "Redis at \(endpoint) refused \(name): \(message)")
            }
        }
        var outcome = PresenceWriteOutcome()
        if batch.heartbeat != nil, replies.first?.integer == 0 { outcome.registrationWasMissing = true }
        return outcome
    }

    // MARK: Reading (any thread)

    /// Runs `body` on the shared reader connection, opening it when needed; a broken connection is
    /// dropped so the next read reconnects.
    private func read<T>(_ body: (RedisConnection) throws(StormError) -> T) throws(StormError) -> T {
        let result: Result<T, StormError> = reader.withLockedValue { connection in
            do throws(StormError) {
                if connection == nil || connection?.isOpen == false {
                    connection = try RedisConnection(endpoint: endpoint, timeoutSeconds: timeoutSeconds)
                }
                guard let open = connection else { throw StormError(.connection, "no connection to Redis at \(endpoint)") }
                return .success(try body(open))
            } catch {
                connection?.close()
                connection = nil
                return .failure(error)
            }
        }
        return try result.get()
    }

    /// Deletes `fields` from the hash `key` only while `gateway`'s record is still missing, in one atomic
    /// step on the server.
    ///
    /// Why a script: "read the record, then HDEL" as two round trips lets a gateway re-register in
    /// between (Redis restarted, or its heartbeat was late), and the HDEL then deleted the entries it had
    /// just rewritten; its record was back, so it never wrote them again and presence stayed wrong.
    private static let deleteIfGatewayGone = """
        if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
        return redis.call('HDEL', KEYS[1], unpack(ARGV))
        """

    private func deleteEntries(_ fields: [String], from key: String, ifGatewayGone gateway: String, on connection: RedisConnection) throws(StormError) {
        var start = 0
        // unpack() is bounded by Lua's C stack (about 8,000 values): chunk well below it.
        while start < fields.count {
            let end = min(fields.count, start + 1_000)
            let reply = try connection.command(["EVAL", Self.deleteIfGatewayGone, "2", key, gatewayKey(gateway)] + fields[start..<end])
            if case .error(let message) = reply { throw StormError(.connection, "Redis refused EVAL (presence clean-up of \(key)): \(message)") }
            start = end
        }
    }

    /// The ids among `ids` whose registry record exists.
    private func liveGateways(_ ids: Set<String>, on connection: RedisConnection) throws(StormError) -> Set<String> {
        guard !ids.isEmpty else { return [] }
        let ordered = Array(ids)
        let reply = try connection.command(["MGET"] + ordered.map(gatewayKey))
        var live: Set<String> = []
        for (id, value) in zip(ordered, reply.array ?? []) where value != .null { live.insert(id) }
        return live
    }

    package func presence(in channel: ChannelName) throws(StormError) -> [PresenceEntry] {
        try read { connection throws(StormError) in
            let key = presenceKey(channel)
            let reply = try connection.command(["HGETALL", key])
            if case .error(let message) = reply { throw StormError(.connection, "Redis refused HGETALL \(key): \(message)") }
            let values = reply.array ?? []
            var entries: [PresenceEntry] = []
            var unreadable: [String] = []
            var index = 0
            while index + 1 < values.count {
                if let bytes = values[index + 1].bytes, let entry = PresenceEntry(json: bytes) {
                    entries.append(entry)
                } else if let field = values[index].text {
                    unreadable.append(field)
                }
                index += 2
            }
            let live = try liveGateways(Set(entries.map(\.gateway)), on: connection)
            let dead = Dictionary(grouping: entries.filter { !live.contains($0.gateway) }, by: \.gateway)
            for (gateway, gone) in dead { try deleteEntries(gone.map(\.client), from: key, ifGatewayGone: gateway, on: connection) }
            if !unreadable.isEmpty { _ = try connection.command(["HDEL", key] + unreadable) }
            return entries.filter { live.contains($0.gateway) }.sorted { ($0.sinceMillis, $0.client) < ($1.sinceMillis, $1.client) }
        }
    }

    package func gateways() throws(StormError) -> [GatewayRecord] {
        try read { connection throws(StormError) in
            let ids = (try connection.command(["ZRANGE", gatewayIndexKey, "0", "-1"])).array?.compactMap(\.text) ?? []
            guard !ids.isEmpty else { return [] }
            let values = (try connection.command(["MGET"] + ids.map(gatewayKey))).array ?? []
            var records: [GatewayRecord] = []
            var gone: [String] = []
            for (id, value) in zip(ids, values) {
                if let bytes = value.bytes, let record = GatewayRecord(json: bytes) { records.append(record) } else { gone.append(id) }
            }
            if !gone.isEmpty { _ = try connection.command(["ZREM", gatewayIndexKey] + gone) }
            return records.sorted { ($0.startedMillis, $0.id) < ($1.startedMillis, $1.id) }
        }
    }

    package func gateways(ofUser user: String) throws(StormError) -> [String] {
        try read { connection throws(StormError) in
            let key = userKey(user)
            let values = (try connection.command(["HGETALL", key])).array ?? []
            var ids: Set<String> = []
            var index = 0
            while index + 1 < values.count {
                if let id = values[index].text, (values[index + 1].text.flatMap(Int.init) ?? 0) > 0 { ids.insert(id) }
                index += 2
            }
            let live = try liveGateways(ids, on: connection)
            for gateway in ids.subtracting(live) { try deleteEntries([gateway], from: key, ifGatewayGone: gateway, on: connection) }
            return live.sorted()
        }
    }
}
