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

@Suite("Publish rate limit (token bucket)")
struct PublishRateLimiterTests {
    @Test("a full bucket admits a burst of `rate`, then one more per 1/rate s; 0 is unlimited")
    func bucket() {
        let start = NIODeadline.uptimeNanoseconds(1_000_000_000)
        var limiter = PublishRateLimiter(rate: 10, now: start)
        func admit(_ now: NIODeadline) -> Bool { limiter.admit(now: now) }
        for n in 1...10 { #expect(admit(start), "burst publish \(n)") }
        #expect(!admit(start))
        #expect(!admit(start + .milliseconds(50)))  // half a token
        #expect(admit(start + .milliseconds(100)))  // one token back (counting the 50 ms)
        #expect(!admit(start + .milliseconds(100)))
        // A long pause refills to the burst, not beyond.
        let later = start + .seconds(60)
        for n in 1...10 { #expect(admit(later), "refilled publish \(n)") }
        #expect(!admit(later))
        var unlimited = PublishRateLimiter(rate: 0, now: start)
        var admitted = 0
        for _ in 0..<10_000 where unlimited.admit(now: start) { admitted += 1 }
        #expect(admitted == 10_000)
    }

    @Test("a clock that goes backwards adds no tokens")
    func backwards() {
        let start = NIODeadline.uptimeNanoseconds(5_000_000_000)
        var limiter = PublishRateLimiter(rate: 1, now: start)
        func admit(_ now: NIODeadline) -> Bool { limiter.admit(now: now) }
        #expect(admit(start))
        #expect(!admit(start - .seconds(3)))
    }
}

@Suite("Gateway limits over real sockets")
struct GatewayLimitTests {
    @Test("a WebSocket that floods publishes gets rate_limited, stays open, is counted, and publishes again later")
    func publishFlood() async throws {
        try await TestGateway.with(configure: { $0.limits.clientPublishRate = 5 }) { gateway in
            let listener = try await TestWebSocket.connect(port: gateway.port)
            _ = try await listener.subscribe(["flood"])
            let socket = try await TestWebSocket.connect(port: gateway.port)
            let attempts = 40
            for n in 1...attempts {
                try await socket.send(#"{"id":\#(n),"op":"publish","channel":"flood","data":{"n":\#(n)}}"#)
            }
            var accepted = 0
            var refused = 0
            while accepted + refused < attempts {
                let frame = try await socket.readFrame(seconds: 30)
                guard frame.opcode == 0x1 else { continue }
                if frame.text.contains("\"type\":\"reply\"") { accepted += 1 }
                if frame.text.contains("\"type\":\"error\"") {
                    #expect(frame.text.contains("\"rate_limited\""), "\(frame.text)")
                    refused += 1
                }
            }
            #expect(refused > 0 && accepted >= 5, "accepted \(accepted), refused \(refused) of \(attempts) with a rate of 5/s")
            #expect(try await gateway.metric("storm_publish_rate_limited_total{transport=\"websocket\"}") == Double(refused))
            #expect(try await gateway.metric("storm_client_errors_total{code=\"rate_limited\"}") == Double(refused))
            // Still open, and publishing again once tokens came back (waited on, not timed).
            var delivered = false
            for n in 0..<200 where !delivered {
                try await socket.send(#"{"id":"again\#(n)","op":"publish","channel":"flood","data":"again"}"#)
                let answer = try await socket.readFrame(seconds: 30)
                delivered = answer.text.contains("\"type\":\"reply\"")
                if !delivered { try await Task.sleep(for: .milliseconds(50)) }
            }
            #expect(delivered)
            var sawAgain = false
            for _ in 0..<(attempts + 2) where !sawAgain {
                sawAgain = try await listener.next("message", seconds: 30).text.contains("\"data\":\"again\"")
            }
            #expect(sawAgain)
            await socket.close()
            await listener.close()
        }
    }

    @Test("past --max-channels a new channel is refused with too_many_channels; one let go makes room")
    func gatewayChannelBound() async throws {
        try await TestGateway.with(configure: { $0.limits.maxChannels = 3 }) { gateway in
            let first = try await TestWebSocket.connect(port: gateway.port)
            #expect(try await first.subscribe(["bound.a", "bound.b"]).type == "reply")
            let second = try await TestWebSocket.connect(port: gateway.port)
            #expect(try await second.subscribe(["bound.b", "bound.c"], id: 2).type == "reply")
            // A channel the gateway already serves is fine; a fourth distinct one is not.
            let third = try await TestWebSocket.connect(port: gateway.port)
            #expect(try await third.subscribe(["bound.a"], id: 3).type == "reply")
            let refused = try await third.subscribe(["bound.d"], id: 4)
            #expect(refused.type == "error" && refused.text.contains("\"too_many_channels\"") && refused.text.contains("--max-channels"), "\(refused.text)")
            #expect(try await gateway.metric("storm_broker_subscriptions") == 3)
            let sse = try await RawConnection.connect(port: gateway.port)
            let sseAnswer = try await sse.request("GET", "/events?subject=bound.e")
            #expect(sseAnswer.status == 400 && sseAnswer.text.contains("too_many_channels"), "\(sseAnswer.status) \(sseAnswer.text)")
            await sse.close()
            // The connection that was refused still works, and an unsubscribe makes room.
            try await first.send(#"{"id":5,"op":"unsubscribe","channels":["bound.a"]}"#)
            _ = try await first.next("reply")
            await third.close()
            try await third.connection.waitUntilClosed()
            var subscribed = false
            let fourth = try await TestWebSocket.connect(port: gateway.port)
            for attempt in 0..<100 where !subscribed {
                subscribed = try await fourth.subscribe(["bound.d"], id: 10 + attempt).type == "reply"
                if !subscribed { try await Task.sleep(for: .milliseconds(20)) }
            }
            #expect(subscribed)
            #expect(try await gateway.publish("bound.d", "{\"ok\":1}").status == 200)
            #expect(try await fourth.next("message").text.contains("\"ok\":1"))
            await first.close()
            await second.close()
            await fourth.close()
        }
    }
}
