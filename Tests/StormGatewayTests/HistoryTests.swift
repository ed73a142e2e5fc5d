import Logging
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
@Suite("History and recovery", .serialized)
struct HistoryTests {
    private func offsets(_ body: [UInt8]) throws -> [UInt64] {
        let members = try JSONScanner.objectMembers(body)
        let text = String(decoding: members["messages"] ?? [], as: UTF8.self)
        // Each message starts with {"type":"message","offset":N,
        return text.components(separatedBy: "\"offset\":").dropFirst().compactMap { UInt64($0.prefix { $0.isNumber }) }
    }

    @Test("publish returns an offset; history lists messages after an offset, bounded", arguments: HistoryEngine.available)
    func historyEndpoint(engine: HistoryEngine) async throws {
        guard let broker = engine.makeFactory() else { return }
        try await TestGateway.with(broker: broker("gateway")) { gateway in
            var published: [UInt64] = []
            for n in 1...5 {
                let response = try await gateway.publish("news.eu", "{\"n\":\(n)}")
                #expect(response.status == 200)
                let offset = JSONScanner.number(try JSONScanner.objectMembers(response.body)["offset"] ?? []) ?? 0
                published.append(UInt64(offset))
            }
            #expect(published == published.sorted() && Set(published).count == 5 && published[0] > 0)

            let connection = try await RawConnection.connect(port: gateway.port)
            let all = try await connection.request("GET", "/api/v1/channels/news.eu/history")
            #expect(all.status == 200)
            #expect(try offsets(all.body) == published)
            let after = try await connection.request("GET", "/api/v1/channels/news.eu/history?since=\(published[2])&limit=1")
            #expect(try offsets(after.body) == [published[3]])
            #expect(after.text.contains("\"data\":{\"n\":4}"))

            for (query, status) in [
                ("since=-1", 400), ("since=abc", 400), ("limit=0", 400), ("limit=100000", 400), ("since=\(UInt64(1) << 60)", 400),
            ] {
                let response = try await connection.request("GET", "/api/v1/channels/news.eu/history?\(query)")
                #expect(response.status == status, "\(query) answered \(response.status): \(response.text)")
            }
            #expect(try await connection.request("GET", "/api/v1/channels/never.used/history").status == 404)
            #expect(try await connection.request("GET", "/api/v1/channels/bad..name/history").status == 400)
            #expect(try await connection.request("POST", "/api/v1/channels/news.eu/history").status == 405)
            await connection.close()
        }
    }

    @Test("a retried publish with the same idempotency key is stored once", arguments: HistoryEngine.available)
    func idempotency(engine: HistoryEngine) async throws {
        guard let broker = engine.makeFactory() else { return }
        try await TestGateway.with(broker: broker("gateway")) { gateway in
            let ws = try await TestWebSocket.connect(port: gateway.port)
            _ = try await ws.subscribe(["orders"])
            let connection = try await RawConnection.connect(port: gateway.port)
            let first = try await connection.request("POST", "/publish?subject=orders", body: Array("{\"a\":1}".utf8), headers: ["Idempotency-Key: order-42"])
            let second = try await connection.request("POST", "/publish?subject=orders", body: Array("{\"a\":1}".utf8), headers: ["Idempotency-Key: order-42"])
            #expect(first.status == 200 && second.status == 200)
            #expect(first.text.contains("\"id\":\"order-42\""))
            #expect(second.text.contains("\"duplicate\":true"))
            let firstOffset = JSONScanner.number(try JSONScanner.objectMembers(first.body)["offset"] ?? [])
            let secondOffset = JSONScanner.number(try JSONScanner.objectMembers(second.body)["offset"] ?? [])
            #expect(firstOffset == secondOffset)
            try await gateway.publish("orders", "after")
            #expect(try await ws.next("message").string("id") == "order-42")
            #expect(try await ws.next("message").text.contains("\"data\":\"after\""), "the duplicate was delivered twice")
            let badKey = try await connection.request("POST", "/publish?subject=orders", body: [1], headers: ["Idempotency-Key: has space"])
            #expect(badKey.status == 400)
            await connection.close()
            await ws.close()
        }
    }

    @Test("a WebSocket client that reconnects with its last offset gets every missed message once, then live ones", arguments: HistoryEngine.available)
    func webSocketRecovery(engine: HistoryEngine) async throws {
        guard let broker = engine.makeFactory() else { return }
        try await TestGateway.with(broker: broker("gateway-a")) { a in
            try await TestGateway.with(broker: broker("gateway-b")) { b in
                let publisher = try await RawConnection.connect(port: a.port)
                func publish(_ n: Int) async throws {
                    #expect(try await publisher.request("POST", "/publish?subject=feed", body: Array("{\"n\":\(n)}".utf8)).status == 200)
                }
                let first = try await TestWebSocket.connect(port: b.port)
                let reply = try await first.subscribe(["feed"])
                let epoch = reply.json["result"].flatMap { try? JSONScanner.objectMembers($0) }?["epoch"].flatMap { try? JSONScanner.string($0) }
                #expect(epoch?.isEmpty == false)
                for n in 1...20 { try await publish(n) }
                var lastOffset: UInt64 = 0
                for n in 1...10 {
                    let frame = try await first.next("message")
                    #expect(frame.text.contains("\"data\":{\"n\":\(n)}"))
                    lastOffset = try Envelope(decoding: frame.payload).offset ?? 0
                }
                // The client dies after message 10; more is published while it is away.
                first.connection.channel.close(promise: nil)
                for n in 21...40 { try await publish(n) }

                let second = try await TestWebSocket.connect(port: b.port)
                try await second.send("{\"id\":5,\"op\":\"subscribe\",\"channel\":\"feed\",\"since\":{\"offset\":\(lastOffset),\"epoch\":\"\(epoch ?? "")\"}}")
                let resumed = try await second.next("reply")
                #expect(resumed.text.contains("\"recovered\":true"), "\(resumed.text)")
                async let live: Void = {
                    try await Task.sleep(for: .milliseconds(50))
                    for n in 41...50 { try await publish(n) }
                }()
                var seen: [UInt64] = []
                for n in 11...50 {
                    let frame = try await second.next("message")
                    #expect(frame.text.contains("\"data\":{\"n\":\(n)}"), "expected message \(n), got \(frame.text)")
                    seen.append(try Envelope(decoding: frame.payload).offset ?? 0)
                }
                try await live
                #expect(seen == seen.sorted() && Set(seen).count == seen.count, "offsets must grow, with no duplicate")

                // From another epoch nothing can be promised.
                let third = try await TestWebSocket.connect(port: b.port)
                try await third.send(#"{"id":6,"op":"subscribe","channel":"feed","since":{"offset":1,"epoch":"another-epoch"}}"#)
                #expect(try await third.next("reply").text.contains("\"recovered\":false"))
                await publisher.close()
                await second.close()
                await third.close()
            }
        }
    }

    @Test("an SSE client resumes from Last-Event-ID", arguments: HistoryEngine.available)
    func sseRecovery(engine: HistoryEngine) async throws {
        guard let broker = engine.makeFactory() else { return }
        try await TestGateway.with(broker: broker("gateway")) { gateway in
            let first = try await TestEventStream.connect(port: gateway.port, channels: ["alerts", "other"])
            for n in 1...6 { try await gateway.publish(n % 2 == 0 ? "alerts" : "other", "{\"n\":\(n)}") }
            // Messages of two channels may arrive in any order between the channels: compare sets.
            func number(_ event: TestEventStream.Event) -> Int? {
                event.data.components(separatedBy: "\"data\":{\"n\":").dropFirst().first.flatMap { Int($0.prefix { $0.isNumber }) }
            }
            var seen: [Int] = []
            var lastID = ""
            for _ in 1...3 {
                let event = try await first.nextMessage()
                seen += number(event).map { [$0] } ?? []
                lastID = event.id ?? ""
            }
            // A stream of two channels: its ids are the last offset of each channel, in the request's order.
            let parts = lastID.split(separator: ",")
            #expect(parts.count == 2 && parts.allSatisfy { UInt64($0) != nil }, "SSE ids are per-channel offsets: \(lastID)")
            await first.close()
            for n in 7...8 { try await gateway.publish(n % 2 == 0 ? "alerts" : "other", "{\"n\":\(n)}") }
            let second = try await TestEventStream.connect(port: gateway.port, channels: ["alerts", "other"], extraHeaders: ["Last-Event-ID: \(lastID)"])
            #expect(second.head.status == 200)
            for _ in 1...(8 - seen.count) {
                let event = try await second.nextMessage()
                seen += number(event).map { [$0] } ?? []
            }
            #expect(seen.sorted() == Array(1...8), "every message once across the reconnect: \(seen)")
            try await gateway.publish("alerts", "{\"n\":9}")
            #expect(try await second.nextMessage().data.contains("\"data\":{\"n\":9}"))
            let bad = try await RawConnection.connect(port: gateway.port)
            #expect(try await bad.request("GET", "/events?subject=alerts", headers: ["Last-Event-ID: yesterday"]).status == 400)
            await bad.close()
            await second.close()
        }
    }
}
