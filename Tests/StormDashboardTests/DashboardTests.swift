import StormCore
import Testing

@testable import StormDashboard

/// A gateway's `/metrics` at one instant, as stormd writes it (only what the figures read).
func exposition(
    published: Double, delivered: Double, webSocket: Double = 2, sse: Double = 1, fanoutBuckets: [Double] = [0, 0, 0, 0],
    startTime: Double? = nil, memory: Double? = nil, cpu: Double? = nil, redis: Double? = nil
) throws -> PrometheusExposition {
    var text = """
        # TYPE storm_connections gauge
        storm_connections{transport="websocket"} \(webSocket)
        storm_connections{transport="sse"} \(sse)
        # TYPE storm_messages_published_total counter
        storm_messages_published_total{transport="http"} \(published)
        storm_messages_published_total{transport="websocket"} 0
        # TYPE storm_messages_delivered_total counter
        storm_messages_delivered_total{transport="websocket"} \(delivered)
        storm_messages_delivered_total{transport="sse"} 0
        # TYPE storm_broker_messages_received_total counter
        storm_broker_messages_received_total \(published)
        # TYPE storm_messages_dropped_total counter
        storm_messages_dropped_total{reason="slow_client"} 0
        # TYPE storm_client_errors_total counter
        storm_client_errors_total{code="bad_request"} 3
        storm_client_errors_total{code="invalid_channel"} 1
        # TYPE storm_fanout_latency_seconds histogram
        storm_fanout_latency_seconds_bucket{le="0.001"} \(fanoutBuckets[0])
        storm_fanout_latency_seconds_bucket{le="0.01"} \(fanoutBuckets[1])
        storm_fanout_latency_seconds_bucket{le="0.1"} \(fanoutBuckets[2])
        storm_fanout_latency_seconds_bucket{le="+Inf"} \(fanoutBuckets[3])
        storm_fanout_latency_seconds_sum 0
        storm_fanout_latency_seconds_count \(fanoutBuckets[3])
        # TYPE storm_broker_connected gauge
        storm_broker_connected 1
        storm_broker_subscriptions 4
        storm_build_info{version="0.1.0",instance_id="abc"} 1

        """
    if let startTime { text += "process_start_time_seconds \(startTime)\n" }
    if let memory { text += "process_resident_memory_bytes \(memory)\n" }
    if let cpu { text += "process_cpu_seconds_total \(cpu)\n" }
    if let redis { text += "storm_redis_connected \(redis)\n" }
    return try PrometheusTextParser.parse(text)
}

func target(_ port: Int) -> GatewayTarget {
    GatewayTarget(endpoint: StormEndpoint(host: "127.0.0.1", port: port))
}

@Suite("Gateway figures")
struct GatewayFiguresTests {
    @Test("rates are counter deltas over the time between the two scrapes")
    func rates() throws {
        let before = ScrapeSample(exposition: try exposition(published: 100, delivered: 1000, cpu: 10), elapsed: 10, wallClock: 1000)
        let after = ScrapeSample(
            exposition: try exposition(published: 150, delivered: 1500, startTime: 400, memory: 50e6, cpu: 10.5), elapsed: 12, wallClock: 1002)
        let figures = GatewayFigures(address: "a", url: "http://a", latest: after, previous: before)
        #expect(figures.state == .up)
        #expect(figures.publishedPerSecond == 25)
        #expect(figures.deliveredPerSecond == 250)
        #expect(figures.brokerReceivedPerSecond == 25)
        #expect(figures.fanoutRatio == 10)
        #expect(figures.cpuPercent == 25)
        #expect(figures.uptimeSeconds == 602)
        #expect(figures.residentMemoryBytes == 50e6)
        #expect(figures.connections == 3)
        #expect(figures.version == "0.1.0")
        #expect(figures.clientErrorsTotal == 4)
        #expect(figures.topClientError?.code == "bad_request")
        #expect(figures.brokerSubscriptions == 4)
        #expect(figures.redisConnected == nil, "a gateway without presence support has no Redis state")
    }

    @Test("the first scrape has gauges but no rates")
    func firstScrape() throws {
        let only = ScrapeSample(exposition: try exposition(published: 100, delivered: 1000), elapsed: 1, wallClock: 1)
        let figures = GatewayFigures(address: "a", url: "http://a", latest: only, previous: nil)
        #expect(figures.connections == 3)
        #expect(figures.deliveredPerSecond == nil)
        #expect(figures.p95FanoutSeconds == nil)
        #expect(figures.uptimeSeconds == nil, "no process metrics, no uptime")
    }

    @Test("a restarted gateway's counters count from zero")
    func restart() throws {
        let before = ScrapeSample(exposition: try exposition(published: 5000, delivered: 9000), elapsed: 0, wallClock: 0)
        let after = ScrapeSample(exposition: try exposition(published: 10, delivered: 20), elapsed: 1, wallClock: 1)
        let figures = GatewayFigures(address: "a", url: "http://a", latest: after, previous: before)
        #expect(figures.publishedPerSecond == 10)
        #expect(figures.deliveredPerSecond == 20)
    }

    @Test("p95 comes from the observations between the two scrapes only")
    func windowedPercentile() throws {
        // 100 fast observations before; then 10 slow ones (all in (0.01, 0.1]).
        let before = ScrapeSample(exposition: try exposition(published: 0, delivered: 0, fanoutBuckets: [100, 100, 100, 100]), elapsed: 0, wallClock: 0)
        let after = ScrapeSample(exposition: try exposition(published: 0, delivered: 0, fanoutBuckets: [100, 100, 110, 110]), elapsed: 1, wallClock: 1)
        let figures = GatewayFigures(address: "a", url: "http://a", latest: after, previous: before)
        let p95 = try #require(figures.p95FanoutSeconds)
        #expect(p95 > 0.01 && p95 <= 0.1)
        let idle = GatewayFigures(address: "a", url: "http://a", latest: before, previous: before)
        #expect(idle.p95FanoutSeconds == nil, "no observations in the interval, no percentile")
    }

    @Test("a failed poll shows the gateway down and forgets its samples")
    func downAndBack() throws {
        var tracker = GatewayTracker(target: target(8080))
        #expect(tracker.figures.state == .waiting)
        tracker.record(ScrapeSample(exposition: try exposition(published: 0, delivered: 0), elapsed: 0, wallClock: 0))
        tracker.record(ScrapeSample(exposition: try exposition(published: 10, delivered: 10), elapsed: 1, wallClock: 1))
        #expect(tracker.figures.deliveredPerSecond == 10)
        tracker.recordFailure("connection refused")
        #expect(tracker.figures.state == .down("connection refused"))
        #expect(tracker.figures.connections == nil)
        tracker.record(ScrapeSample(exposition: try exposition(published: 500, delivered: 500), elapsed: 10, wallClock: 10))
        #expect(tracker.figures.state == .up)
        #expect(tracker.figures.deliveredPerSecond == nil, "no rate across the outage")
    }

    @Test("cluster totals add up gateways that answer; p95 from all observations together")
    func cluster() throws {
        let quietBefore = ScrapeSample(exposition: try exposition(published: 0, delivered: 0, fanoutBuckets: [0, 0, 0, 0], redis: 1), elapsed: 0, wallClock: 0)
        let quietAfter = ScrapeSample(exposition: try exposition(published: 10, delivered: 100, fanoutBuckets: [90, 90, 90, 90], redis: 1), elapsed: 1, wallClock: 1)
        let slowBefore = ScrapeSample(exposition: try exposition(published: 0, delivered: 0, redis: 0), elapsed: 0, wallClock: 0)
        let slowAfter = ScrapeSample(exposition: try exposition(published: 5, delivered: 50, fanoutBuckets: [0, 0, 10, 10], redis: 0), elapsed: 1, wallClock: 1)
        var down = GatewayFigures(address: "c", url: "http://c")
        down.state = .down("timeout")
        let gateways = [
            GatewayFigures(address: "a", url: "http://a", latest: quietAfter, previous: quietBefore),
            GatewayFigures(address: "b", url: "http://b", latest: slowAfter, previous: slowBefore),
            down,
        ]
        let cluster = ClusterFigures(gateways)
        #expect(cluster.gatewaysUp == 2 && cluster.gatewaysDown == 1)
        #expect(cluster.publishedPerSecond == 15)
        #expect(cluster.deliveredPerSecond == 150)
        #expect(cluster.connections == 6)
        #expect(cluster.brokersConnected == 2 && cluster.brokersKnown == 2)
        #expect(cluster.redisConnected == 1 && cluster.redisKnown == 2)
        // 100 observations: 90 under 1 ms, 10 in (10 ms, 100 ms]; rank 95 is in the slow bucket.
        let p95 = try #require(cluster.p95FanoutSeconds)
        #expect(p95 > 0.01 && p95 <= 0.1)
    }

    @Test("gateways from flags and STORM_GATEWAYS: comma lists, duplicates dropped, bad URLs refused")
    func targets() throws {
        let parsed = try GatewayTarget.parse(["http://127.0.0.1:8080, 127.0.0.1:8081", "http://127.0.0.1:8080"])
        #expect(parsed.map(\.address) == ["127.0.0.1:8080", "127.0.0.1:8081"])
        // https is spoken (StormCore's clients do TLS with the system's trust roots); other schemes are not.
        #expect(try GatewayTarget.parse(["https://secure:8443"]).map(\.endpoint.usesTLS) == [true])
        #expect(throws: StormError.self) { try GatewayTarget.parse(["ftp://secure:443"]) }
        #expect(try GatewayTarget.parse([" , "]).isEmpty)
    }
}

@Suite("Keys")
struct KeyTests {
    @Test("q quits, also from the help screen; Ctrl-C as a byte quits")
    func quit() {
        var state = ViewState()
        #expect(state.handle(.character("q"), pageSize: 10, rowCount: 3) == .quit)
        state.showingHelp = true
        #expect(state.handle(.character("q"), pageSize: 10, rowCount: 3) == .quit)
        var fresh = ViewState()
        #expect(fresh.handle(.interrupt, pageSize: 10, rowCount: 3) == .quit)
    }

    @Test("1-6 and Tab switch views; Shift-Tab goes back")
    func views() {
        var state = ViewState()
        _ = state.handle(.character("2"), pageSize: 10, rowCount: 3)
        #expect(state.view == .channels)
        _ = state.handle(.character("3"), pageSize: 10, rowCount: 3)
        #expect(state.view == .errors)
        _ = state.handle(.tab, pageSize: 10, rowCount: 3)
        #expect(state.view == .consumers)
        _ = state.handle(.backTab, pageSize: 10, rowCount: 3)
        #expect(state.view == .errors)
        _ = state.handle(.character("1"), pageSize: 10, rowCount: 3)
        _ = state.handle(.backTab, pageSize: 10, rowCount: 3)
        #expect(state.view == .connections, "Shift-Tab from the first view wraps to the last")
        _ = state.handle(.character("9"), pageSize: 10, rowCount: 3)
        #expect(state.view == .connections, "no view 9")
    }

    @Test("s cycles the sort column of the current view, o reverses it")
    func sorting() {
        var state = ViewState()
        _ = state.handle(.character("s"), pageSize: 10, rowCount: 3)
        #expect(state.currentSortColumn == 1)
        _ = state.handle(.character("o"), pageSize: 10, rowCount: 3)
        #expect(state.currentSortReversed)
        _ = state.handle(.character("S"), pageSize: 10, rowCount: 3)
        #expect(state.currentSortColumn == 0)
        #expect(!state.currentSortReversed, "a new column starts in its natural order")
        for _ in Layout.columns(.gateways).indices { _ = state.handle(.character("s"), pageSize: 10, rowCount: 3) }
        #expect(state.currentSortColumn == 0, "s wraps around")
        _ = state.handle(.character("2"), pageSize: 10, rowCount: 3)
        #expect(state.currentSortColumn == 0, "each view keeps its own sort")
    }

    @Test("/ edits a filter: Enter applies, Esc cancels, Backspace deletes, Esc clears")
    func filter() {
        var state = ViewState()
        _ = state.handle(.character("/"), pageSize: 10, rowCount: 3)
        for character in "80x" { _ = state.handle(.character(character), pageSize: 10, rowCount: 3) }
        _ = state.handle(.backspace, pageSize: 10, rowCount: 3)
        #expect(state.editingFilter == "80")
        #expect(state.handle(.character("q"), pageSize: 10, rowCount: 3) == .none, "q is text while typing")
        _ = state.handle(.enter, pageSize: 10, rowCount: 3)
        #expect(state.filter == "80q")
        #expect(state.editingFilter == nil)
        _ = state.handle(.character("/"), pageSize: 10, rowCount: 3)
        _ = state.handle(.character("z"), pageSize: 10, rowCount: 3)
        _ = state.handle(.escape, pageSize: 10, rowCount: 3)
        #expect(state.filter == "80q", "Esc while typing keeps the old filter")
        _ = state.handle(.escape, pageSize: 10, rowCount: 3)
        #expect(state.filter.isEmpty)
    }

    @Test("scrolling stays within the rows")
    func scrolling() {
        var state = ViewState()
        _ = state.handle(.pageDown, pageSize: 5, rowCount: 12)
        #expect(state.scroll == 5)
        _ = state.handle(.pageDown, pageSize: 5, rowCount: 12)
        #expect(state.scroll == 7, "the last page is full")
        _ = state.handle(.down, pageSize: 5, rowCount: 12)
        #expect(state.scroll == 7)
        _ = state.handle(.up, pageSize: 5, rowCount: 12)
        #expect(state.scroll == 6)
        _ = state.handle(.home, pageSize: 5, rowCount: 12)
        #expect(state.scroll == 0)
        _ = state.handle(.up, pageSize: 5, rowCount: 12)
        #expect(state.scroll == 0)
        _ = state.handle(.end, pageSize: 5, rowCount: 3)
        #expect(state.scroll == 0, "fewer rows than a page never scroll")
    }

    @Test("p pauses and resumes; ? opens the help and any key closes it")
    func pauseAndHelp() {
        var state = ViewState()
        _ = state.handle(.character("p"), pageSize: 5, rowCount: 1)
        #expect(state.paused)
        _ = state.handle(.character("?"), pageSize: 5, rowCount: 1)
        #expect(state.showingHelp)
        _ = state.handle(.character("2"), pageSize: 5, rowCount: 1)
        #expect(!state.showingHelp)
        #expect(state.view == .gateways, "the key that closes the help does nothing else")
        _ = state.handle(.character("p"), pageSize: 5, rowCount: 1)
        #expect(!state.paused)
    }
}

/// A canvas that keeps text, to check the layout without a terminal.
final class TextCanvas: Canvas {
    let rows: Int
    let columns: Int
    let unicode = true
    var cells: [[Character]]

    init(rows: Int, columns: Int) {
        self.rows = rows
        self.columns = columns
        cells = Array(repeating: Array(repeating: " ", count: columns), count: rows)
    }

    func put(_ row: Int, _ column: Int, _ text: String, _ style: TextStyle) {
        guard row >= 0, row < rows else { return }
        for (offset, character) in text.enumerated() where column + offset < columns && column + offset >= 0 {
            cells[row][column + offset] = character
        }
    }

    var lines: [String] { cells.map { String(String($0).reversed().drop { $0 == " " }.reversed()) } }
    var text: String { lines.joined(separator: "\n") }
}

@Suite("Layout")
struct LayoutTests {
    func frame() throws -> DashboardFrame {
        let before = ScrapeSample(exposition: try exposition(published: 0, delivered: 0), elapsed: 0, wallClock: 0)
        let busy = ScrapeSample(exposition: try exposition(published: 100, delivered: 2000, memory: 64 * 1024 * 1024), elapsed: 1, wallClock: 1)
        let idle = ScrapeSample(exposition: try exposition(published: 1, delivered: 5), elapsed: 1, wallClock: 1)
        var down = GatewayFigures(address: "10.0.0.9:8080", url: "http://10.0.0.9:8080")
        down.state = .down("connection refused")
        let gateways = [
            GatewayFigures(address: "10.0.0.1:8080", url: "http://10.0.0.1:8080", latest: idle, previous: before),
            down,
            GatewayFigures(address: "10.0.0.2:8080", url: "http://10.0.0.2:8080", latest: busy, previous: before),
        ]
        return DashboardFrame(gateways: gateways, cluster: ClusterFigures(gateways), deliveryHistory: [nil, 0, 1000, 2005], wallClock: 0, generation: 4)
    }

    @Test("the gateways view: header totals, one row per gateway, DOWN with its reason")
    func gatewaysView() throws {
        let canvas = TextCanvas(rows: 20, columns: 120)
        Layout.render(try frame(), state: ViewState(), interval: 1, on: canvas)
        let text = canvas.text
        #expect(text.contains("3 gateways: 2 up  1 DOWN"))
        #expect(text.contains("in 101  out 2005"))
        #expect(text.contains("[1 Gateways]"))
        let rows = canvas.lines[Layout.headerRows...].filter { $0.hasPrefix("10.0.0.") }
        #expect(rows.map { String($0.prefix(13)) } == ["10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.9:8080"], "sorted by address")
        #expect(rows[1].contains("64.0MiB"))
        #expect(rows[2].contains("DOWN  connection refused"))
        #expect(canvas.lines[4].hasPrefix("Delivered/s  ▁▅█"), "a blank for no figure, then scaled to the peak")
    }

    @Test("sorting by OUT/s puts the busiest first and unknown figures last")
    func sortByDelivered() throws {
        var state = ViewState()
        let outColumn = Layout.columns(.gateways).firstIndex { $0.title == "OUT/s" }
        #expect(outColumn != nil)
        state.sortColumn[.gateways] = outColumn
        let rows = Layout.rows(try frame().gateways, state: state).map(\.address)
        #expect(rows == ["10.0.0.2:8080", "10.0.0.1:8080", "10.0.0.9:8080"])
        state.sortReversed[.gateways] = true
        #expect(Layout.rows(try frame().gateways, state: state).map(\.address) == ["10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.9:8080"])
    }

    @Test("the filter matches address or state")
    func filter() throws {
        var state = ViewState()
        state.filter = "down"
        #expect(Layout.rows(try frame().gateways, state: state).map(\.address) == ["10.0.0.9:8080"])
        state.filter = "0.0.2"
        #expect(Layout.rows(try frame().gateways, state: state).map(\.address) == ["10.0.0.2:8080"])
    }

    @Test("the other views and the help screen render their own columns")
    func otherViews() throws {
        for (view, title) in [(View.channels, "BROKER IN/s"), (.errors, "SLOW DISC")] {
            let canvas = TextCanvas(rows: 20, columns: 120)
            var state = ViewState()
            state.view = view
            Layout.render(try frame(), state: state, interval: 1, on: canvas)
            #expect(canvas.text.contains(title))
            #expect(canvas.text.contains("[\(view.rawValue + 1) \(view.title)]"))
        }
        let canvas = TextCanvas(rows: 30, columns: 100)
        var state = ViewState()
        state.showingHelp = true
        Layout.render(try frame(), state: state, interval: 1, on: canvas)
        #expect(canvas.text.contains("reverse the sort order"))
    }

    @Test("a terminal too small gets a message, not a crash; narrow ones drop columns")
    func smallTerminals() throws {
        let tiny = TextCanvas(rows: 5, columns: 30)
        Layout.render(try frame(), state: ViewState(), interval: 1, on: tiny)
        #expect(tiny.text.contains("too small"))
        let narrow = TextCanvas(rows: 20, columns: 60)
        Layout.render(try frame(), state: ViewState(), interval: 1, on: narrow)
        #expect(narrow.text.contains("10.0.0.2:8080"))
        #expect(!narrow.text.contains("MEM"))
    }
}

@Suite("Formatting and batch output")
struct FormatTests {
    @Test("figures read short, with units")
    func formats() {
        #expect(Format.quantity(nil) == "-")
        #expect(Format.quantity(0) == "0")
        #expect(Format.quantity(0.5) == "0.50")
        #expect(Format.quantity(48.5) == "48.5")
        #expect(Format.quantity(2005) == "2005")
        #expect(Format.quantity(123_456) == "123k")
        #expect(Format.quantity(2_500_000) == "2.50M")
        #expect(Format.latency(0.000238, ascii: true) == "238us")
        #expect(Format.latency(0.00246) == "2.46ms")
        #expect(Format.latency(0.25) == "250ms")
        #expect(Format.latency(1.5) == "1.50s")
        #expect(Format.bytes(512) == "512B")
        #expect(Format.bytes(64 * 1024 * 1024) == "64.0MiB")
        #expect(Format.duration(45) == "45s")
        #expect(Format.duration(723) == "12m03s")
        #expect(Format.duration(3 * 3600 + 240) == "3h04m")
        #expect(Format.duration(2 * 86400 + 3 * 3600) == "2d03h")
        #expect(Format.percent(3.21) == "3.2%")
        #expect(Format.timestamp(0) == "1970-01-01T00:00:00.000Z")
    }

    @Test("the JSON report is valid JSON with every key, null for unknowns")
    func json() throws {
        let before = ScrapeSample(exposition: try exposition(published: 0, delivered: 0), elapsed: 0, wallClock: 0)
        let after = ScrapeSample(exposition: try exposition(published: 10, delivered: 20), elapsed: 1, wallClock: 1)
        var down = GatewayFigures(address: "b:1", url: "http://b:1")
        down.state = .down("say \"no\"")
        let gateways = [GatewayFigures(address: "a:1", url: "http://a:1", latest: after, previous: before), down]
        let frame = DashboardFrame(gateways: gateways, cluster: ClusterFigures(gateways), deliveryHistory: [], wallClock: 0, generation: 1)
        let json = BatchReport.json(frame, interval: 1)
        #expect(json.hasSuffix("\n") && !json.dropLast().contains("\n"), "one line per report")
        #expect(JSONScanner.isValidDocument(Array(json.utf8)))
        #expect(json.contains(#""delivered_per_second":20"#))
        #expect(json.contains(#""resident_memory_bytes":null"#))
        #expect(json.contains(#""state":"down","error":"say \"no\"""#))
        let text = BatchReport.text(frame, interval: 1)
        #expect(text.contains("gateways: 1 up, 1 down"))
        #expect(text.contains("(say \"no\")"))
    }
}
