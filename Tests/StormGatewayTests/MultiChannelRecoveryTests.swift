import NIOCore
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

@Suite("Resume points (no sockets)")
struct ResumePointTests {
    private let channels = [try! ChannelName(validating: "m.a"), try! ChannelName(validating: "m.b"), try! ChannelName(validating: "m.c")]

    @Test("SSE: one offset for every channel, or one per channel in the request's order")
    func sse() throws {
        let single = try ResumePoint.parseSSE("42", channels: channels, epoch: nil)
        #expect(channels.allSatisfy { single.offset(for: $0) == 42 })
        let vector = try ResumePoint.parseSSE("12,40,7", channels: channels, epoch: "e1")
        #expect(vector.offset(for: channels[0]) == 12 && vector.offset(for: channels[1]) == 40 && vector.offset(for: channels[2]) == 7)
        #expect(vector.epoch == "e1")
        for bad in ["12,40", "1,2,3,4", "yesterday", "1,,3", "-1", "1e300", "99999999999999999999"] {
            #expect(throws: StormError.self, "\(bad)") { try ResumePoint.parseSSE(bad, channels: channels, epoch: nil) }
        }
    }

    @Test("WebSocket: N, {offset, epoch}, or {positions, epoch} naming every channel")
    func webSocket() throws {
        #expect(try ResumePoint.parseWebSocket(Array("9".utf8), channels: channels) == ResumePoint(offset: 9))
        #expect(try ResumePoint.parseWebSocket(Array(#"{"offset":9,"epoch":"e"}"#.utf8), channels: channels) == ResumePoint(offset: 9, epoch: "e"))
        let positions = try ResumePoint.parseWebSocket(Array(#"{"positions":{"m.a":3,"m.b":30,"m.c":0},"epoch":"e"}"#.utf8), channels: channels)
        #expect(positions.offset(for: channels[0]) == 3 && positions.offset(for: channels[1]) == 30 && positions.offset(for: channels[2]) == 0)
        for bad in [#"{"positions":{"m.a":3}}"#, #"{"positions":{"m.a":3,"m.b":-1,"m.c":1}}"#, #"{"positions":[1,2,3]}"#, "1.5", #""x""#, "1e300"] {
            #expect(throws: StormError.self, "\(bad)") { try ResumePoint.parseWebSocket(Array(bad.utf8), channels: channels) }
        }
    }

    @Test("SSE positions advance per channel, whatever order the channels' messages come in")
    func positions() throws {
        var positions = SSEPositions(channels: channels, startingAt: ResumePoint(offset: 5))
        #expect(positions.eventID == "5,5,5")
        func delivery(_ channel: ChannelName, _ offset: UInt64) -> Delivery? {
            let envelope = Envelope(channel: channel, id: "x-\(offset)", timestampMicros: 1, payload: Array("1".utf8), encoding: .json)
            return Delivery(envelope: ByteBuffer(bytes: envelope.encoded()), offset: offset, channel: channel, allocator: ByteBufferAllocator())
        }
        let b9 = try #require(delivery(channels[1], 9))
        let a7 = try #require(delivery(channels[0], 7))
        #expect(positions.advance(b9) == "5,9,5")
        #expect(positions.advance(a7) == "7,9,5")  // an older offset of another channel, after a newer one
        // And the resume point it makes covers both: nothing of a after 7, nothing of b after 9 is lost.
        let resumed = try ResumePoint.parseSSE(positions.eventID, channels: channels, epoch: nil)
        #expect(resumed.offset(for: channels[0]) == 7 && resumed.offset(for: channels[1]) == 9 && resumed.offset(for: channels[2]) == 5)
        #expect(String(buffer: b9.envelope).hasPrefix(#"{"type":"message","offset":9,"#))
    }
}

/// Clients of several channels that disconnect at random points and resume: every message exactly
/// once (issue #15: one `since` over five channels gave 592 duplicates and 610 gaps on JetStream, where
/// each channel is its own ordered consumer and channels interleave out of offset order).
@Suite("Multi-channel recovery with random disconnects", .serialized)
struct MultiChannelRecoveryTests {
    static let channels = (1...5).map { "multi.c\($0)" }
    static let total = 600

    /// The `n` of a delivered `{"n":N}` payload.
    private static func number(_ text: String) -> Int? {
        guard let range = text.range(of: "\"data\":{\"n\":") else { return nil }
        return Int(text[range.upperBound...].prefix { $0.isNumber })
    }

    /// Publishes `total` messages round-robin over the channels from four connections at once, so that
    /// the channels' messages interleave on the broker.
    private static func publishAll(_ gateway: Gateway) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for worker in 0..<4 {
                group.addTask {
                    let connection = try await RawConnection.connect(port: gateway.port)
                    for n in stride(from: worker + 1, through: total, by: 4) {
                        let channel = channels[n % channels.count]
                        let response = try await connection.request("POST", "/publish?subject=\(channel)", body: Array("{\"n\":\(n)}".utf8))
                        #expect(response.status == 200, "publish \(n): \(response.text)")
                    }
                    await connection.close()
                }
            }
            try await group.waitForAll()
        }
    }

    @Test("SSE over five channels, reconnecting with Last-Event-ID at random points", arguments: HistoryEngine.available)
    func sse(engine: HistoryEngine) async throws {
        guard let broker = engine.makeFactory() else { return }
        try await TestGateway.with(broker: broker("gateway")) { gateway in
            var seen: [Int: Int] = [:]
            var lastID: String? = "0"  // the first stream replays everything, so nothing published before it is missed
            var connections = 0
            async let publishing: Void = Self.publishAll(gateway)
            let deadline = ContinuousClock.now + .seconds(120)
            while seen.count < Self.total, ContinuousClock.now < deadline, connections < 400 {
                connections += 1
                let stream = try await TestEventStream.connect(
                    port: gateway.port, channels: Self.channels, extraHeaders: lastID.map { ["Last-Event-ID: \($0)"] } ?? [])
                #expect(stream.head.status == 200)
                let take = Int.random(in: 1...40)
                for _ in 0..<take where seen.count < Self.total {
                    guard let event = try? await stream.nextMessage(seconds: 10) else { break }
                    if let n = Self.number(event.data) { seen[n, default: 0] += 1 }
                    lastID = event.id
                }
                await stream.close()
            }
            try await publishing
            let duplicates = seen.values.filter { $0 > 1 }.count
            let missing = (1...Self.total).filter { seen[$0] == nil }
            #expect(duplicates == 0, "\(duplicates) messages delivered more than once over \(connections) connections")
            #expect(missing.isEmpty, "\(missing.count) messages never delivered over \(connections) connections, first \(missing.prefix(5))")
            print("multi-channel SSE recovery (\(engine.rawValue)): \(Self.total) messages over \(connections) connections, \(duplicates) duplicates, \(missing.count) gaps")
        }
    }

    @Test("WebSocket over five channels, resubscribing with since positions at random points", arguments: HistoryEngine.available)
    func webSocket(engine: HistoryEngine) async throws {
        guard let broker = engine.makeFactory() else { return }
        try await TestGateway.with(broker: broker("gateway")) { gateway in
            var seen: [Int: Int] = [:]
            // The first subscribe replays everything, so nothing published before it is missed.
            var positions: [String: UInt64] = Dictionary(uniqueKeysWithValues: Self.channels.map { ($0, 0) })
            var epoch: String?
            var connections = 0
            let list = Self.channels.map { "\"\($0)\"" }.joined(separator: ",")
            async let publishing: Void = Self.publishAll(gateway)
            let deadline = ContinuousClock.now + .seconds(120)
            while seen.count < Self.total, ContinuousClock.now < deadline, connections < 400 {
                connections += 1
                let socket = try await TestWebSocket.connect(port: gateway.port)
                var request = #"{"id":1,"op":"subscribe","channels":[\#(list)]"#
                let entries = positions.map { "\"\($0.key)\":\($0.value)" }.joined(separator: ",")
                request += #","since":{"positions":{\#(entries)}\#(epoch.map { #","epoch":"\#($0)""# } ?? "")}"#
                try await socket.send(request + "}")
                let reply = try await socket.next("reply")
                #expect(reply.text.contains("\"recovered\":true"), "\(reply.text)")
                if epoch == nil {
                    epoch = reply.text.components(separatedBy: "\"epoch\":\"").dropFirst().first.map { String($0.prefix { $0 != "\"" }) }
                }
                let take = Int.random(in: 1...40)
                for _ in 0..<take where seen.count < Self.total {
                    guard let frame = try? await socket.next("message", seconds: 10) else { break }
                    if let n = Self.number(frame.text) { seen[n, default: 0] += 1 }
                    if let channel = frame.string("channel"), let offset = frame.text.components(separatedBy: "\"offset\":").dropFirst().first.flatMap({ UInt64($0.prefix { $0.isNumber }) }) {
                        positions[channel] = offset
                    }
                }
                await socket.close()
            }
            try await publishing
            let duplicates = seen.values.filter { $0 > 1 }.count
            let missing = (1...Self.total).filter { seen[$0] == nil }
            #expect(duplicates == 0, "\(duplicates) messages delivered more than once over \(connections) connections")
            #expect(missing.isEmpty, "\(missing.count) messages never delivered over \(connections) connections, first \(missing.prefix(5))")
            print("multi-channel WebSocket recovery (\(engine.rawValue)): \(Self.total) messages over \(connections) connections, \(duplicates) duplicates, \(missing.count) gaps")
        }
    }
}
