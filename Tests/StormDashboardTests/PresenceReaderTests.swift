import StormCore
import Testing

@testable import StormDashboard

/// Replies as redis-server 7.0 gave them for two gateways of a cluster with prefix `storm`, recorded
/// with stormd 0.1 (`--presence-channels '*'`), then cut down.
enum RecordedReplies {
    static func bulk(_ text: String) -> RedisReply { .string(Array(text.utf8)) }

    static let recordA =
        #"{"id":"5ec8a1c1df97","http":"http://127.0.0.1:40001","metrics":"http://127.0.0.1:40001/metrics","version":"0.1.0","started":1764403915000,"heartbeat":1764403925000,"presence":"ok"}"#
    static let recordB =
        #"{"id":"77aa01b2c3d4","http":"http://127.0.0.1:40002","metrics":"http://127.0.0.1:40002/metrics","version":"0.1.0","started":1764403916000,"heartbeat":1764403926000,"presence":"degraded"}"#

    /// `ZRANGE storm:gateways 0 -1`: three ids, one of which (`dead01`) has no record any more.
    static let ids = ["5ec8a1c1df97", "dead01", "77aa01b2c3d4"]
    /// `MGET storm:gateway:…` of those ids.
    static let records: RedisReply = .array([bulk(recordA), .null, bulk(recordB)])

    static func entry(_ client: String, user: String, gateway: String) -> RedisReply {
        bulk(#"{"client":"\#(client)","user":"\#(user)","gateway":"\#(gateway)","since":1764403915123,"info":{"transport":"websocket"}}"#)
    }
}

@Suite("Presence in Redis")
struct PresenceReaderTests {
    @Test("registry records become gateways; an expired record is left out")
    func discovery() {
        let gateways = PresenceKeys.gateways(ids: RecordedReplies.ids, records: RecordedReplies.records)
        #expect(gateways.map(\.id) == ["5ec8a1c1df97", "77aa01b2c3d4"])
        #expect(gateways[0].metricsURL == "http://127.0.0.1:40001/metrics")
        #expect(gateways[1].presence == "degraded")
    }

    @Test("a record without metrics URL falls back to http + /metrics; foreign values are ignored")
    func discoveryEdgeCases() {
        let old = DiscoveredGateway(json: Array(#"{"id":"g1","http":"http://h:1"}"#.utf8))
        #expect(old?.metricsURL == "http://h:1/metrics")
        #expect(DiscoveredGateway(json: Array("not json".utf8)) == nil)
        #expect(DiscoveredGateway(json: Array(#"{"id":"g2"}"#.utf8)) == nil, "no URL to poll")
        // A record stored under another id's key (hand-edited Redis) is not trusted.
        let mismatched = PresenceKeys.gateways(ids: ["other"], records: .array([RecordedReplies.bulk(RecordedReplies.recordA)]))
        #expect(mismatched.isEmpty)
        // A Redis error in place of the array yields nothing rather than a crash.
        #expect(PresenceKeys.gateways(ids: ["x"], records: .error("WRONGTYPE")).isEmpty)
    }

    @Test("a discovered gateway is polled at its advertised metrics URL and path")
    func targets() throws {
        let target = try GatewayTarget(discovered: DiscoveredGateway(id: "g", metricsURL: "http://10.0.0.5:9090/internal/metrics"))
        #expect(target.address == "10.0.0.5:9090")
        #expect(target.path == "/internal/metrics")
        #expect(target.registryID == "g")
        let configured = try #require(try GatewayTarget.parse(["http://10.0.0.5:9090"]).first)
        #expect(configured.key != target.key)
        let same = try GatewayTarget(discovered: DiscoveredGateway(id: "g", metricsURL: "http://10.0.0.5:9090/metrics"))
        #expect(configured.key == same.key, "a gateway given and registered is polled once")
    }

    @Test("SCAN pattern escapes glob characters of the prefix; SCAN replies decode")
    func scan() {
        #expect(PresenceKeys.presencePattern("storm") == "storm:presence:*")
        #expect(PresenceKeys.presencePattern("a*b[1]") == #"a\*b\[1\]:presence:*"#)
        let page = PresenceKeys.scanPage(.array([RecordedReplies.bulk("17"), .array([RecordedReplies.bulk("storm:presence:chat.lobby")])]))
        #expect(page?.cursor == "17")
        #expect(page?.keys == ["storm:presence:chat.lobby"])
        #expect(PresenceKeys.scanPage(.error("ERR")) == nil)
    }

    @Test("channels: clients and unique users of live gateways only, busiest first")
    func channels() {
        let live: Set<String> = ["gw1", "gw2"]
        let keys = ["storm:presence:chat.lobby", "storm:presence:news", "storm:presence:empty", "storm:presence:huge", "storm:presence:ghost"]
        let lengths: [RedisReply] = [.integer(4), .integer(1), .integer(0), .integer(250_000), .integer(1)]
        let values: [RedisReply?] = [
            .array([
                RecordedReplies.entry("gw1-1", user: "alice", gateway: "gw1"),
                RecordedReplies.entry("gw2-7", user: "alice", gateway: "gw2"),
                RecordedReplies.entry("gw2-8", user: "bob", gateway: "gw2"),
                // A crashed gateway's entry lingers until the hash expires: not counted.
                RecordedReplies.entry("gw9-1", user: "carol", gateway: "gw9"),
            ]),
            .array([RecordedReplies.entry("gw1-2", user: "gw1-2", gateway: "gw1"), RecordedReplies.bulk("garbage")]),
            nil,
            nil,  // too big to read this poll: its length is shown, users unknown
            .array([RecordedReplies.entry("gw9-2", user: "dave", gateway: "gw9")]),
        ]
        let channels = PresenceKeys.channels(keys: keys, prefix: "storm", lengths: lengths, values: values, live: live)
        #expect(channels.map(\.channel) == ["huge", "chat.lobby", "news"])
        #expect(channels[0] == ChannelFigures(channel: "huge", clients: 250_000, users: nil, gateways: nil))
        #expect(channels[1] == ChannelFigures(channel: "chat.lobby", clients: 3, users: 2, gateways: 2))
        #expect(channels[2] == ChannelFigures(channel: "news", clients: 1, users: 1, gateways: 1))
    }

    @Test("the store adds registered gateways, drops expired ones, keeps --gateway ones and survives Redis down")
    func store() throws {
        let given = try GatewayTarget.parse(["http://127.0.0.1:40001", "http://10.9.9.9:8080"])
        let store = DashboardStore(targets: given, presence: PresenceSnapshot(endpoint: "redis://127.0.0.1:6379/0"))
        var snapshot = PresenceSnapshot(endpoint: "redis://127.0.0.1:6379/0")
        snapshot.state = .up
        snapshot.gateways = PresenceKeys.gateways(ids: RecordedReplies.ids, records: RecordedReplies.records)
        store.record(snapshot)
        #expect(store.targets.map(\.address) == ["127.0.0.1:40001", "10.9.9.9:8080", "127.0.0.1:40002"], "A is given and registered: once")

        snapshot.gateways = [try #require(snapshot.gateways.first)]
        store.record(snapshot)
        #expect(store.targets.map(\.address) == ["127.0.0.1:40001", "10.9.9.9:8080"], "B's record expired: B leaves")

        store.record(PresenceSnapshot(endpoint: snapshot.endpoint, state: .down("connection refused")))
        #expect(store.targets.count == 2, "Redis down keeps the last list")
        let frame = store.frame(wallClock: 0)
        #expect(frame.presence?.state == .down("connection refused"))
        #expect(frame.presence?.gateways.count == 1, "and the last figures")
    }

    @Test("the channels view with --redis: one row per channel, sorted, filtered; Redis state in the header")
    func channelsView() {
        var presence = PresenceSnapshot(endpoint: "redis://127.0.0.1:6379/0", state: .up)
        presence.gateways = [DiscoveredGateway(id: "gw1", metricsURL: "http://a:1/metrics")]
        presence.channels = [
            ChannelFigures(channel: "chat.lobby", clients: 12, users: 9, gateways: 2),
            ChannelFigures(channel: "news", clients: 40, users: 40, gateways: 1),
            ChannelFigures(channel: "chat.eu", clients: 3, users: 3, gateways: 1),
        ]
        let frame = DashboardFrame(gateways: [], cluster: ClusterFigures([]), deliveryHistory: [], wallClock: 0, generation: 1, presence: presence)
        var state = ViewState.withPresenceChannels()
        state.view = .channels
        let canvas = TextCanvas(rows: 20, columns: 120)
        Layout.render(frame, state: state, interval: 1, on: canvas)
        let rows = canvas.lines[Layout.headerRows...].filter { $0.hasPrefix("chat") || $0.hasPrefix("news") }
        #expect(rows.map { $0.split(separator: " ").first.map(String.init) ?? "" } == ["news", "chat.lobby", "chat.eu"])
        #expect(canvas.text.contains("sort: CLIENTS"), "busiest first by default")
        #expect(canvas.text.contains("up  1 registered  3 channels"))
        #expect(Layout.columnCount(state) == Layout.channelColumns.count)

        state.filter = "chat"
        #expect(Layout.channelRows(presence.channels, state: state).map(\.channel) == ["chat.lobby", "chat.eu"])
        #expect(Layout.rowCount(frame, state: state) == 2)
        state.sortColumn[.channels] = 0
        state.filter = ""
        #expect(Layout.channelRows(presence.channels, state: state).map(\.channel) == ["chat.eu", "chat.lobby", "news"])

        var down = frame
        down.presence?.state = .down("cannot connect")
        let downCanvas = TextCanvas(rows: 20, columns: 120)
        Layout.render(down, state: ViewState(), interval: 1, on: downCanvas)
        #expect(downCanvas.text.contains("Redis   DOWN cannot connect"))
    }

    @Test("batch reports list the channels: text (top ones) and JSON (all, null without --redis)")
    func reports() {
        var presence = PresenceSnapshot(endpoint: "redis://127.0.0.1:6379/0", state: .up)
        presence.channels = [ChannelFigures(channel: "news", clients: 40, users: nil, gateways: nil)]
        let frame = DashboardFrame(gateways: [], cluster: ClusterFigures([]), deliveryHistory: [], wallClock: 0, generation: 1, presence: presence)
        let text = BatchReport.text(frame, interval: 1)
        #expect(text.contains("presence: redis://127.0.0.1:6379/0 up, 0 gateways registered, 1 channels"))
        #expect(text.contains("news"))
        let json = BatchReport.json(frame, interval: 1)
        #expect(JSONScanner.isValidDocument(Array(json.utf8)))
        #expect(json.contains(#""channels":[{"channel":"news","clients":40,"users":null,"gateways":null}]"#))
        var plain = frame
        plain.presence = nil
        #expect(BatchReport.json(plain, interval: 1).contains(#""presence":null"#))
    }
}
