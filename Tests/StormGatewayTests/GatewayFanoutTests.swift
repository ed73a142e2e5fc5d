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

/// Publish and fan-out end to end over real sockets, with the in-memory broker.
@Suite("Gateway fan-out")
struct GatewayFanoutTests {
    @Test("HTTP publish reaches WebSocket and SSE subscribers as one envelope")
    func publishReachesBothTransports() async throws {
        try await TestGateway.with { gateway in
            let ws = try await TestWebSocket.connect(port: gateway.port)
            let reply = try await ws.subscribe(["storm.events"])
            #expect(reply.type == "reply")
            #expect(reply.text.contains(#""channels":["storm.events"]"#))
            let sse = try await TestEventStream.connect(port: gateway.port, channels: ["storm.events"])
            #expect(sse.head.status == 200)
            #expect(sse.head.header("content-type")?.hasPrefix("text/event-stream") == true)

            let response = try await gateway.publish("storm.events", #"{"hello":"world","n":12345678901234567890}"#)
            #expect(response.status == 200)
            let accepted = try JSONScanner.objectMembers(response.body)
            let id = try JSONScanner.string(accepted["id"] ?? [])

            let frame = try await ws.next("message")
            let envelope = try Envelope(decoding: frame.payload)
            #expect(envelope.channel.rawValue == "storm.events")
            #expect(envelope.id == id)
            #expect(envelope.encoding == .json)
            // JSON payloads pass through byte for byte (no float rounding of big numbers).
            #expect(frame.text.contains(#""data":{"hello":"world","n":12345678901234567890}"#))

            let event = try await sse.nextMessage()
            // SSE ids are offsets, what Last-Event-ID resumes from.
            #expect(event.id == String(try Envelope(decoding: frame.payload).offset ?? 0))
            #expect(event.id != "0")
            #expect(try Envelope(decoding: Array(event.data.utf8)) == envelope)
            await ws.close()
            await sse.close()
        }
    }

    @Test("text and binary payloads are carried safely")
    func payloadEncodings() async throws {
        try await TestGateway.with { gateway in
            let ws = try await TestWebSocket.connect(port: gateway.port)
            _ = try await ws.subscribe(["enc"])
            try await gateway.publish("enc", "hello \"world\"\n")
            let text = try Envelope(decoding: try await ws.next("message").payload)
            #expect(text.encoding == .text)
            #expect(text.payload == Array("hello \"world\"\n".utf8))

            let binary: [UInt8] = [0, 1, 2, 0xFF, 0xFE, 0x80]
            try await gateway.publish("enc", binary)
            let frame = try await ws.next("message")
            let decoded = try Envelope(decoding: frame.payload)
            #expect(decoded.encoding == .base64)
            #expect(decoded.payload == binary)
            await ws.close()
        }
    }

    @Test("hundreds of messages arrive in order, none lost, on WebSocket and SSE")
    func orderAndCompleteness() async throws {
        let count = 500
        try await TestGateway.with { gateway in
            var sockets: [TestWebSocket] = []
            for _ in 0..<3 {
                let ws = try await TestWebSocket.connect(port: gateway.port)
                #expect(try await ws.subscribe(["orders.book"]).type == "reply")
                sockets.append(ws)
            }
            let sse = try await TestEventStream.connect(port: gateway.port, channels: ["orders.book"])
            let publisher = try await RawConnection.connect(port: gateway.port)
            for n in 1...count {
                let response = try await publisher.request("POST", "/publish?subject=orders.book", body: Array("{\"n\":\(n)}".utf8))
                #expect(response.status == 200)
            }
            for ws in sockets {
                for n in 1...count {
                    let frame = try await ws.next("message")
                    #expect(frame.text.hasSuffix("\"data\":{\"n\":\(n)}}"), "WebSocket message \(n) out of order: \(frame.text)")
                }
            }
            for n in 1...count {
                let event = try await sse.nextMessage()
                #expect(event.data.hasSuffix("\"data\":{\"n\":\(n)}}"), "SSE message \(n) out of order")
            }
            #expect(try await gateway.metric("storm_messages_delivered_total{transport=\"websocket\"}") == Double(3 * count))
            #expect(try await gateway.metric("storm_messages_delivered_total{transport=\"sse\"}") == Double(count))
            // Batched: never more writes than deliveries, and at least one per connection.
            let writes = try await gateway.metric("storm_fanout_writes_total") ?? 0
            #expect(writes >= 4 && writes <= Double(4 * count))
            #expect(try await gateway.metric("storm_fanout_pass_seconds_count") ?? 0 >= 1)
            await publisher.close()
        }
    }

    @Test("WebSocket publish, ping and unsubscribe")
    func webSocketOps() async throws {
        try await TestGateway.with { gateway in
            let ws = try await TestWebSocket.connect(port: gateway.port)
            _ = try await ws.subscribe(["chat.lobby", "chat.other"])
            try await ws.send(#"{"id":"p1","op":"ping"}"#)
            let pong = try await ws.next("reply")
            #expect(pong.text == #"{"type":"reply","id":"p1","result":{"pong":true}}"#)

            try await ws.send(#"{"id":7,"op":"publish","channel":"chat.lobby","data":{"text":"hi"}}"#)
            var sawReply = false
            var sawMessage = false
            for _ in 0..<2 {
                let frame = try await ws.readFrame()
                if frame.type == "reply" {
                    #expect(frame.text.hasPrefix(#"{"type":"reply","id":7,"result":{"id":"#))
                    sawReply = true
                }
                if frame.type == "message" {
                    #expect(frame.text.contains(#""data":{"text":"hi"}"#))
                    sawMessage = true
                }
            }
            #expect(sawReply && sawMessage)

            try await ws.send(#"{"id":8,"op":"publish","channel":"chat.other","data":"plain words"}"#)
            let textMessage = try await ws.next("message")
            #expect(textMessage.text.contains(#""data":"plain words","encoding":"text""#))

            try await ws.send(#"{"id":9,"op":"publish","channel":"chat.other","data":"AAEC/w==","encoding":"base64"}"#)
            let binaryMessage = try Envelope(decoding: try await ws.next("message").payload)
            #expect(binaryMessage.payload == [0, 1, 2, 0xFF])

            try await ws.send(#"{"id":10,"op":"unsubscribe","channel":"chat.lobby"}"#)
            _ = try await ws.next("reply")
            try await gateway.publish("chat.lobby", "not for you")
            try await gateway.publish("chat.other", "for you")
            let next = try await ws.next("message")
            #expect(next.string("channel") == "chat.other")
            await ws.close()
        }
    }

    @Test("a slow client is disconnected while a fast one gets everything; reading again, it finds close code 4008")
    func slowClientIsDropped() async throws {
        let count = 800
        let payload = String(repeating: "x", count: 16 * 1024)
        try await TestGateway.with(configure: {
            $0.limits.clientBufferBytes = 256 * 1024
            $0.limits.closeGrace = .seconds(60)  // so that the test reads the close frame, however busy the machine
        }) { gateway in
            let fast = try await TestWebSocket.connect(port: gateway.port)
            _ = try await fast.subscribe(["firehose"])
            // The slow client subscribes, then stops reading: its kernel buffers fill, then the server's.
            let slow = try await TestWebSocket.connect(port: gateway.port, receiveBuffer: 4096)
            _ = try await slow.subscribe(["firehose"])
            try await slow.connection.channel.setOption(.autoRead, value: false)

            let publisher = try await RawConnection.connect(port: gateway.port)
            async let received: Int = {
                var n = 0
                while n < count {
                    let frame = try await fast.next("message", seconds: 30)
                    n += 1
                    #expect(frame.text.contains("\"n\(n)\""), "fast client message \(n) out of order")
                }
                return n
            }()
            for n in 1...count {
                let response = try await publisher.request("POST", "/publish?subject=firehose", body: Array("{\"n\(n)\":\"\(payload)\"}".utf8))
                #expect(response.status == 200)
            }
            #expect(try await received == count)
            #expect(try await gateway.metric("storm_slow_client_disconnects_total{transport=\"websocket\"}") == 1)
            // What the slow client receives when it reads again: messages in order, then 4008, then the end.
            try await slow.connection.channel.setOption(.autoRead, value: true)
            slow.connection.channel.read()
            var messages = 0
            var closeCode: UInt16?
            for _ in 0..<(count + 10) {
                let frame = try await slow.readFrame(seconds: 30)
                if frame.opcode == 0x8 {
                    closeCode = frame.closeCode
                    break
                }
                if frame.opcode == 0x1, frame.text.contains("\"type\":\"message\"") {
                    messages += 1
                    #expect(frame.text.contains("\"n\(messages)\""), "slow client message \(messages) out of order")
                }
            }
            #expect(closeCode == 4008, "the slow client read \(messages) messages and then no 4008 close frame")
            #expect(messages < count, "the slow client was not cut short: it read all \(messages)")
            try await slow.connection.waitUntilClosed(seconds: 90)
            await publisher.close()
            await fast.close()
            await slow.close()
        }
    }

    @Test("a slow SSE client is disconnected; reading again, it finds the end of the stream")
    func slowSSEClientGetsEndOfStream() async throws {
        let count = 400
        let payload = String(repeating: "y", count: 16 * 1024)
        try await TestGateway.with(configure: {
            $0.limits.clientBufferBytes = 256 * 1024
            $0.limits.closeGrace = .seconds(60)
        }) { gateway in
            let slow = try await RawConnection.connect(port: gateway.port, receiveBuffer: 4096)
            try await slow.send("GET /events?subject=sse-firehose HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n")
            #expect(try await slow.readResponseHead().status == 200)
            try await slow.channel.setOption(.autoRead, value: false)
            let publisher = try await RawConnection.connect(port: gateway.port)
            var published = 0
            while published < count, try await gateway.metric("storm_slow_client_disconnects_total{transport=\"sse\"}") != 1 {
                published += 1
                let response = try await publisher.request("POST", "/publish?subject=sse-firehose", body: Array("{\"n\(published)\":\"\(payload)\"}".utf8))
                #expect(response.status == 200)
            }
            #expect(try await gateway.metric("storm_slow_client_disconnects_total{transport=\"sse\"}") == 1, "not disconnected after \(published) messages")
            try await slow.channel.setOption(.autoRead, value: true)
            slow.channel.read()
            // Everything up to the terminating chunk (RFC 9112 section 7.1: a zero-size chunk), then the close.
            let terminator = Array("\r\n0\r\n\r\n".utf8)
            // The terminator is the last thing sent: look at the tail only (megabytes arrive before it).
            let ended: Bool = try await slow.read("the end of the SSE stream", seconds: 30) { buffer in
                buffer.readableBytesView.suffix(terminator.count).elementsEqual(terminator) ? true : nil
            }
            #expect(ended)
            try await slow.waitUntilClosed(seconds: 90)
            await publisher.close()
            await slow.close()
        }
    }

    @Test("shutdown closes WebSocket clients with 1001 and ends SSE streams")
    func shutdownDrains() async throws {
        let gateway = try await TestGateway.start()
        let ws = try await TestWebSocket.connect(port: gateway.port)
        _ = try await ws.subscribe(["bye"])
        let sse = try await TestEventStream.connect(port: gateway.port, channels: ["bye"])
        try await gateway.publish("bye", "last")
        _ = try await ws.next("message")
        _ = try await sse.nextMessage()

        await gateway.stop()

        let close = try await ws.readFrame()
        #expect(close.opcode == 0x8)
        #expect(close.closeCode == 1001)
        try await ws.connection.waitUntilClosed()
        try await sse.connection.waitUntilClosed()
        await #expect(throws: (any Error).self) { _ = try await RawConnection.connect(port: gateway.port) }
    }

    @Test("health, readiness and metrics endpoints")
    func operationalEndpoints() async throws {
        try await TestGateway.with { gateway in
            let connection = try await RawConnection.connect(port: gateway.port)
            let health = try await connection.request("GET", "/healthz")
            #expect(health.status == 200)
            let ready = try await connection.request("GET", "/readyz")
            #expect(ready.status == 200)
            #expect(ready.text.contains(#""broker":"memory""#))
            let metrics = try await connection.request("GET", "/metrics")
            #expect(metrics.status == 200)
            for name in [
                "storm_connections{transport=\"websocket\"}", "storm_messages_published_total", "storm_messages_delivered_total",
                "storm_messages_dropped_total", "storm_slow_client_disconnects_total", "storm_publish_duration_seconds_bucket",
                "storm_fanout_latency_seconds_bucket", "storm_fanout_pass_seconds_bucket", "storm_fanout_writes_total",
                "storm_broker_connected 1",
            ] {
                #expect(metrics.text.contains(name), "missing \(name) in /metrics")
            }
            await connection.close()
        }
    }
}
