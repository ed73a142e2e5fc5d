import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import StormCore
import StormTestSupport
import Testing

@testable import StormBroker
@testable import StormConfiguration
@testable import StormConsumer
@testable import StormGateway
@testable import StormNATS
@testable import StormObservability
@testable import StormPresence
@testable import StormStore

/// Where the Redis integration tests find Redis. `./scripts/test` starts a redis-server and sets these.
private enum RedisTestEnvironment {
    static var url: String? { nonEmpty("STORM_TEST_REDIS_URL") }
    static var serverBinary: String? { nonEmpty("STORM_TEST_REDIS_SERVER_BIN") }

    static var isCI: Bool {
        guard let value = nonEmpty("CI")?.lowercased() else { return false }
        return value != "false" && value != "0"
    }

    /// The Redis URL, or nil to skip: in CI a missing server is recorded as a failure, never a skip.
    static func requireURL() -> String? {
        if let url { return url }
        if isCI { Issue.record("STORM_TEST_REDIS_URL is not set: run ./scripts/test, which starts redis-server") }
        return nil
    }

    static func requireServerBinary() -> String? {
        if let serverBinary { return serverBinary }
        if isCI { Issue.record("STORM_TEST_REDIS_SERVER_BIN is not set: run ./scripts/test, which starts redis-server") }
        return nil
    }

    private static func nonEmpty(_ name: String) -> String? {
        guard let value = ProcessInfo.processInfo.environment[name], !value.isEmpty else { return nil }
        return value
    }
}

// MARK: - Helpers

/// A key prefix no other test (or earlier run against the same Redis) shares.
private func uniquePrefix() -> String { "stormtest\(UInt32.random(in: 0...UInt32.max))" }

private func configurePresence(
    _ configuration: inout GatewayConfiguration, redis: String?, prefix: String, channels: String = "*", events: String = "",
    ttl: TimeAmount = .seconds(30)
) {
    configuration.presence.redis = redis.flatMap { try? RedisEndpoint(url: $0) }
    configuration.presence.redisKeyPrefix = prefix
    configuration.presence.channels = (try? ChannelPatterns(parsing: channels, origin: "test")) ?? ChannelPatterns()
    configuration.presence.events = (try? ChannelPatterns(parsing: events, origin: "test")) ?? ChannelPatterns()
    configuration.presence.ttl = ttl
    configuration.presence.batchInterval = .milliseconds(20)
}


extension Gateway {
    /// GETs an API path and returns the status and the JSON members of the answer.
    fileprivate func api(_ method: String = "GET", _ path: String, json body: String? = nil) async throws -> (status: Int, members: [String: [UInt8]], text: String) {
        let connection = try await RawConnection.connect(port: port)
        return try await cleaningUp({ await connection.close() }) {
            let response = try await connection.request(
                method, path, body: body.map { Array($0.utf8) } ?? [], headers: body == nil ? [] : ["Content-Type: application/json"])
            return (response.status, (try? JSONScanner.objectMembers(response.body)) ?? [:], response.text)
        }
    }

    /// The client ids the presence API lists for `channel` (nil when it did not answer 200).
    fileprivate func presenceClients(_ channel: String) async throws -> [String]? {
        let answer = try await api("GET", "/api/v1/channels/\(channel)/presence")
        guard answer.status == 200, let raw = answer.members["clients"] else { return nil }
        let text = String(decoding: raw, as: UTF8.self)
        // Items are flat objects: pull every "client" value.
        var clients: [String] = []
        for part in text.components(separatedBy: "{\"client\":").dropFirst() {
            if let end = part.dropFirst().firstIndex(of: "\"") { clients.append(String(part.dropFirst()[..<end])) }
        }
        return clients
    }

    fileprivate func presenceStats(_ channel: String) async throws -> (clients: Int, users: Int)? {
        let answer = try await api("GET", "/api/v1/channels/\(channel)/presence-stats")
        guard answer.status == 200,
            let clients = answer.members["clients"].flatMap(JSONScanner.number),
            let users = answer.members["users"].flatMap(JSONScanner.number)
        else { return nil }
        return (Int(clients), Int(users))
    }

    fileprivate var gatewayID: String { ids.instanceID }
}

/// A session stand-in for the tracker: records that it was asked to close.
private final class FakeSession: FanoutSubscriber, @unchecked Sendable {
    // @unchecked: `closed` is locked; nothing else mutates.
    let transport = GatewayMetrics.Transport.webSocket
    let closed = NIOLockedValueBox(false)
    func enqueue(_ run: DeliveryRun) -> EnqueueOutcome { .skipped }
    func flush() {}
    func tick(now: NIODeadline) {}
    func closeForShutdown() { closed.withLockedValue { $0 = true } }
}

private func freePort() async throws -> Int {
    let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: 0).get()
    let port = channel.localAddress?.port ?? 0
    try await channel.close()
    return port
}

/// A redis-server of the test's own, to kill and restart.
private final class OwnRedis: @unchecked Sendable {
    let binary: String
    let port: Int
    private var process: Process?

    init(binary: String, port: Int) {
        self.binary = binary
        self.port = port
    }

    var url: String { "redis://127.0.0.1:\(port)" }

    func start() async throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = ["--bind", "127.0.0.1", "--port", String(port), "--save", "", "--appendonly", "no", "--daemonize", "no"]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        self.process = process
        let endpoint = RedisEndpoint(host: "127.0.0.1", port: port)
        let up = await eventually(timeout: .seconds(10)) {
            guard let connection = try? RedisConnection(endpoint: endpoint, timeoutSeconds: 0.5) else { return false }
            return (try? connection.command(["PING"])) == .status("PONG")
        }
        guard up else { throw StormError(.connection, "redis-server did not answer PING on port \(port) within 10 s") }
    }

    /// SIGKILL: what a crash looks like.
    func kill() {
        guard let process else { return }
        Glibc.kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        self.process = nil
    }

    deinit { kill() }
}

// MARK: - Units (no Redis needed)

@Suite("Presence units")
struct PresenceUnitTests {
    @Test("channel patterns: *, prefixes and exact names")
    func patterns() throws {
        let patterns = try ChannelPatterns(parsing: "chat.*, news.eu", origin: "test")
        #expect(patterns.matches(try ChannelName(validating: "chat.lobby")))
        #expect(patterns.matches(try ChannelName(validating: "chat.room.1")))
        #expect(!patterns.matches(try ChannelName(validating: "chat")))
        #expect(!patterns.matches(try ChannelName(validating: "chatter.x")))
        #expect(patterns.matches(try ChannelName(validating: "news.eu")))
        #expect(!patterns.matches(try ChannelName(validating: "news.us")))
        #expect(try ChannelPatterns(parsing: "*", origin: "t").matches(try ChannelName(validating: "any.thing")))
        #expect(ChannelPatterns().isEmpty)
        #expect(throws: StormError.self) { try ChannelPatterns(parsing: "a..b", origin: "t") }
        #expect(throws: StormError.self) { try ChannelPatterns(parsing: "chat.>", origin: "t") }
    }

    @Test("Redis URLs: host, port, database, password kept out of the description")
    func redisURLs() throws {
        let plain = try RedisEndpoint(url: "redis://10.0.0.5:6380/2")
        #expect(plain == RedisEndpoint(host: "10.0.0.5", port: 6380, database: 2))
        #expect(try RedisEndpoint(url: "redis://cache") == RedisEndpoint(host: "cache", port: 6379, database: 0))
        let secret = try RedisEndpoint(url: "redis://:hunter2@127.0.0.1:6379/0")
        #expect(secret.password == "hunter2")
        #expect(!secret.description.contains("hunter2"))
        #expect(throws: StormError.self) { try RedisEndpoint(url: "http://127.0.0.1:6379") }
        #expect(throws: StormError.self) { try RedisEndpoint(url: "redis://127.0.0.1:notaport") }
        #expect(throws: StormError.self) { try RedisEndpoint(url: "redis://127.0.0.1:6379/99") }
    }

    @Test("configuration: presence settings from flags, defaults off, bad values name the setting")
    func configuration() throws {
        let defaults = try GatewayConfiguration(sources: ConfigurationSources())
        #expect(defaults.presence.redis == nil)
        #expect(defaults.presence.channels.isEmpty)
        #expect(defaults.presence.ttl == .seconds(30))
        let configured = try GatewayConfiguration(
            sources: ConfigurationSources(
                flags: [.redis: "redis://127.0.0.1:6390/1", .presenceChannels: "chat.*", .presenceEvents: "chat.lobby", .presenceTTL: "12s"]))
        #expect(configured.presence.redis?.port == 6390)
        #expect(configured.presence.channels.matches(try ChannelName(validating: "chat.x")))
        #expect(configured.presence.events.matches(try ChannelName(validating: "chat.lobby")))
        #expect(configured.presence.heartbeatInterval == .seconds(4))
        let fromEnvironment = try GatewayConfiguration(sources: ConfigurationSources(environment: ["STORM_REDIS_URL": "redis://h:1"]))
        #expect(fromEnvironment.presence.redis?.host == "h")
        do {
            _ = try GatewayConfiguration(sources: ConfigurationSources(flags: [.presenceTTL: "soon"]))
            Issue.record("a bad TTL was accepted")
        } catch {
            #expect(error.code == .configuration)
            #expect(error.message.contains("--presence-ttl"))
        }
    }

    @Test("memory store: entries of a gateway whose record expired vanish; routing follows live gateways")
    func memoryStoreExpiry() throws {
        // The store's clock is the test's: time moves only when the test says so, so a slow machine cannot
        // make b's heartbeats arrive later than its TTL (or a's record outlive it).
        let now = NIOLockedValueBox(NIODeadline.uptimeNanoseconds(1_000_000_000))
        let ttl = TimeAmount.seconds(30)
        let store = MemoryPresenceStore(ttl: ttl, clock: { now.withLockedValue { $0 } })
        func advance(_ amount: TimeAmount) { now.withLockedValue { $0 = $0 + amount } }
        let channel = try ChannelName(validating: "room")
        func record(_ id: String) -> GatewayRecord {
            GatewayRecord(id: id, httpURL: "http://x", metricsURL: "http://x/metrics", version: "t", startedMillis: 1, heartbeatMillis: unixMillisNow())
        }
        var a = PresenceBatch(gateway: "a")
        a.joined[channel] = [PresenceEntry(client: "a-1", user: "bob", gateway: "a", sinceMillis: 1, info: nil)]
        a.userCounts["bob"] = 1
        a.heartbeat = .init(record: record("a"), channels: [channel], users: ["bob"])
        #expect(try store.write(a).registrationWasMissing)
        var b = PresenceBatch(gateway: "b")
        b.joined[channel] = [PresenceEntry(client: "b-1", user: "bob", gateway: "b", sinceMillis: 2, info: Array(#"{"k":1}"#.utf8))]
        b.userCounts["bob"] = 1
        b.heartbeat = .init(record: record("b"), channels: [channel], users: ["bob"])
        _ = try store.write(b)
        #expect(try store.presence(in: channel).map(\.client) == ["a-1", "b-1"])
        #expect(try store.gateways(ofUser: "bob") == ["a", "b"])
        #expect(try store.gateways().map(\.id) == ["a", "b"])
        // Only b keeps heartbeating, a third of the TTL apart: its record never expires.
        for _ in 0..<3 {
            advance(.seconds(10))
            var beat = PresenceBatch(gateway: "b")
            beat.heartbeat = .init(record: record("b"), channels: [channel], users: ["bob"])
            #expect(try !store.write(beat).registrationWasMissing)
            if now.withLockedValue({ $0 }) < .uptimeNanoseconds(1_000_000_000) + ttl {
                // Within a's TTL: a is still live.
                #expect(try store.gateways().map(\.id) == ["a", "b"])
            }
        }
        // A TTL after a's last heartbeat, a has expired and b has not.
        advance(.seconds(1))
        #expect(try store.presence(in: channel).map(\.client) == ["b-1"])
        #expect(try store.gateways(ofUser: "bob") == ["b"])
        #expect(try store.gateways().map(\.id) == ["b"])
        // a heartbeating again after it expired is told its registration was missing (it resyncs).
        var late = PresenceBatch(gateway: "a")
        late.heartbeat = .init(record: record("a"), channels: [], users: [])
        #expect(try store.write(late).registrationWasMissing)
        var gone = PresenceBatch(gateway: "a")
        gone.deregister = true
        _ = try store.write(gone)
        var leave = PresenceBatch(gateway: "b")
        leave.left[channel] = ["b-1"]
        leave.userCounts["bob"] = 0
        leave.deregister = true
        _ = try store.write(leave)
        #expect(try store.presence(in: channel).isEmpty)
        #expect(try store.gateways().isEmpty)
    }

    @Test("entries and records round-trip through their JSON")
    func json() throws {
        let entry = PresenceEntry(client: "abc-1", user: "b\"ob", gateway: "abc", sinceMillis: 1_764_403_915_123, info: Array(#"{"transport":"sse"}"#.utf8))
        #expect(PresenceEntry(json: entry.json()) == entry)
        let record = GatewayRecord(id: "abc", httpURL: "http://h:1", metricsURL: "http://h:1/metrics", version: "1.0", startedMillis: 5, heartbeatMillis: 6)
        #expect(GatewayRecord(json: record.json()) == record)
        #expect(PresenceEntry(json: Array("garbage".utf8)) == nil)
    }
}

// MARK: - End to end on the in-memory store (zero-config default)

@Suite("Presence on the in-memory store")
struct MemoryPresenceTests {
    @Test("presence appears and disappears with WebSocket and SSE connections; only enabled channels answer")
    func appearAndDisappear() async throws {
        try await TestGateway.with(configure: { configurePresence(&$0, redis: nil, prefix: "m", channels: "room.*") }) { gateway in
            #expect(try await gateway.presenceClients("room.a") == [])
            let ws = try await TestWebSocket.connect(port: gateway.port)
            #expect(try await ws.subscribe(["room.a", "other"]).type == "reply")
            #expect(try await eventually { try await gateway.presenceClients("room.a")?.count == 1 })
            let sse = try await TestEventStream.connect(port: gateway.port, channels: ["room.a"])
            #expect(sse.head.status == 200)
            #expect(try await eventually { try await gateway.presenceStats("room.a").map { $0.clients == 2 && $0.users == 2 } ?? false })
            #expect(try await gateway.api("GET", "/api/v1/channels/other/presence").status == 404)
            #expect(try await gateway.api("POST", "/api/v1/channels/room.a/presence").status == 405)
            #expect(try await gateway.api("GET", "/api/v1/channels/a..b/presence").status == 400)
            try await ws.send(#"{"id":2,"op":"unsubscribe","channel":"room.a"}"#)
            #expect(try await eventually { try await gateway.presenceClients("room.a")?.count == 1 })
            await sse.close()
            #expect(try await eventually { try await gateway.presenceClients("room.a") == [] })
            let gateways = try await gateway.api("GET", "/api/v1/gateways")
            #expect(gateways.status == 200)
            #expect(gateways.text.contains("\"id\":\"\(gateway.gatewayID)\""))
            #expect(gateways.text.contains("\"http\":\"http://127.0.0.1:\(gateway.port)\""))
            let ready = try await gateway.api("GET", "/readyz")
            #expect(ready.text.contains("\"presence\":\"ok\""))
            await ws.close()
        }
    }

    @Test("join and leave messages reach subscribers of channels with --presence-events")
    func joinLeaveEvents() async throws {
        try await TestGateway.with(configure: { configurePresence(&$0, redis: nil, prefix: "m", channels: "", events: "lobby") }) { gateway in
            let watcher = try await TestWebSocket.connect(port: gateway.port)
            _ = try await watcher.subscribe(["lobby"])
            let own = try await watcher.next("message")
            #expect(own.text.contains(#""presence":"join""#))
            let visitor = try await TestWebSocket.connect(port: gateway.port)
            _ = try await visitor.subscribe(["lobby"])
            let join = try await watcher.next("message")
            #expect(join.text.contains(#""data":{"presence":"join","client":"\#(gateway.gatewayID)-"#), "\(join.text)")
            await visitor.close()
            let leave = try await watcher.next("message")
            #expect(leave.text.contains(#""presence":"leave""#), "\(leave.text)")
            await watcher.close()
        }
    }

    @Test("a client disconnect requested over HTTP travels through the broker and closes the connection")
    func disconnectClient() async throws {
        try await TestGateway.with(configure: { configurePresence(&$0, redis: nil, prefix: "m", channels: "*") }) { gateway in
            let ws = try await TestWebSocket.connect(port: gateway.port)
            _ = try await ws.subscribe(["kick.me"])
            var clients: [String] = []
            #expect(try await eventually {
                clients = try await gateway.presenceClients("kick.me") ?? []
                return clients.count == 1
            })
            let client = try #require(clients.first)
            let answer = try await gateway.api("POST", "/api/v1/clients/\(client)/disconnect")
            #expect(answer.status == 200, "\(answer.text)")
            #expect(answer.text.contains(gateway.gatewayID))
            var closeCode: UInt16?
            for _ in 0..<10 {
                let frame = try await ws.readFrame()
                if frame.opcode == 0x8 {
                    closeCode = frame.closeCode
                    break
                }
            }
            #expect(closeCode == 1001)
            #expect(try await eventually { try await gateway.presenceClients("kick.me") == [] })
            #expect(try await gateway.api("POST", "/api/v1/clients/nonsense/disconnect").status == 400)
        }
    }

    @Test("a disconnect's reason reaches the client in the close frame, cut to 123 bytes on a character boundary")
    func disconnectReason() async throws {
        try await TestGateway.with(configure: { configurePresence(&$0, redis: nil, prefix: "m", channels: "*") }) { gateway in
            // 61 two-byte characters (122 bytes), then a three-byte one that does not fit in 123.
            let long = String(repeating: "é", count: 61) + "€tail"
            for (reason, expected) in [("account closed", "account closed"), (long, String(repeating: "é", count: 61))] {
                let ws = try await TestWebSocket.connect(port: gateway.port)
                _ = try await ws.subscribe(["kick.reason"])
                var clients: [String] = []
                #expect(try await eventually {
                    clients = try await gateway.presenceClients("kick.reason") ?? []
                    return clients.count == 1
                })
                let client = try #require(clients.first)
                #expect(try await gateway.api("POST", "/api/v1/clients/\(client)/disconnect", json: #"{"reason":"x","other":1}"#.replacingOccurrences(of: "\"x\"", with: "7")).status == 400,
                    "a reason that is not a string is refused")
                let answer = try await gateway.api("POST", "/api/v1/clients/\(client)/disconnect", json: "{\"reason\":\(JSONWriter.quoted(reason))}")
                #expect(answer.status == 200, "\(answer.text)")
                var close: TestFrame?
                for _ in 0..<10 {
                    let frame = try await ws.readFrame()
                    if frame.opcode == 0x8 {
                        close = frame
                        break
                    }
                }
                #expect(close?.closeCode == 1001)
                #expect(close.map { String(decoding: $0.payload.dropFirst(2), as: UTF8.self) } == expected)
                #expect(try await eventually { try await gateway.presenceClients("kick.reason") == [] })
            }
        }
    }
}

// MARK: - Against a real redis-server

@Suite("Presence in Redis", .serialized)
struct RedisPresenceTests {
    @Test("presence appears and disappears with connections on two gateways sharing Redis")
    func twoGateways() async throws {
        guard let url = RedisTestEnvironment.requireURL() else { return }
        let prefix = uniquePrefix()
        let broker = MemoryBroker()
        try await TestGateway.with(broker: broker, configure: { configurePresence(&$0, redis: url, prefix: prefix) }) { a in
            try await TestGateway.with(broker: broker, configure: { configurePresence(&$0, redis: url, prefix: prefix) }) { b in
                let onA = try await TestWebSocket.connect(port: a.port)
                _ = try await onA.subscribe(["team.x"])
                let onB = try await TestEventStream.connect(port: b.port, channels: ["team.x"])
                #expect(onB.head.status == 200)
                #expect(try await eventually { try await a.presenceStats("team.x").map { $0.clients == 2 && $0.users == 2 } ?? false })
                let seenFromB = try await b.presenceClients("team.x") ?? []
                #expect(seenFromB.contains { $0.hasPrefix(a.gatewayID + "-") } && seenFromB.contains { $0.hasPrefix(b.gatewayID + "-") })
                let gateways = try await a.api("GET", "/api/v1/gateways").text
                #expect(gateways.contains(a.gatewayID) && gateways.contains(b.gatewayID))
                #expect(try await a.metric("storm_redis_connected") == 1)
                #expect(try await a.api("GET", "/readyz").text.contains("\"presence\":\"ok\""))
                await onA.close()
                #expect(try await eventually { try await b.presenceClients("team.x")?.count == 1 })
                await onB.close()
                #expect(try await eventually { try await a.presenceClients("team.x") == [] })
                #expect(try await a.metric("storm_presence_writes_total").map { $0 >= 2 } == true)
            }
        }
    }

    @Test("a killed gateway's entries and registry record expire within the TTL")
    func killedGatewayExpires() async throws {
        guard let url = RedisTestEnvironment.requireURL() else { return }
        let prefix = uniquePrefix()
        let broker = MemoryBroker()
        try await TestGateway.with(broker: broker, configure: { configurePresence(&$0, redis: url, prefix: prefix, ttl: .seconds(2)) }) { survivor in
            let doomed = try await TestGateway.start(broker: broker, configure: { configurePresence(&$0, redis: url, prefix: prefix, ttl: .seconds(2)) })
            var sockets: [TestWebSocket] = []
            for _ in 0..<3 {
                let ws = try await TestWebSocket.connect(port: doomed.port)
                _ = try await ws.subscribe(["doom"])
                sockets.append(ws)
            }
            #expect(try await eventually { try await survivor.presenceClients("doom")?.count == 3 })
            // The crash: the tracker stops writing, deletes nothing, and its connections stay open.
            await doomed.context.presence.stop(.abandon)
            let started = ContinuousClock.now
            #expect(try await eventually(timeout: .seconds(120)) { try await survivor.presenceClients("doom") == [] })
            print("presence: a crashed gateway's entries were gone \(ContinuousClock.now - started) after it stopped (TTL 2 s)")
            #expect(try await !survivor.api("GET", "/api/v1/gateways").text.contains(doomed.gatewayID))
            for ws in sockets { await ws.close() }
            await doomed.stop()
        }
    }

    @Test("Redis killed and restarted: messages keep flowing, presence is degraded, then heals within a heartbeat")
    func redisRestartHeals() async throws {
        guard RedisTestEnvironment.requireURL() != nil, let binary = RedisTestEnvironment.requireServerBinary() else { return }
        let redis = OwnRedis(binary: binary, port: try await freePort())
        try await redis.start()
        let ttl = TimeAmount.seconds(3)  // heartbeat every second
        try await TestGateway.with(configure: { configurePresence(&$0, redis: redis.url, prefix: "heal", ttl: ttl) }) { gateway in
            var sockets: [TestWebSocket] = []
            for _ in 0..<5 {
                let ws = try await TestWebSocket.connect(port: gateway.port)
                _ = try await ws.subscribe(["heal.me"])
                sockets.append(ws)
            }
            #expect(try await eventually { try await gateway.presenceClients("heal.me")?.count == 5 })
            redis.kill()
            #expect(try await eventually { try await gateway.api("GET", "/readyz").text.contains("\"presence\":\"degraded\"") })
            #expect(try await gateway.api("GET", "/readyz").status == 200)
            #expect(try await gateway.metric("storm_redis_connected") == 0)
            #expect(try await gateway.api("GET", "/api/v1/channels/heal.me/presence").status == 503)
            // Messages keep flowing without Redis.
            #expect(try await gateway.publish("heal.me", "still here").status == 200)
            #expect(try await sockets[0].next("message").text.contains("still here"))
            // A client that leaves while Redis is away must not come back with it.
            await sockets.removeLast().close()
            #expect(await eventually { gateway.context.presence.localClientCount == 4 }, "the closed connection is still tracked")
            try await redis.start()
            let restarted = ContinuousClock.now
            var seen: [String]?
            // Until the resync is written the API answers 503 presence_unavailable; any 200 must be whole.
            var wrong: [String] = []
            #expect(
                try await eventually(timeout: .seconds(120)) {
                    let answer = try await gateway.api("GET", "/api/v1/channels/heal.me/presence")
                    if answer.status == 503 {
                        if !answer.text.contains("presence_unavailable") { wrong.append(answer.text) }
                        return false
                    }
                    seen = try await gateway.presenceClients("heal.me")
                    if answer.status == 200, seen?.count != 4 { wrong.append(answer.text) }
                    return seen?.count == 4
                }, "presence lists \(seen.map { "\($0.count) clients" } ?? "no answer (503)") after Redis came back, 4 expected")
            #expect(wrong.isEmpty, "presence answered a wrong list (or a 503 without presence_unavailable) after Redis came back: \(wrong.prefix(3))")
            print("presence: healed \(ContinuousClock.now - restarted) after Redis came back (heartbeat 1 s)")
            #expect(try await gateway.api("GET", "/readyz").text.contains("\"presence\":\"ok\""))
            #expect(try await gateway.metric("storm_redis_connected") == 1)
            #expect(try await gateway.metric("storm_presence_errors_total").map { $0 >= 0 } == true)
            for ws in sockets { await ws.close() }
        }
        redis.kill()
    }

    @Test("counts stay right with 2,000 WebSocket connections, written in a handful of batches")
    func thousandsOfConnections() async throws {
        guard let url = RedisTestEnvironment.requireURL() else { return }
        var logger = Logger(label: "presence-test")
        logger.logLevel = .warning
        ResourceLimits.raiseOpenFilesLimit(logger: logger)
        let prefix = uniquePrefix()
        let total = 2_000
        try await TestGateway.with(configure: {
            configurePresence(&$0, redis: url, prefix: prefix)
            $0.presence.batchInterval = .milliseconds(100)  // the default
        }) { gateway in
            let started = ContinuousClock.now
            let sockets = try await withThrowingTaskGroup(of: [TestWebSocket].self) { group in
                for worker in 0..<40 {
                    group.addTask {
                        var mine: [TestWebSocket] = []
                        for _ in stride(from: worker, to: total, by: 40) {
                            let ws = try await TestWebSocket.connect(port: gateway.port)
                            _ = try await ws.subscribe(["crowd"])
                            mine.append(ws)
                        }
                        return mine
                    }
                }
                var all: [TestWebSocket] = []
                for try await part in group { all += part }
                return all
            }
            let ramp = ContinuousClock.now - started
            #expect(try await eventually(timeout: .seconds(120)) { try await gateway.presenceStats("crowd").map { $0.clients == total && $0.users == total } ?? false })
            let batches = try await gateway.metric("storm_presence_batches_total") ?? 0
            // One batch per 100 ms of ramp at most, plus heartbeats: never one round trip per join.
            let rampSeconds = Double(ramp.components.seconds) + Double(ramp.components.attoseconds) / 1e18
            #expect(batches <= rampSeconds * 10 + 10, "\(batches) batches for \(total) joins over \(ramp)")
            print("presence: \(total) joins over \(ramp) written in \(Int(batches)) batches")
            for ws in sockets.prefix(total / 2) { await ws.close() }
            var seen: Int?
            #expect(
                try await eventually(timeout: .seconds(120)) {
                    seen = try await gateway.presenceStats("crowd")?.clients
                    return seen == total / 2
                }, "presence shows \(seen.map(String.init) ?? "no answer") clients after \(total / 2) of \(total) left")
            for ws in sockets.dropFirst(total / 2) { await ws.close() }
            #expect(
                try await eventually(timeout: .seconds(120)) {
                    seen = try await gateway.presenceStats("crowd")?.clients
                    return seen == 0
                }, "presence shows \(seen.map(String.init) ?? "no answer") clients after all left")
        }
    }

    @Test("disconnecting a user reaches its connections on two gateways, through routing and the broker")
    func userDisconnectAcrossGateways() async throws {
        guard let url = RedisTestEnvironment.requireURL() else { return }
        let prefix = uniquePrefix()
        let broker = MemoryBroker()
        try await TestGateway.with(broker: broker, configure: { configurePresence(&$0, redis: url, prefix: prefix) }) { a in
            try await TestGateway.with(broker: broker, configure: { configurePresence(&$0, redis: url, prefix: prefix) }) { b in
                // Named users without tokens: registered through the tracker's API, as a token's sub would be.
                let loop = MultiThreadedEventLoopGroup.singleton.next()
                let sessions = [FakeSession(), FakeSession(), FakeSession()]
                let bystander = FakeSession()
                let channel = try ChannelName(validating: "users.room")
                try await loop.submit {
                    let first = a.context.presence.connect(session: sessions[0], on: loop, user: "bob")
                    a.context.presence.join(first, channel: channel)
                    _ = b.context.presence.connect(session: sessions[1], on: loop, user: "bob")
                    _ = b.context.presence.connect(session: sessions[2], on: loop, user: "bob")
                    _ = b.context.presence.connect(session: bystander, on: loop, user: "alice")
                }.get()
                let store = a.context.presence.store
                #expect(await eventually { (try? store.gateways(ofUser: "bob")) == [a.gatewayID, b.gatewayID].sorted() })
                #expect(try await a.presenceClients("users.room")?.count == 1)
                let answer = try await a.api("POST", "/api/v1/users/bob/disconnect")
                #expect(answer.status == 200, "\(answer.text)")
                #expect(answer.text.contains(a.gatewayID) && answer.text.contains(b.gatewayID))
                #expect(await eventually { sessions.allSatisfy { $0.closed.withLockedValue { $0 } } })
                #expect(!bystander.closed.withLockedValue { $0 })

                // And a real WebSocket on B, disconnected by client id through A.
                let ws = try await TestWebSocket.connect(port: b.port)
                _ = try await ws.subscribe(["users.room"])
                var clients: [String] = []
                #expect(try await eventually {
                    clients = (try await a.presenceClients("users.room") ?? []).filter { $0.hasPrefix(b.gatewayID) }
                    return clients.count == 1
                })
                let client = try #require(clients.first)
                #expect(try await a.api("POST", "/api/v1/users/\(client)/disconnect").status == 200)
                var closeCode: UInt16?
                for _ in 0..<10 {
                    let frame = try await ws.readFrame()
                    if frame.opcode == 0x8 {
                        closeCode = frame.closeCode
                        break
                    }
                }
                #expect(closeCode == 1001)
            }
        }
    }

    @Test("an unreachable Redis leaves the gateway serving, with presence degraded")
    func unreachableRedis() async throws {
        let port = try await freePort()
        try await TestGateway.with(configure: { configurePresence(&$0, redis: "redis://127.0.0.1:\(port)", prefix: "none") }) { gateway in
            #expect(try await eventually { try await gateway.api("GET", "/readyz").text.contains("\"presence\":\"degraded\"") })
            let ws = try await TestWebSocket.connect(port: gateway.port)
            _ = try await ws.subscribe(["flows"])
            try await gateway.publish("flows", "yes")
            #expect(try await ws.next("message").text.contains("yes"))
            let answer = try await gateway.api("GET", "/api/v1/channels/flows/presence")
            #expect(answer.status == 503)
            #expect(answer.text.contains("presence_unavailable"))
            #expect(try await gateway.metric("storm_redis_connected") == 0)
            await ws.close()
        }
    }
}
