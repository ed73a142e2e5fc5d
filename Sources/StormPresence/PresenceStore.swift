import StormCore

/// Where presence, per-user routing and the gateway registry live. Two implementations:
/// `RedisPresenceStore` (shared by every gateway of a cluster; `--redis`) and `MemoryPresenceStore` (the
/// zero-config default: one process sees itself). Callers never know which one they hold.
///
/// Writes come only from one `PresenceTracker` writer thread per gateway, as batches; reads may come from
/// any thread and block, so callers run them off event loops (the tracker's thread pool does).
///
/// Liveness model shared by both: an entry names the gateway that wrote it, and a gateway is alive while
/// its registry record exists. The record expires `ttl` after the gateway's last heartbeat, so the
/// entries of a gateway that crashed disappear from every read within `ttl` without anyone deleting them
/// (readers delete them lazily).
package protocol PresenceStore: AnyObject, Sendable {
    /// For logs and `/readyz`: `memory` or `redis://host:port/db` (never a password).
    var endpointDescription: String { get }

    /// Whether this store is shared between gateways (Redis) or private to the process (memory).
    var isShared: Bool { get }

    /// Opens the writer's connection. Throws `.connection` when the store cannot be reached.
    func connect() throws(StormError)

    /// Applies one batch of the writer's changes in as few round trips as possible. Returns whether the
    /// gateway's registration was found missing before this batch's heartbeat (Redis restarted or
    /// flushed, or a heartbeat came later than `ttl`), in which case the caller writes everything again.
    func write(_ batch: PresenceBatch) throws(StormError) -> PresenceWriteOutcome

    /// Closes the writer's connection (after an error, or on stop).
    func disconnect()

    /// The live entries of a channel (entries of dead gateways are left out, and deleted).
    func presence(in channel: ChannelName) throws(StormError) -> [PresenceEntry]

    /// Every live gateway's registry record.
    func gateways() throws(StormError) -> [GatewayRecord]

    /// The live gateways that hold connections of `user` (named users only; see `PresenceTracker`).
    func gateways(ofUser user: String) throws(StormError) -> [String]
}

package struct PresenceWriteOutcome: Sendable, Equatable {
    /// The registry record was missing when the heartbeat was written: write the whole state again.
    package var registrationWasMissing = false
}

/// One connection's presence in one channel: what `GET /api/v1/channels/{channel}/presence` lists.
package struct PresenceEntry: Sendable, Equatable {
    package var client: String
    package var user: String
    package var gateway: String
    /// Connected since, milliseconds since the Unix epoch.
    package var sinceMillis: UInt64
    /// Optional client information: a JSON object's bytes (`{"transport":"websocket"}`).
    package var info: [UInt8]?

    /// `{"client":…,"user":…,"gateway":…,"since":…,"info":{…}}`: the stored value and the API's item.
    package func json() -> [UInt8] {
        var out: [UInt8] = Array(#"{"client":"#.utf8)
        JSONWriter.appendString(utf8: client.utf8, to: &out)
        out += Array(#","user":"#.utf8)
        JSONWriter.appendString(utf8: user.utf8, to: &out)
        out += Array(#","gateway":"#.utf8)
        JSONWriter.appendString(utf8: gateway.utf8, to: &out)
        out += Array(",\"since\":\(sinceMillis)".utf8)
        if let info {
            out += Array(#","info":"#.utf8)
            out += info
        }
        out.append(UInt8(ascii: "}"))
        return out
    }

    /// Reads a stored value; nil for anything STORM did not write (it is then ignored).
    package init?(json bytes: [UInt8]) {
        guard let members = try? JSONScanner.objectMembers(bytes),
            let client = members["client"].flatMap({ try? JSONScanner.string($0) }),
            let user = members["user"].flatMap({ try? JSONScanner.string($0) }),
            let gateway = members["gateway"].flatMap({ try? JSONScanner.string($0) })
        else { return nil }
        self.client = client
        self.user = user
        self.gateway = gateway
        self.sinceMillis = members["since"].flatMap { JSONScanner.number($0) }.map { UInt64(clamping: $0) } ?? 0
        self.info = members["info"]
    }

    package init(client: String, user: String, gateway: String, sinceMillis: UInt64, info: [UInt8]?) {
        self.client = client
        self.user = user
        self.gateway = gateway
        self.sinceMillis = sinceMillis
        self.info = info
    }
}

/// A gateway's registry record: how `stormctl gateways` and `stormtop` find the cluster.
package struct GatewayRecord: Sendable, Equatable {
    package var id: String
    package var httpURL: String
    package var metricsURL: String
    package var version: String
    package var startedMillis: UInt64
    package var heartbeatMillis: UInt64
    /// `ok` or `degraded` (presence store unreachable when the record was last written).
    package var presence: String = "ok"

    package func json() -> [UInt8] {
        var out = "{\"id\":" + JSONWriter.quoted(id)
        out += ",\"http\":" + JSONWriter.quoted(httpURL)
        out += ",\"metrics\":" + JSONWriter.quoted(metricsURL)
        out += ",\"version\":" + JSONWriter.quoted(version)
        out += ",\"started\":\(startedMillis),\"heartbeat\":\(heartbeatMillis)"
        out += ",\"presence\":" + JSONWriter.quoted(presence) + "}"
        return Array(out.utf8)
    }

    package init?(json bytes: [UInt8]) {
        guard let members = try? JSONScanner.objectMembers(bytes),
            let id = members["id"].flatMap({ try? JSONScanner.string($0) })
        else { return nil }
        self.id = id
        httpURL = members["http"].flatMap { try? JSONScanner.string($0) } ?? ""
        metricsURL = members["metrics"].flatMap { try? JSONScanner.string($0) } ?? ""
        version = members["version"].flatMap { try? JSONScanner.string($0) } ?? ""
        startedMillis = members["started"].flatMap { JSONScanner.number($0) }.map { UInt64(clamping: $0) } ?? 0
        heartbeatMillis = members["heartbeat"].flatMap { JSONScanner.number($0) }.map { UInt64(clamping: $0) } ?? 0
        presence = members["presence"].flatMap { try? JSONScanner.string($0) } ?? "ok"
    }

    package init(id: String, httpURL: String, metricsURL: String, version: String, startedMillis: UInt64, heartbeatMillis: UInt64, presence: String = "ok") {
        self.id = id
        self.httpURL = httpURL
        self.metricsURL = metricsURL
        self.version = version
        self.startedMillis = startedMillis
        self.heartbeatMillis = heartbeatMillis
        self.presence = presence
    }
}

/// One writer batch: what changed since the last one, grouped so that each channel and each user costs
/// one command however many connections joined.
package struct PresenceBatch: Sendable {
    package var gateway: String
    /// Entries to write (new joins, or everything on a resync), by channel.
    package var joined: [ChannelName: [PresenceEntry]] = [:]
    /// Client ids to delete, by channel.
    package var left: [ChannelName: [String]] = [:]
    /// Connections of a named user on this gateway; 0 removes this gateway from the user's routing.
    package var userCounts: [String: Int] = [:]
    /// Set when this batch carries the gateway's heartbeat.
    package var heartbeat: Heartbeat?
    /// Set on a clean stop: the registry record is removed.
    package var deregister = false

    package struct Heartbeat: Sendable {
        package var record: GatewayRecord
        /// Channels this gateway has entries in, whose keys must outlive this heartbeat by `ttl`.
        package var channels: [ChannelName]
        /// Named users with connections here, whose routing keys must outlive it too.
        package var users: [String]
    }

    package init(gateway: String) { self.gateway = gateway }

    package var isEmpty: Bool { joined.isEmpty && left.isEmpty && userCounts.isEmpty && heartbeat == nil && !deregister }

    /// Entries written or deleted: `storm_presence_writes_total` counts these.
    package var changeCount: Int {
        joined.values.reduce(0) { $0 + $1.count } + left.values.reduce(0) { $0 + $1.count } + userCounts.count
    }
}

/// Milliseconds since the Unix epoch, the unit of every presence timestamp.
package func unixMillisNow() -> UInt64 { unixMicrosNow() / 1000 }
