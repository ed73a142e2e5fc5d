import Foundation
import StormCore
import Testing

@Suite("stormctl toolkit: positions, Nagios status, batch lines")
struct CLIToolkitTests {
    let now = 1_764_800_000_000.0

    @Test("relative times count back from now")
    func relative() throws {
        #expect(try HistoryPosition(parsing: "-10m", now: now) == .time(milliseconds: now - 600_000))
        #expect(try HistoryPosition(parsing: "-2h", now: now) == .time(milliseconds: now - 7_200_000))
        #expect(try HistoryPosition(parsing: "-30s", now: now) == .time(milliseconds: now - 30_000))
        #expect(try HistoryPosition(parsing: "-1d", now: now) == .time(milliseconds: now - 86_400_000))
    }

    @Test("a whole number is an offset; RFC 3339 with and without fraction and zone offset")
    func absolute() throws {
        #expect(try HistoryPosition(parsing: "1200", now: now) == .offset(1200))
        #expect(try HistoryPosition(parsing: "2026-12-04T01:00:00Z", now: now) == .time(milliseconds: 1_796_346_000_000))
        #expect(try HistoryPosition(parsing: "2026-12-04T01:00:00.250Z", now: now) == .time(milliseconds: 1_796_346_000_250))
        #expect(try HistoryPosition(parsing: "2026-12-04T02:00:00+01:00", now: now) == .time(milliseconds: 1_796_346_000_000))
    }

    @Test("nonsense is refused with the accepted forms", arguments: ["yesterday", "-10x", "10m", "-m", ""])
    func refused(_ text: String) {
        #expect(throws: StormError.self) { try HistoryPosition(parsing: text, now: now) }
    }

    @Test("time seek stops at the first message at or after the time")
    func seek() {
        var seek = TimeSeek(milliseconds: 2000)
        let first = seek.scan([Array(#"{"type":"message","ts":1000.5,"offset":7}"#.utf8)])
        #expect(!first)
        #expect(seek.lastOffset == 7)
        let second = seek.scan([Array(#"{"ts":1999,"offset":9}"#.utf8), Array(#"{"ts":2000,"offset":12}"#.utf8)])
        #expect(second)
        #expect(seek.position == 11)
    }

    @Test("thresholds: at or above critical is CRITICAL, at or above warning WARNING, no value UNKNOWN")
    func thresholds() {
        #expect(NagiosMeasurement(label: "c", value: 5, warning: 10, critical: 20).status == .ok)
        #expect(NagiosMeasurement(label: "c", value: 10, warning: 10, critical: 20).status == .warning)
        #expect(NagiosMeasurement(label: "c", value: 25, warning: 10, critical: 20).status == .critical)
        #expect(NagiosMeasurement(label: "c", value: nil, warning: 10, critical: 20).status == .unknown)
        #expect(NagiosMeasurement(label: "c", value: 99).status == .ok)
    }

    @Test("the worst status wins and the line carries perfdata")
    func report() {
        var report = NagiosReport(summary: "12 connections")
        report.measurements = [
            NagiosMeasurement(label: "connections", value: 12, warning: 1000, critical: 2000),
            NagiosMeasurement(label: "consumer_lag", value: 0, warning: 100, critical: 1000),
        ]
        #expect(report.status == .ok)
        #expect(report.line == "STORM OK - 12 connections | connections=12;1000;2000 consumer_lag=0;100;1000")
        report.measurements[1].value = 150
        #expect(report.status == .warning)
        #expect(report.line.hasPrefix("STORM WARNING - consumer_lag 150 >= 100 |"))
        report.findings.append((.critical, "/readyz answered 503"))
        #expect(report.status == .critical)
        #expect(report.line.hasPrefix("STORM CRITICAL - /readyz answered 503 |"))
        #expect(NagiosStatus.critical.rawValue == 2 && NagiosStatus.unknown.rawValue == 3)
        #expect(NagiosStatus.warning > NagiosStatus.unknown)
    }

    @Test("batch lines: channel from the line or the default, JSON data kept, strings as text")
    func batch() throws {
        let json = try BatchLine.parse(Array(#"{"channel":"a.b","data":{"n":1}}"#.utf8), defaultChannel: nil)
        #expect(json == BatchLine(channel: "a.b", payload: Array(#"{"n":1}"#.utf8)))
        let text = try BatchLine.parse(Array(#"{"data":"hi"}"#.utf8), defaultChannel: "c")
        #expect(text == BatchLine(channel: "c", payload: Array("hi".utf8)))
        #expect(try BatchLine.parse(Array("   ".utf8), defaultChannel: nil) == nil)
        #expect(throws: StormError.self) { try BatchLine.parse(Array(#"{"data":1}"#.utf8), defaultChannel: nil) }
        #expect(throws: StormError.self) { try BatchLine.parse(Array("not json".utf8), defaultChannel: "c") }
        #expect(throws: StormError.self) { try BatchLine.parse(Array(#"{"channel":"c"}"#.utf8), defaultChannel: nil) }
    }
}
