import Foundation
import NIOCore
import NIOEmbedded
import NIOWebSocket
import Testing

@testable import StormCore

@Suite("Latency histogram")
struct LatencyHistogramTests {
    @Test func smallValuesAreExact() {
        var histogram = LatencyHistogram()
        for value in 1...50 { histogram.record(UInt64(value)) }
        #expect(histogram.count == 50)
        #expect(histogram.percentile(0.5) == 25)
        #expect(histogram.percentile(0.02) == 1)
        #expect(histogram.percentile(1.0) == 50)
        #expect(histogram.min == 1)
        #expect(histogram.max == 50)
        #expect(histogram.mean == 25.5)
    }

    @Test func largeValuesLandWithinThreePercent() {
        var histogram = LatencyHistogram()
        for value in 1...1000 { histogram.record(UInt64(value)) }
        // The 990th value sits in [976, 991]: 16-wide buckets between 512 and 1023.
        #expect(histogram.percentile(0.99) == 991)
        #expect(histogram.percentile(1.0) == 1000)  // clamped to the true maximum
        for value: UInt64 in [64, 100, 1_000, 65_537, 10_000_000, 1 << 40, UInt64.max] {
            let range = LatencyHistogram.bucketRange(LatencyHistogram.bucketIndex(of: value))
            #expect(range.contains(value))
            #expect(Double(range.upperBound - range.lowerBound) <= Double(value) / 32 + 1)
        }
    }

    @Test func bucketsAreContiguousAndCoverEveryValue() {
        var expectedLower: UInt64 = 0
        for index in 0..<LatencyHistogram.bucketCount {
            let range = LatencyHistogram.bucketRange(index)
            #expect(range.lowerBound == expectedLower)
            expectedLower = range.upperBound &+ 1
        }
        #expect(expectedLower == 0)  // the last bucket ends at UInt64.max
        #expect(LatencyHistogram.bucketIndex(of: .max) == LatencyHistogram.bucketCount - 1)
    }

    @Test func emptyHistogramHasNoPercentiles() {
        #expect(LatencyHistogram().percentile(0.5) == nil)
        #expect(LatencyHistogram().mean == nil)
    }

    @Test func mergingAddsCounts() {
        var a = LatencyHistogram()
        var b = LatencyHistogram()
        for value in 1...10 { a.record(UInt64(value)) }
        for value in 11...20 { b.record(UInt64(value)) }
        a.merge(b)
        #expect(a.count == 20)
        #expect(a.percentile(0.5) == 10)
        #expect(a.max == 20)
        #expect(a.min == 1)
    }

    @Test func shippedBucketsRebuildTheSamePercentiles() {
        var original = LatencyHistogram()
        for value in stride(from: 100, through: 50_000, by: 37) { original.record(UInt64(value)) }
        var copy = LatencyHistogram()
        for bucket in original.nonEmptyBuckets { copy.add(bucket: bucket.index, count: bucket.count) }
        copy.setExact(min: original.min, max: original.max, sum: original.sum)
        for q in [0.5, 0.95, 0.99, 1.0] {
            #expect(copy.percentile(q) == original.percentile(q))
        }
    }
}

@Suite("Rate schedule")
struct RateScheduleTests {
    @Test func offsetsFollowTheRate() {
        let schedule = RateSchedule(rate: 100, duration: 10)
        #expect(schedule.total == 1000)
        #expect(schedule.dueOffsetNanoseconds(ofMessage: 0) == 0)
        #expect(schedule.dueOffsetNanoseconds(ofMessage: 1) == 10_000_000)
        #expect(schedule.dueOffsetNanoseconds(ofMessage: 999) == 9_990_000_000)
    }

    @Test func fractionalRates() {
        let schedule = RateSchedule(rate: 3, total: 4)
        #expect(schedule.dueOffsetNanoseconds(ofMessage: 1) == 333_333_333)
        #expect(schedule.dueOffsetNanoseconds(ofMessage: 3) == 1_000_000_000)
        #expect(RateSchedule(rate: 0.5, duration: 7).total == 4)  // 3.5 rounds up
    }

    @Test func unlimitedRateIsDueAtOnce() {
        let schedule = RateSchedule(rate: nil, total: 5)
        #expect(schedule.dueOffsetNanoseconds(ofMessage: 4) == 0)
        #expect(RateSchedule(rate: 0, total: 5).rate == nil)
    }

    @Test func sendersShareTheScheduleWithoutOverlap() {
        let schedule = RateSchedule(rate: 1000, total: 10)
        var seen: [Int] = []
        for sender in 0..<4 {
            let mine = Array(schedule.messages(forSender: sender, of: 4))
            #expect(mine.count == schedule.messageCount(forSender: sender, of: 4))
            seen += mine
        }
        #expect(seen.sorted() == Array(0..<10))
        #expect(Array(schedule.messages(forSender: 1, of: 4)) == [1, 5, 9])
        #expect(schedule.messageCount(forSender: 12, of: 16) == 0)
    }
}

@Suite("Server-Sent Events parser")
struct ServerSentEventParserTests {
    static let stream = Array(
        ": heartbeat\r\nid: a-1\r\nevent: message\r\ndata: {\"type\":\"message\",\"n\":1}\r\n\r\n"
            .utf8)
        + Array("id: a-2\nevent: message\ndata: line one\ndata:line two\n\n: heartbeat\n\n".utf8)
        + Array("id: a-3\revent: message\rdata: é ünïcode\r\r".utf8)

    static let expected = [
        ServerSentEvent(id: "a-1", event: "message", data: Array(#"{"type":"message","n":1}"#.utf8)),
        ServerSentEvent(id: "a-2", event: "message", data: Array("line one\nline two".utf8)),
        ServerSentEvent(id: "a-3", event: "message", data: Array("é ünïcode".utf8)),
    ]

    static func parse(chunks: [ArraySlice<UInt8>]) throws -> [ServerSentEvent] {
        var parser = ServerSentEventParser()
        var events: [ServerSentEvent] = []
        for chunk in chunks {
            try parser.feed(chunk) { events.append($0) }
        }
        return events
    }

    @Test func wholeStream() throws {
        #expect(try Self.parse(chunks: [Self.stream[...]]) == Self.expected)
    }

    @Test func everySplitPoint() throws {
        for split in 0...Self.stream.count {
            let events = try Self.parse(chunks: [Self.stream[..<split], Self.stream[split...]])
            #expect(events == Self.expected, "split at \(split)")
        }
    }

    @Test func oneByteAtATime() throws {
        let chunks = Self.stream.indices.map { Self.stream[$0...$0] }
        #expect(try Self.parse(chunks: chunks) == Self.expected)
    }

    @Test func eventsWithoutDataAreDropped() throws {
        let events = try Self.parse(chunks: [Array("event: ping\n\nid: 7\n\ndata\n\n".utf8)[...]])
        #expect(events == [ServerSentEvent(id: "7", event: nil, data: [])])
    }

    @Test func overlongLinesAreRefused() {
        var parser = ServerSentEventParser(maximumLineLength: 8)
        #expect(throws: ServerSentEventParser.Failure.lineTooLong(8)) {
            try parser.feed(Array("data: 123456789\n".utf8)) { _ in }
        }
    }
}

@Suite("Envelope rendering and probing")
struct EnvelopeClientTests {
    @Test func rawOutputOfEachEncoding() throws {
        let json = try Envelope(decoding: Array(#"{"type":"message","channel":"c","id":"x-1","ts":1.5,"data":{"a": [1, 2]}}"#.utf8))
        #expect(json.encoding == .json)
        #expect(json.rawOutputLine == Array("{\"a\": [1, 2]}\n".utf8))

        let text = try Envelope(decoding: Array(#"{"type":"message","channel":"c","id":"x-2","ts":1.5,"data":"hi \"there\"\n","encoding":"text"}"#.utf8))
        #expect(text.rawOutputLine == Array("hi \"there\"\n\n".utf8))

        let bytes: [UInt8] = [0xFF, 0x00, 0x0A, 0xC3]
        let base64 = try Envelope(decoding: Array(#"{"type":"message","channel":"c","id":"x-3","ts":1.5,"data":"\#(Data(bytes).base64EncodedString())","encoding":"base64"}"#.utf8))
        #expect(base64.rawOutputLine == bytes + [0x0A])
    }

    @Test func rawOutputRoundTripsThroughTheGatewayEncoding() throws {
        let channel = try ChannelName(validating: "chat.room-1")
        for payload in [Array(#"{"k":"v"}"#.utf8), Array("plain text".utf8), [0x80, 0x81, 0x00]] {
            let sent = Envelope(channel: channel, id: "g-1", timestampMicros: 1_764_403_915_123_456, payload: payload)
            let received = try Envelope(decoding: sent.encoded())
            #expect(received.rawOutputLine == payload + [0x0A])
        }
    }

    @Test func probeReadsTimestampAndSequence() {
        let frame = Array(#"{"type":"message","channel":"bench.x","id":"g-9","ts":1764403915123.456,"data":{"p":3,"seq":42,"pad":"xx"}}"#.utf8)
        frame.withUnsafeBytes { bytes in
            #expect(EnvelopeProbe.kind(bytes) == .message)
            #expect(EnvelopeProbe.timestampMicros(bytes) == 1_764_403_915_123_456)
            #expect(
                EnvelopeProbe.benchFields(bytes)
                    == EnvelopeProbe.BenchFields(timestampMicros: 1_764_403_915_123_456, publisher: 3, sequence: 42))
        }
        // The gateway splices the offset in after the type; the bench's fields must still be found.
        Array(#"{"type":"message","offset":7,"channel":"c","id":"i","ts":2,"data":{"p":0,"seq":1}}"#.utf8).withUnsafeBytes {
            #expect(EnvelopeProbe.benchFields($0) == EnvelopeProbe.BenchFields(timestampMicros: 2_000, publisher: 0, sequence: 1))
        }
        // With --channels the publisher names the channel index between p and seq.
        Array(#"{"type":"message","channel":"b.3","id":"i","ts":2,"data":{"p":1,"c":3,"seq":9,"pad":""}}"#.utf8).withUnsafeBytes {
            #expect(
                EnvelopeProbe.benchFields($0)
                    == EnvelopeProbe.BenchFields(timestampMicros: 2_000, publisher: 1, sequence: 9, channel: 3))
        }
        Array(#"{"type":"message","ts":2,"data":{"p":1,"c":,"seq":9}}"#.utf8).withUnsafeBytes {
            #expect(EnvelopeProbe.benchFields($0) == nil)
        }
        // Not the bench's payload: no fields rather than wrong ones.
        for other in [#"{"type":"message","ts":2,"data":{"seq":1,"p":0}}"#, #"{"type":"message","ts":2,"data":"x"}"#, #"{"type":"message","data":{"p":0,"seq":1}}"#] {
            Array(other.utf8).withUnsafeBytes { #expect(EnvelopeProbe.benchFields($0) == nil) }
        }
        Array(#"{"type":"message","ts":17.5,"data":1}"#.utf8).withUnsafeBytes {
            #expect(EnvelopeProbe.timestampMicros($0) == 17_500)
        }
        Array(#"{"type":"reply","id":1,"result":{"channels":["a"]}}"#.utf8).withUnsafeBytes {
            #expect(EnvelopeProbe.kind($0) == .reply)
            #expect(EnvelopeProbe.timestampMicros($0) == nil)
        }
        Array(#"{"type":"error","id":1,"error":{"code":"invalid_channel","message":"m"}}"#.utf8).withUnsafeBytes {
            #expect(EnvelopeProbe.kind($0) == .error)
        }
    }
}

@Suite("Client plumbing")
struct ClientPlumbingTests {
    @Test func endpointParsing() throws {
        #expect(try StormEndpoint(url: "http://127.0.0.1:8080") == StormEndpoint(host: "127.0.0.1", port: 8080))
        #expect(try StormEndpoint(url: "ws://example.org:9000/ws") == StormEndpoint(host: "example.org", port: 9000))
        #expect(try StormEndpoint(url: "localhost") == StormEndpoint(host: "localhost", port: 80))
        #expect(try StormEndpoint(url: "[::1]:8080") == StormEndpoint(host: "::1", port: 8080))
        #expect(try StormEndpoint(url: "[::1]:8080").hostHeader == "[::1]:8080")
        #expect(try StormEndpoint(url: "https://x:1") == StormEndpoint(host: "x", port: 1, usesTLS: true))
        #expect(try StormEndpoint(url: "wss://storm.example.com/ws") == StormEndpoint(host: "storm.example.com", port: 443, usesTLS: true))
        #expect(try StormEndpoint(url: "https://x:8443").description == "https://x:8443")
        #expect(throws: StormError.self) { try StormEndpoint(url: "ftp://x:1") }
        #expect(throws: StormError.self) { try StormEndpoint(url: "http://x:99999") }
        #expect(throws: StormError.self) { try StormEndpoint(url: "http://:80") }
    }

    @Test func queryValuesArePercentEncoded() {
        #expect(makeRequestURI(path: "/publish", query: [("subject", "a.b:c@d=e")]) == "/publish?subject=a.b%3Ac%40d%3De")
        #expect(makeRequestURI(path: "/events", query: [("subject", "a"), ("subject", "b")]) == "/events?subject=a&subject=b")
        #expect(makeRequestURI(path: "/healthz", query: []) == "/healthz")
    }

    @Test func errorBodiesBecomeTheServersError() {
        let body = Array(#"{"error":{"code":"invalid_channel","message":"channel 'a..b' is invalid: empty token"}}"#.utf8)
        let error = StormError(httpStatus: 400, body: body)
        #expect(error == StormError(.invalidChannel, "channel 'a..b' is invalid: empty token"))
        #expect(StormError(httpStatus: 503, body: Array("down".utf8)).code == .brokerUnavailable)
        #expect(StormError(httpStatus: 502, body: []).code == .internalError)
        #expect(StormError(httpStatus: 413, body: Array("<html>".utf8)).code == .messageTooLarge)
    }

    @Test func closeCodesBecomeErrors() {
        #expect(StormError(webSocketCloseCode: 1001, reason: "").code == .shuttingDown)
        #expect(StormError(webSocketCloseCode: 4008, reason: "").code == .slowClient)
        #expect(StormError(webSocketCloseCode: 1009, reason: "x").code == .messageTooLarge)
        #expect(StormError(webSocketCloseCode: 1006, reason: "").code == .connection)
    }
}

@Suite("WebSocket client frame reader")
struct ServerFrameReaderTests {
    /// Records what the reader hands on.
    final class Recorder: StormStreamDelegate {
        var texts: [String] = []
        var closed: [StormError?] = []
        func streamDidReceive(text: ByteBuffer) { texts.append(String(buffer: text)) }
        func streamDidClose(error: StormError?) { closed.append(error) }
    }

    static func frame(_ opcode: UInt8, _ payload: [UInt8], fin: Bool = true) -> [UInt8] {
        var bytes: [UInt8] = [(fin ? 0x80 : 0) | opcode]
        if payload.count < 126 {
            bytes.append(UInt8(payload.count))
        } else if payload.count <= 0xFFFF {
            bytes += [126, UInt8(payload.count >> 8), UInt8(payload.count & 0xFF)]
        } else {
            bytes.append(127)
            for shift in stride(from: 56, through: 0, by: -8) { bytes.append(UInt8((payload.count >> shift) & 0xFF)) }
        }
        return bytes + payload
    }

    static func reader(maximumFrameSize: Int = 1 << 18) throws -> (EmbeddedChannel, Recorder) {
        let recorder = Recorder()
        let channel = EmbeddedChannel(handler: ServerFrameReader(delegate: recorder, maximumFrameSize: maximumFrameSize))
        return (channel, recorder)
    }

    @Test func framesSplitAnywhereArriveWhole() throws {
        let long = String(repeating: "x", count: 300)
        let stream = Self.frame(0x1, Array("one".utf8)) + Self.frame(0x1, Array(long.utf8))
            + Self.frame(0x1, Array("fr".utf8), fin: false) + Self.frame(0x9, Array("p".utf8))
            + Self.frame(0x0, Array("ag".utf8)) + Self.frame(0x1, [])
        for split in 0...stream.count {
            let (channel, recorder) = try Self.reader()
            try channel.writeInbound(ByteBuffer(bytes: stream[..<split]))
            try channel.writeInbound(ByteBuffer(bytes: stream[split...]))
            #expect(recorder.texts == ["one", long, "frag", ""], "split at \(split)")
            // The ping in the middle of the fragmented message was answered with a masked pong.
            let pong = try channel.readOutbound(as: WebSocketFrame.self)
            #expect(pong?.opcode == .pong)
            #expect(pong.map { String(buffer: $0.data) } == "p")  // masked by the encoder, later
            #expect(recorder.closed.isEmpty)
        }
    }

    @Test func protocolErrorsCloseWithAReason() throws {
        let masked: [UInt8] = [0x81, 0x81, 1, 2, 3, 4, 0x61]
        let reserved = [0xC1 as UInt8] + Self.frame(0x1, Array("a".utf8)).dropFirst()
        let binary = Self.frame(0x2, [1])
        let fragmentedPing = Self.frame(0x9, [], fin: false)
        for (bytes, words) in [(masked, "masked"), (reserved, "reserved"), (binary, "binary"), (fragmentedPing, "control")] {
            let (channel, recorder) = try Self.reader()
            try channel.writeInbound(ByteBuffer(bytes: bytes))
            #expect(!channel.isActive)
            #expect(recorder.closed.count == 1)
            #expect(recorder.closed.first??.message.contains(words) == true, "\(recorder.closed)")
        }
    }

    @Test func framesOverTheLimitAreRefusedBeforeTheyArrive() throws {
        let (channel, recorder) = try Self.reader(maximumFrameSize: 100)
        // Only the header of a 200-byte frame: refused without waiting for (or keeping) its payload.
        try channel.writeInbound(ByteBuffer(bytes: [0x81, 126, 0, 200]))
        #expect(!channel.isActive)
        #expect(recorder.closed.first??.message.contains("200-byte") == true)
    }

    @Test func theServersCloseIsEchoedAndReported() throws {
        let (channel, recorder) = try Self.reader()
        try channel.writeInbound(ByteBuffer(bytes: Self.frame(0x8, [0x03, 0xE9] + Array("bye".utf8))))
        let echo = try channel.readOutbound(as: WebSocketFrame.self)
        #expect(echo?.opcode == .connectionClose)
        #expect(!channel.isActive)
        #expect(recorder.closed.count == 1)
        #expect(recorder.closed.first??.message.contains("bye") == true)
    }
}
