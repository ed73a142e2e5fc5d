import StormCore
import Testing

@Suite("Prometheus text parser")
struct PrometheusParserTests {
    @Test("real stormd exposition: every family, type, help and value")
    func realStormdOutput() throws {
        let exposition = try PrometheusTextParser.parse(stormdMetricsSample)
        #expect(exposition.families.count == 13)
        let connections = try #require(exposition.family(named: "storm_connections"))
        #expect(connections.type == .gauge)
        #expect(connections.help == "Open client connections by transport.")
        #expect(exposition.value("storm_connections", matching: ["transport": "websocket"]) == 1)
        #expect(exposition.value("storm_connections", matching: ["transport": "sse"]) == 0)
        #expect(exposition.sum("storm_connections") == 1)
        #expect(exposition.family(named: "storm_messages_delivered_total")?.type == .counter)
        #expect(exposition.value("storm_messages_delivered_total", matching: ["transport": "websocket"]) == 50)
        #expect(exposition.sum("storm_messages_published_total") == 50)
        #expect(exposition.value("storm_broker_connected") == 1)
        #expect(exposition.value("storm_build_info", matching: ["version": "0.1.0"]) == 1)
        #expect(exposition.samples(named: "storm_build_info").first?.labels["instance_id"] == "02d780dd8a97")
        #expect(exposition.sum("storm_client_errors_total") == 0)
        #expect(exposition.samples(named: "storm_client_errors_total").count == 8)
        #expect(exposition.value("process_resident_memory_bytes") == nil, "absent metrics read as nil, not 0")

        let fanout = try #require(exposition.histogram("storm_fanout_latency_seconds"))
        #expect(exposition.family(named: "storm_fanout_latency_seconds")?.type == .histogram)
        #expect(fanout.buckets.count == 17)
        #expect(fanout.buckets.last?.upperBound == .infinity)
        #expect(fanout.count == 50)
        #expect(abs(fanout.sum - 0.05974900000000001) < 1e-15)
        // 48 of 50 observations are at or below 2.5 ms, 50 at or below 5 ms: rank 47.5 is in (1 ms, 2.5 ms].
        let p95 = try #require(fanout.quantile(0.95))
        #expect(p95 > 0.001 && p95 <= 0.0025)
        let publish = try #require(exposition.histogram("storm_publish_duration_seconds"))
        #expect(publish.count == 50)
        // The histogram family owns its _bucket/_sum/_count samples: no stray untyped families.
        #expect(exposition.family(named: "storm_fanout_latency_seconds_bucket") == nil)
        #expect(exposition.samples(named: "storm_fanout_latency_seconds_sum").first?.value == fanout.sum)
    }

    @Test("real stormd exposition with both transports, a client error and presence metrics")
    func realStormdOutputSSE() throws {
        let exposition = try PrometheusTextParser.parse(stormdMetricsSampleSSE)
        #expect(exposition.sum("storm_connections") == 2)
        #expect(exposition.sum("storm_messages_delivered_total") == 80)
        #expect(exposition.value("storm_messages_delivered_total", matching: ["transport": "sse"]) == 40)
        #expect(exposition.value("storm_client_errors_total", matching: ["code": "invalid_channel"]) == 1)
        #expect(exposition.value("storm_redis_connected") == 0)
        #expect(exposition.family(named: "storm_presence_writes_total")?.type == .counter)
        let fanout = try #require(exposition.histogram("storm_fanout_latency_seconds"))
        #expect(fanout.count == 80)
        #expect(fanout.buckets.last?.cumulativeCount == 80)
        #expect(try #require(fanout.quantile(0.95)) > 0)
    }

    @Test("process metrics as stormd writes them (HELP, TYPE, one sample per family)")
    func processMetrics() throws {
        let exposition = try PrometheusTextParser.parse("""
            # HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.
            # TYPE process_cpu_seconds_total counter
            process_cpu_seconds_total 1.25
            # HELP process_resident_memory_bytes Resident memory size in bytes.
            # TYPE process_resident_memory_bytes gauge
            process_resident_memory_bytes 52428800
            # HELP process_start_time_seconds Start time of the process since unix epoch in seconds.
            # TYPE process_start_time_seconds gauge
            process_start_time_seconds 1795940820.25

            """)
        #expect(exposition.value("process_cpu_seconds_total") == 1.25)
        #expect(exposition.family(named: "process_cpu_seconds_total")?.type == .counter)
        #expect(exposition.value("process_resident_memory_bytes") == 52_428_800)
        #expect(exposition.value("process_start_time_seconds") == 1_795_940_820.25)
    }

    @Test("labels with escaped backslash, quote and newline; trailing comma; timestamps")
    func escaping() throws {
        let text = #"""
            # HELP weird A help with a \\ backslash\nand a second line.
            # TYPE weird counter
            weird{path="C:\\dir",quote="say \"hi\"",nl="a\nb",} 3 1700000000000
            weird{path="",quote="",nl=""}	4.5e2
            """#
        let exposition = try PrometheusTextParser.parse(text)
        let family = try #require(exposition.family(named: "weird"))
        #expect(family.help == "A help with a \\ backslash\nand a second line.")
        #expect(family.samples.count == 2)
        let first = family.samples[0]
        #expect(first.labels["path"] == #"C:\dir"#)
        #expect(first.labels["quote"] == #"say "hi""#)
        #expect(first.labels["nl"] == "a\nb")
        #expect(first.timestampMilliseconds == 1_700_000_000_000)
        #expect(family.samples[1].value == 450)
        #expect(first.labels.description == #"{path="C:\\dir",quote="say \"hi\"",nl="a\nb"}"#)
    }

    @Test("special values: +Inf, -Inf, NaN")
    func specialValues() throws {
        let exposition = try PrometheusTextParser.parse("""
            a +Inf
            b -Inf
            c NaN
            d -0.5
            e 1e-3
            f{le="+Inf"} 7
            """)
        #expect(exposition.value("a") == .infinity)
        #expect(exposition.value("b") == -.infinity)
        #expect(exposition.value("c")?.isNaN == true)
        #expect(exposition.value("d") == -0.5)
        #expect(exposition.value("e") == 0.001)
        #expect(exposition.family(named: "a")?.type == .untyped)
        #expect(exposition.samples(named: "c") == [PrometheusSample(name: "c", value: .nan)], "NaN samples compare equal")
    }

    @Test("comments, blank lines and CRLF are ignored")
    func comments() throws {
        let exposition = try PrometheusTextParser.parse("# just a comment\n\n#no space either\r\n# HELP x\r\nx 1\r\n")
        #expect(exposition.value("x") == 1)
        #expect(exposition.family(named: "x")?.help == "")
    }

    @Test("summary family collects _sum and _count; quantile samples keep their label")
    func summary() throws {
        let exposition = try PrometheusTextParser.parse("""
            # TYPE rpc summary
            rpc{quantile="0.5"} 0.01
            rpc{quantile="0.99"} 0.2
            rpc_sum 12
            rpc_count 100
            """)
        let family = try #require(exposition.family(named: "rpc"))
        #expect(family.type == .summary)
        #expect(family.samples.count == 4)
        #expect(exposition.value("rpc", matching: ["quantile": "0.99"]) == 0.2)
        #expect(exposition.value("rpc_count") == 100)
    }

    @Test("histograms with labels: one series per label set, summed on request")
    func labelledHistograms() throws {
        let exposition = try PrometheusTextParser.parse("""
            # TYPE lat histogram
            lat_bucket{route="a",le="0.1"} 1
            lat_bucket{route="a",le="1"} 2
            lat_bucket{route="a",le="+Inf"} 2
            lat_sum{route="a"} 0.6
            lat_count{route="a"} 2
            lat_bucket{route="b",le="0.1"} 0
            lat_bucket{route="b",le="1"} 1
            lat_bucket{route="b",le="+Inf"} 3
            lat_sum{route="b"} 9
            lat_count{route="b"} 3
            """)
        let series = exposition.histograms("lat")
        #expect(series.count == 2)
        #expect(series.map { $0.labels["route"] } == ["a", "b"])
        let b = try #require(exposition.histogram("lat", matching: ["route": "b"]))
        #expect(b.count == 3 && b.sum == 9)
        let all = try #require(exposition.histogram("lat"))
        #expect(all.buckets.map(\.cumulativeCount) == [1, 3, 5])
        #expect(all.count == 5 && all.sum == 9.6)
    }

    @Test(
        "malformed input is refused with the line number",
        arguments: [
            ("x 1\ny", 2),  // missing value
            ("x{a=\"1\" 2", 1),  // unterminated label list
            ("x{a=\"1} 2", 1),  // unterminated value
            ("x{a=\"\\t\"} 1", 1),  // invalid escape
            ("x{a=1} 1", 1),  // unquoted value
            ("x{1a=\"1\"} 1", 1),  // bad label name
            ("1x 1", 1),  // bad metric name
            ("x abc", 1),  // bad value
            ("x 0x10", 1),  // hexadecimal is not a Go float
            ("x 1 2.5", 1),  // fractional timestamp
            ("x 1 2 3", 1),  // trailing text
            ("# TYPE x bogus", 1),  // unknown type
            ("# TYPE x counter\n# TYPE x gauge", 2),  // second TYPE
            ("x 1\n# TYPE x counter", 2),  // TYPE after samples
            ("# HELP x a\n# HELP x b", 2),  // second HELP
            ("# HELP x bad \\t escape", 1),
            ("x{a=\"1\",a=\"2\"} 1", 1),  // duplicate label
            ("x_bucket{le=\"abc\"} 1", 1),  // bucket bound not a number
        ])
    func malformed(text: String, line: Int) {
        #expect {
            try PrometheusTextParser.parse(text)
        } throws: { error in
            (error as? PrometheusParseError)?.line == line
        }
    }

    @Test("float spellings follow Go, not Swift")
    func floats() {
        #expect(PrometheusTextParser.parseFloat("+Inf") == .infinity)
        #expect(PrometheusTextParser.parseFloat("-inf") == -.infinity)
        #expect(PrometheusTextParser.parseFloat("NaN")?.isNaN == true)
        #expect(PrometheusTextParser.parseFloat("1.5E3") == 1500)
        #expect(PrometheusTextParser.parseFloat(".5") == 0.5)
        #expect(PrometheusTextParser.parseFloat("0x1p3") == nil)
        #expect(PrometheusTextParser.parseFloat("") == nil)
        #expect(PrometheusTextParser.parseFloat("1,5") == nil)
    }
}

@Suite("Prometheus arithmetic")
struct PrometheusArithmeticTests {
    /// Buckets 0.1, 0.2, 0.4, +Inf with cumulative counts.
    func histogram(_ counts: [Double], sum: Double = 0) -> PrometheusHistogram {
        let bounds: [Double] = [0.1, 0.2, 0.4, .infinity]
        return PrometheusHistogram(
            buckets: zip(bounds, counts).map { .init(upperBound: $0, cumulativeCount: $1) }, sum: sum,
            count: counts.last ?? 0)
    }

    @Test("quantile interpolates linearly inside the bucket holding the rank")
    func quantileInterpolates() throws {
        let h = histogram([10, 30, 40, 40])
        // rank 0.5 * 40 = 20: second bucket (0.1, 0.2] holds ranks 10...30, so halfway: 0.15.
        #expect(abs(try #require(h.quantile(0.5)) - 0.15) < 1e-12)
        // rank 0.95 * 40 = 38: third bucket (0.2, 0.4] holds 30...40: 0.2 + 0.2 * 8/10.
        #expect(abs(try #require(h.quantile(0.95)) - 0.36) < 1e-12)
        // rank 4 in the first bucket interpolates from 0.
        #expect(abs(try #require(h.quantile(0.1)) - 0.04) < 1e-12)
        #expect(h.quantile(0) == 0)
        #expect(h.quantile(1) == 0.4)
    }

    @Test("a rank in the +Inf bucket answers the highest finite bound")
    func quantileInInfBucket() {
        #expect(histogram([0, 0, 1, 10]).quantile(0.95) == 0.4)
    }

    @Test("no observations, no +Inf bucket or q out of range: no estimate")
    func quantileUndefined() {
        #expect(histogram([0, 0, 0, 0]).quantile(0.95) == nil)
        #expect(PrometheusHistogram(buckets: [.init(upperBound: 1, cumulativeCount: 3)], sum: 1, count: 3).quantile(0.5) == nil)
        #expect(histogram([1, 2, 3, 4]).quantile(1.5) == nil)
        #expect(histogram([1, 2, 3, 4]).quantile(-0.1) == nil)
    }

    @Test("decreasing bucket counts are flattened, as Prometheus does")
    func quantileNonMonotonic() throws {
        // 30 then 20: read as 30, 30; the rank 0.5 * 40 = 20 stays in the second bucket.
        let h = histogram([10, 30, 20, 40])
        #expect(abs(try #require(h.quantile(0.5)) - 0.15) < 1e-12)
    }

    @Test("increase since an earlier scrape is the bucket-wise difference")
    func increase() throws {
        let before = histogram([10, 30, 40, 40], sum: 5)
        let after = histogram([10, 32, 50, 60], sum: 12)
        let window = after.increase(since: before)
        #expect(window.buckets.map(\.cumulativeCount) == [0, 2, 10, 20])
        #expect(window.count == 20)
        #expect(window.sum == 7)
        #expect(window.mean == 0.35)
        // Rank 19 of 20 lies in the +Inf bucket: the highest finite bound.
        #expect(window.quantile(0.95) == 0.4)
        #expect(after.increase(since: after).quantile(0.95) == nil, "no new observations, no estimate")
    }

    @Test("a restarted server (counts went down) makes the current histogram the increase")
    func increaseAfterReset() {
        let before = histogram([10, 30, 40, 40])
        let restarted = histogram([1, 2, 3, 3])
        #expect(restarted.increase(since: before) == restarted)
    }

    @Test("histograms add up bucket by bucket, also across different bounds")
    func adding() {
        let a = histogram([1, 2, 3, 4], sum: 1)
        let b = histogram([0, 1, 1, 2], sum: 2)
        let sum = a.adding(b)
        #expect(sum.buckets.map(\.cumulativeCount) == [1, 3, 4, 6])
        #expect(sum.count == 6 && sum.sum == 3)
        let other = PrometheusHistogram(
            buckets: [.init(upperBound: 0.3, cumulativeCount: 5), .init(upperBound: .infinity, cumulativeCount: 5)],
            sum: 1, count: 5)
        let mixed = a.adding(other)
        #expect(mixed.buckets.map(\.upperBound) == [0.1, 0.2, 0.3, 0.4, .infinity])
        #expect(mixed.buckets.map(\.cumulativeCount) == [1, 2, 7, 8, 9])
    }

    @Test("counter rates from deltas, with resets and missing values")
    func rates() {
        #expect(PrometheusRate.perSecond(from: 100, to: 150, over: 2) == 25)
        #expect(PrometheusRate.perSecond(from: 100, to: 100, over: 1) == 0)
        #expect(PrometheusRate.perSecond(from: 100, to: 30, over: 1) == 30, "a reset counts what is there now")
        #expect(PrometheusRate.perSecond(from: nil, to: 30, over: 1) == nil)
        #expect(PrometheusRate.perSecond(from: 1, to: 30, over: 0) == nil)
        #expect(PrometheusRate.perSecond(from: .nan, to: 30, over: 1) == nil)
        #expect(PrometheusRate.increase(from: 5, to: 9) == 4)
    }
}
