import Foundation
import StormCore
import Testing

@testable import StormDashboard

/// A history consumer's `/metrics`, as stormd's `ConsumerMetrics` writes it.
func consumerExposition(lag: Double, rows: Double, batches: (count: Double, sum: Double), insertBuckets: [Double], failures: Double = 0, postgres: Double = 1) throws -> PrometheusExposition {
    try PrometheusTextParser.parse(
        """
        # TYPE storm_consumer_lag_messages gauge
        storm_consumer_lag_messages \(lag)
        # TYPE storm_consumer_rows_total counter
        storm_consumer_rows_total \(rows)
        # TYPE storm_consumer_batch_size histogram
        storm_consumer_batch_size_bucket{le="100"} \(batches.count)
        storm_consumer_batch_size_bucket{le="+Inf"} \(batches.count)
        storm_consumer_batch_size_sum \(batches.sum)
        storm_consumer_batch_size_count \(batches.count)
        # TYPE storm_consumer_insert_duration_seconds histogram
        storm_consumer_insert_duration_seconds_bucket{le="0.001"} \(insertBuckets[0])
        storm_consumer_insert_duration_seconds_bucket{le="0.01"} \(insertBuckets[1])
        storm_consumer_insert_duration_seconds_bucket{le="+Inf"} \(insertBuckets[2])
        storm_consumer_insert_duration_seconds_sum 0
        storm_consumer_insert_duration_seconds_count \(insertBuckets[2])
        # TYPE storm_consumer_failures_total counter
        storm_consumer_failures_total{reason="postgres"} \(failures)
        storm_consumer_failures_total{reason="nats"} 0
        # TYPE storm_postgres_connected gauge
        storm_postgres_connected \(postgres)

        """)
}

/// A gateway's `/metrics` with the stream gauges stormd samples from JetStream.
func streamExposition(
    replicas: Double, configured: Double, leader: String = "n1", messages: Double, maxMessages: Double = -1, bytes: Double = 1000,
    maxBytes: Double = -1, rateLimited: Double = 0, clustered: Bool = true
) throws -> PrometheusExposition {
    let current = leader.isEmpty ? "" : "storm_stream_leader_info{leader=\"\(leader)\"} 1\n"
    let leaders = clustered ? "storm_stream_leader_info{leader=\"old\"} 0\n" + current : ""
    return try PrometheusTextParser.parse(
        """
        # TYPE storm_connections gauge
        storm_connections{transport="websocket"} 1
        # TYPE storm_broker_connected gauge
        storm_broker_connected 1
        # TYPE storm_publish_rate_limited_total counter
        storm_publish_rate_limited_total{transport="websocket"} \(rateLimited)
        # TYPE storm_stream_replicas gauge
        storm_stream_replicas \(replicas)
        storm_stream_replicas_configured \(configured)
        storm_stream_messages \(messages)
        storm_stream_bytes \(bytes)
        storm_stream_max_messages \(maxMessages)
        storm_stream_max_bytes \(maxBytes)
        storm_stream_clustered \(clustered ? 1 : 0)

        """ + leaders)
}

@Suite("Consumers, broker and connections views")
struct ClusterViewTests {
    @Test("consumer figures: lag, rows/s, mean batch, insert p95 and failures from two polls, /readyz as read")
    func consumerFigures() throws {
        let before = ScrapeSample(
            exposition: try consumerExposition(lag: 10, rows: 1000, batches: (10, 1000), insertBuckets: [10, 10, 10]), elapsed: 10, wallClock: 10, ready: true)
        var after = ScrapeSample(
            exposition: try consumerExposition(lag: 250, rows: 3000, batches: (14, 3000), insertBuckets: [10, 14, 14], failures: 2), elapsed: 12,
            wallClock: 12)
        after.ready = false
        after.readyReason = "PostgreSQL is not answering"
        let figures = ConsumerFigures(address: "c:1", url: "http://c:1", latest: after, previous: before)
        #expect(figures.state == .up)
        #expect(figures.lag == 250)
        #expect(figures.rowsPerSecond == 1000)
        #expect(figures.batchSize == 500, "2000 messages in 4 batches")
        let p95 = try #require(figures.p95InsertSeconds)
        #expect(p95 > 0.001 && p95 <= 0.01, "the 4 transactions of the interval took 1-10 ms")
        #expect(figures.failuresPerSecond == 1)
        #expect(figures.failuresTotal == 2)
        #expect(figures.postgresConnected == true)
        #expect(figures.readyLabel == "NOT READY")
        #expect(figures.readyReason == "PostgreSQL is not answering")
        let first = ConsumerFigures(address: "c:1", url: "http://c:1", latest: before, previous: nil)
        #expect(first.rowsPerSecond == nil && first.batchSize == nil, "rates need two polls")
        #expect(first.readyLabel == "ready")
    }

    @Test("stream figures: replicas in sync and configured, leader, caps and how full")
    func streamFigures() throws {
        let stream = try #require(StreamFigures(try streamExposition(replicas: 2, configured: 3, messages: 950, maxMessages: 1000, bytes: 10, maxBytes: 100)))
        #expect(stream.replicas == 2 && stream.configuredReplicas == 3)
        #expect(stream.underReplicated)
        #expect(stream.leader == "n1", "the series at 1, not an old leader's at 0")
        #expect(stream.fullPercent == 95, "the tightest cap counts")
        let unlimited = try #require(StreamFigures(try streamExposition(replicas: 1, configured: 1, messages: 5)))
        #expect(unlimited.fullPercent == nil && unlimited.maxMessages == nil)
        #expect(!unlimited.underReplicated)
        #expect(StreamFigures(try exposition(published: 0, delivered: 0)) == nil, "no stream gauges: no stream (memory broker)")
        let single = try #require(StreamFigures(try streamExposition(replicas: 1, configured: 1, messages: 5, clustered: false)))
        #expect(single.leader == nil && single.leaderLabel == "standalone" && !single.leaderless, "a single server names no leader, and needs none")
    }

    @Test("channels from GET /api/v1/channels: messages/s from two polls, deliveries = messages x subscribers")
    func channelRates() throws {
        let first = try ChannelSample.decode(Array(#"{"gateway":"g","channels":[{"channel":"a","subscribers":3,"messages":100},{"channel":"b","subscribers":1,"messages":7}]}"#.utf8), elapsed: 1)
        let second = try ChannelSample.decode(Array(#"{"gateway":"g","channels":[{"channel":"a","subscribers":3,"messages":300},{"channel":"b","subscribers":1,"messages":9},{"channel":"c","subscribers":2}]}"#.utf8), elapsed: 3)
        let rates = ChannelSample.rates(gateway: "g:1", latest: second, previous: first)
        #expect(rates.map(\.channel) == ["a", "b", "c"])
        #expect(rates[0].messagesPerSecond == 100 && rates[0].deliveriesPerSecond == 300)
        #expect(rates[1].deliveriesPerSecond == 1)
        #expect(rates[2].messagesPerSecond == nil, "an older stormd without messages: subscribers only")
        #expect(throws: StormError.self) { try ChannelSample.decode(Array("{\"channels\":3}".utf8), elapsed: 0) }

        var state = ViewState()
        state.view = .connections
        let rows = Layout.connectionRows(rates + [ChannelRate(channel: "z", gateway: "h:2", subscribers: 9, messagesPerSecond: 1)], state: state)
        #expect(rows.map(\.channel) == ["a", "z", "b", "c"], "busiest first by OUT/s, unknown last")
        state.filter = "h:2"
        #expect(Layout.connectionRows(rates + [ChannelRate(channel: "z", gateway: "h:2", subscribers: 9, messagesPerSecond: 1)], state: state).map(\.channel) == ["z"])
    }

    @Test("alerts: gateway and consumer down or not ready, lag at the threshold, under-replicated, store over the threshold")
    func alerts() throws {
        let gatewaySample = ScrapeSample(exposition: try streamExposition(replicas: 2, configured: 3, messages: 95, maxMessages: 100), elapsed: 1, wallClock: 1)
        let up = GatewayFigures(address: "a:1", url: "http://a:1", latest: gatewaySample, previous: nil)
        var down = GatewayFigures(address: "b:1", url: "http://b:1")
        down.state = .down("connection refused")
        var lagging = ConsumerFigures(address: "c:1", url: "http://c:1")
        lagging.state = .up
        lagging.lag = 10_000
        lagging.ready = false
        lagging.readyReason = "NATS is away"
        let kinds = Alert.evaluate(gateways: [up, down], consumers: [lagging], thresholds: AlertThresholds()).map(\.kind)
        #expect(kinds == [.gatewayDown, .consumerNotReady, .consumerLag, .underReplicated, .storeFull])
        let relaxed = Alert.evaluate(gateways: [up], consumers: [lagging], thresholds: AlertThresholds(consumerLag: 10_001, storePercent: 95)).map(\.kind)
        #expect(relaxed == [.consumerNotReady, .underReplicated], "lag below, fullness not above the thresholds")
        let leaderless = GatewayFigures(
            address: "a:1", url: "http://a:1",
            latest: ScrapeSample(exposition: try streamExposition(replicas: 0, configured: 3, leader: "", messages: 1), elapsed: 1, wallClock: 1), previous: nil)
        #expect(leaderless.stream?.leaderLabel == "NONE")
        #expect(Alert.evaluate(gateways: [leaderless], consumers: [], thresholds: AlertThresholds()).map(\.kind) == [.noLeader, .underReplicated])
        let healthy = GatewayFigures(
            address: "a:1", url: "http://a:1",
            latest: ScrapeSample(exposition: try streamExposition(replicas: 3, configured: 3, messages: 1), elapsed: 1, wallClock: 1), previous: nil)
        #expect(Alert.evaluate(gateways: [healthy], consumers: [], thresholds: AlertThresholds()).isEmpty)
    }

    @Test("keys 4-6 switch to the new views; Right/Left step a replay and pause it")
    func keys() {
        var state = ViewState()
        _ = state.handle(.character("4"), pageSize: 10, rowCount: 3)
        #expect(state.view == .consumers)
        #expect(Layout.sortTitle(state).title == "LAG", "the consumers view starts sorted by lag")
        _ = state.handle(.character("5"), pageSize: 10, rowCount: 3)
        #expect(state.view == .broker)
        _ = state.handle(.character("6"), pageSize: 10, rowCount: 3)
        #expect(state.view == .connections)
        #expect(Layout.sortTitle(state).title == "OUT/s")
        _ = state.handle(.tab, pageSize: 10, rowCount: 3)
        #expect(state.view == .gateways, "Tab wraps after the last view")
        #expect(state.handle(.right, pageSize: 10, rowCount: 3) == .step(1))
        #expect(state.paused)
        #expect(state.handle(.character(","), pageSize: 10, rowCount: 3) == .step(-1))
        _ = state.handle(.character(" "), pageSize: 10, rowCount: 3)
        #expect(!state.paused, "space resumes")
        state.view = .consumers
        for _ in Layout.consumerColumns.indices { _ = state.handle(.character("s"), pageSize: 10, rowCount: 3) }
        #expect(state.currentSortColumn == 3, "s cycles through the consumer columns and wraps")
    }

    func store() throws -> DashboardStore {
        let gateway = target(8080)
        let consumer = target(8081)
        let store = DashboardStore(targets: [gateway, target(8082)], consumers: [consumer], thresholds: AlertThresholds(consumerLag: 100))
        store.record(gateway, .success(ScrapeSample(exposition: try streamExposition(replicas: 1, configured: 1, messages: 10, rateLimited: 1), elapsed: 1, wallClock: 1)))
        store.record(gateway, .success(ScrapeSample(exposition: try streamExposition(replicas: 1, configured: 1, messages: 30, rateLimited: 5), elapsed: 2, wallClock: 2)))
        store.record(target(8082), .failure(StormError(.connection, "connection refused")))
        store.recordChannels(gateway, .success(ChannelSample(elapsed: 1, items: [.init(channel: "news", subscribers: 2, messages: 10)])))
        store.recordChannels(gateway, .success(ChannelSample(elapsed: 2, items: [.init(channel: "news", subscribers: 2, messages: 30)])))
        store.recordConsumer(
            consumer, .success(ScrapeSample(exposition: try consumerExposition(lag: 5, rows: 10, batches: (1, 10), insertBuckets: [1, 1, 1]), elapsed: 1, wallClock: 1, ready: true)))
        store.recordConsumer(
            consumer, .success(ScrapeSample(exposition: try consumerExposition(lag: 500, rows: 40, batches: (2, 40), insertBuckets: [1, 2, 2]), elapsed: 2, wallClock: 2, ready: true)))
        return store
    }

    @Test("the store's frame has every view's figures and the alerts")
    func frame() throws {
        let frame = try store().frame(wallClock: 2)
        #expect(frame.consumers.first?.lag == 500)
        #expect(frame.consumers.first?.rowsPerSecond == 30)
        #expect(frame.channelRates == [ChannelRate(channel: "news", gateway: "127.0.0.1:8080", subscribers: 2, messagesPerSecond: 20)])
        #expect(frame.gateways.first?.rateLimitedPerSecond == 4)
        #expect(frame.gateways.first?.stream?.messages == 30)
        #expect(frame.alerts.map(\.kind) == [.gatewayDown, .consumerLag])

        for (view, expected) in [(View.consumers, ["CONSUMER", "P95 INS", "127.0.0.1:8081", "ready"]), (.broker, ["REPLICAS", "LEADER", "1/1", "n1"]), (.connections, ["CHANNEL", "news", "rate-limited 4/s (5)"])] {
            let canvas = TextCanvas(rows: 24, columns: 140)
            var state = ViewState()
            state.view = view
            Layout.render(frame, state: state, interval: 1, on: canvas)
            for text in expected { #expect(canvas.text.contains(text), "\(view) shows \(text)") }
            #expect(canvas.lines[5].contains("Alerts") && canvas.lines[5].contains("lag 500 >= 100"), "the alerts are in the header of every view")
        }
        let text = BatchReport.text(frame, interval: 1)
        #expect(text.contains("alerts: gateway 127.0.0.1:8082 DOWN"))
        #expect(text.contains("stream: replicas 1/1  leader n1"))
        #expect(text.contains("127.0.0.1:8081"))
        let json = BatchReport.json(frame, interval: 1)
        #expect(JSONScanner.isValidDocument(Array(json.utf8)))
        #expect(json.contains(#""lag_messages":500"#))
        #expect(json.contains(#""deliveries_per_second":40"#))
        #expect(json.contains(#""kind":"consumer_lag""#))
        #expect(json.contains(#""replicas_configured":1"#))
    }

    @Test("--record then --replay: the replayed frame reports exactly what the live one did")
    func recordReplay() throws {
        let store = try store()
        var lines: [UInt8] = []
        lines += try Recording.line(Recording.poll(store.snapshot, time: 2, interval: 1))
        store.record(target(8080), .success(ScrapeSample(exposition: try streamExposition(replicas: 0, configured: 1, messages: 90, rateLimited: 5), elapsed: 3, wallClock: 3)))
        lines += try Recording.line(Recording.poll(store.snapshot, time: 3, interval: 1))
        let live = store.frame(wallClock: 3)

        let polls = try Recording.read(lines, file: "test.jsonl")
        #expect(polls.count == 2)
        let frames = try Recording.frames(polls, thresholds: AlertThresholds(consumerLag: 100))
        #expect(frames.count == 2)
        #expect(BatchReport.json(frames[1], interval: 1) == BatchReport.json(live, interval: 1))
        #expect(frames[1].alerts.map(\.kind).contains(.underReplicated))
        #expect(frames[0].gateways.first?.stream?.messages == 30, "each line replays its own poll")
        #expect(frames[1].deliveryHistory.count == 2, "the sparkline grows one sample per line")
        #expect(throws: StormError.self) { try Recording.read(Array("{\"not\":1}\n".utf8), file: "bad.jsonl") }
        #expect(throws: StormError.self) { try Recording.read([], file: "empty.jsonl") }
    }
}
