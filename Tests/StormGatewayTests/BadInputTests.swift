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

/// Every kind of bad input gets a clear error, and the daemon and its other clients carry on.
@Suite("Bad input")
struct BadInputTests {
    /// After each abuse, a fresh client must still publish and receive.
    private func expectGatewayStillWorks(_ gateway: Gateway) async throws {
        let ws = try await TestWebSocket.connect(port: gateway.port)
        #expect(try await ws.subscribe(["still.alive"]).type == "reply")
        #expect(try await gateway.publish("still.alive", "yes").status == 200)
        #expect(try await ws.next("message").string("channel") == "still.alive")
        await ws.close()
    }

    @Test("bad channel names are refused on every transport")
    func badChannels() async throws {
        try await TestGateway.with { gateway in
            for bad in ["a..b", ".a", "a.", "a b", "a.*", "a.>", "", String(repeating: "x", count: 256), "caf\u{e9}"] {
                let response = try await gateway.publish(bad, "x")
                #expect(response.status == 400, "HTTP publish to '\(bad)' answered \(response.status)")
                #expect(response.text.contains(#""code":"invalid_channel""#) || response.text.contains(#""code":"bad_request""#))
            }
            let ws = try await TestWebSocket.connect(port: gateway.port)
            try await ws.send(#"{"id":1,"op":"subscribe","channel":"bad channel"}"#)
            let error = try await ws.next("error")
            #expect(error.text.contains(#""id":1"#))
            #expect(error.text.contains(#""code":"invalid_channel""#))
            #expect(error.text.contains("not allowed"))

            let sse = try await RawConnection.connect(port: gateway.port)
            let response = try await sse.request("GET", "/events?subject=a.*")
            #expect(response.status == 400)
            #expect(response.text.contains("invalid_channel"))
            let none = try await sse.request("GET", "/events")
            #expect(none.status == 400)
            await ws.close()
            try await expectGatewayStillWorks(gateway)
        }
    }

    @Test("oversized messages are refused with 413 or message_too_large")
    func oversized() async throws {
        try await TestGateway.with(configure: { $0.limits.maxMessageSize = 1024 }) { gateway in
            let big = Array(repeating: UInt8(ascii: "a"), count: 1025)
            let response = try await gateway.publish("big", big)
            #expect(response.status == 413)
            #expect(response.text.contains("message_too_large"))
            #expect(try await gateway.publish("big", Array(big.dropLast())).status == 200)

            let ws = try await TestWebSocket.connect(port: gateway.port)
            try await ws.send("{\"id\":2,\"op\":\"publish\",\"channel\":\"big\",\"data\":\"\(String(repeating: "a", count: 1025))\"}")
            let error = try await ws.next("error")
            #expect(error.text.contains("message_too_large"))
            // A frame far over the limit ends the connection with 1009.
            try await ws.sendFrame(opcode: 0x1, payload: Array(repeating: UInt8(ascii: " "), count: 64 * 1024))
            let close = try await ws.readFrame()
            #expect(close.closeCode == 1009)
            try await ws.connection.waitUntilClosed()
            try await expectGatewayStillWorks(gateway)
        }
    }

    @Test("malformed JSON and unknown ops get error replies and keep the connection")
    func malformedRequests() async throws {
        try await TestGateway.with { gateway in
            let ws = try await TestWebSocket.connect(port: gateway.port)
            for (request, needle) in [
                ("{not json", #""id":null"#), ("[1,2]", "bad_request"), (#"{"id":3}"#, "no 'op'"),
                (#"{"id":4,"op":"dance"}"#, "unknown op 'dance'"), (#"{"id":5,"op":"subscribe"}"#, "names no 'channel'"),
                (#"{"id":6,"op":"subscribe","channels":"x"}"#, "must be an array"), (#"{"id":7,"op":"publish","channel":"a"}"#, "needs 'data'"),
                (#"{"id":8,"op":"publish","channel":"a","data":"%%%","encoding":"base64"}"#, "not a valid base64"),
            ] {
                try await ws.send(request)
                let error = try await ws.next("error")
                #expect(error.text.contains(needle), "\(request) answered \(error.text)")
            }
            try await ws.send(#"{"id":9,"op":"ping"}"#)
            #expect(try await ws.next("reply").text.contains("pong"))
            await ws.close()
        }
    }

    @Test("too many channels on one connection is refused")
    func tooManyChannels() async throws {
        try await TestGateway.with(configure: { $0.limits.maxChannelsPerConnection = 3 }) { gateway in
            let ws = try await TestWebSocket.connect(port: gateway.port)
            #expect(try await ws.subscribe(["a", "b"]).type == "reply")
            let error = try await ws.subscribe(["c", "d"], id: 2)
            #expect(error.type == "error")
            #expect(error.text.contains("too_many_channels"))
            await ws.close()
        }
    }

    /// Each case: the bytes a client sends, and the close code RFC 6455 requires in answer.
    @Test(
        "RFC 6455 violations close the connection with the right code",
        arguments: [
            ("unmasked frame", TestWebSocket.frameBytes(opcode: 0x1, payload: Array("{}".utf8), masked: false), UInt16(1002)),
            ("binary data frame", TestWebSocket.frameBytes(opcode: 0x2, payload: [1, 2, 3]), UInt16(1003)),
            ("invalid UTF-8 in text", TestWebSocket.frameBytes(opcode: 0x1, payload: [0x7B, 0xC3, 0x28, 0x7D]), UInt16(1007)),
            ("reserved bit set", TestWebSocket.frameBytes(opcode: 0x1, payload: Array("{}".utf8), rsv: 0b100), UInt16(1002)),
            ("continuation without start", TestWebSocket.frameBytes(opcode: 0x0, payload: Array("{}".utf8)), UInt16(1002)),
            ("fragmented ping", TestWebSocket.frameBytes(opcode: 0x9, payload: [], fin: false), UInt16(1002)),
            ("oversized ping", TestWebSocket.frameBytes(opcode: 0x9, payload: Array(repeating: 1, count: 126)), UInt16(1002)),
            ("reserved opcode", TestWebSocket.frameBytes(opcode: 0x3, payload: []), UInt16(1002)),
            ("close with 1-byte payload", TestWebSocket.frameBytes(opcode: 0x8, payload: [3]), UInt16(1002)),
            ("close with code 1005", TestWebSocket.frameBytes(opcode: 0x8, payload: [0x03, 0xED]), UInt16(1002)),
            ("close with code 999", TestWebSocket.frameBytes(opcode: 0x8, payload: [0x03, 0xE7]), UInt16(1002)),
            ("close reason not UTF-8", TestWebSocket.frameBytes(opcode: 0x8, payload: [0x03, 0xE8, 0xFF]), UInt16(1007)),
            ("normal close", TestWebSocket.frameBytes(opcode: 0x8, payload: [0x03, 0xE8]), UInt16(1000)),
            ("close in the private range", TestWebSocket.frameBytes(opcode: 0x8, payload: [0x0F, 0xA0]), UInt16(4000)),
        ])
    func protocolViolations(name: String, bytes: [UInt8], expectedCode: UInt16) async throws {
        try await TestGateway.with { gateway in
            let ws = try await TestWebSocket.connect(port: gateway.port)
            try await ws.connection.send(bytes)
            let close = try await ws.readFrame()
            #expect(close.opcode == 0x8, "\(name): expected a close frame")
            #expect(close.closeCode == expectedCode, "\(name): close code \(close.closeCode ?? 0)")
            try await ws.connection.waitUntilClosed()
            try await expectGatewayStillWorks(gateway)
        }
    }

    @Test("fragmented messages, pings inside them, and ping/pong follow RFC 6455")
    func fragmentation() async throws {
        try await TestGateway.with { gateway in
            let ws = try await TestWebSocket.connect(port: gateway.port)
            let request = Array(#"{"id":42,"op":"ping"}"#.utf8)
            try await ws.sendFrame(opcode: 0x1, payload: Array(request[0..<5]), fin: false)
            try await ws.sendFrame(opcode: 0x9, payload: Array("in-between".utf8))
            try await ws.sendFrame(opcode: 0x0, payload: Array(request[5..<12]), fin: false)
            try await ws.sendFrame(opcode: 0x0, payload: Array(request[12...]), fin: true)
            let pong = try await ws.readFrame()
            #expect(pong.opcode == 0xA)
            #expect(pong.text == "in-between")
            let reply = try await ws.next("reply")
            #expect(reply.text.contains(#""id":42"#))
            await ws.close()
        }
    }

    @Test("unknown routes and methods get 404 and 405 as JSON")
    func routes() async throws {
        try await TestGateway.with { gateway in
            let connection = try await RawConnection.connect(port: gateway.port)
            let missing = try await connection.request("GET", "/nope")
            #expect(missing.status == 404)
            #expect(missing.text.contains(#"{"error":{"code":"not_found""#))
            let method = try await connection.request("GET", "/publish?subject=a")
            #expect(method.status == 405)
            let plain = try await connection.request("GET", "/ws")
            #expect(plain.status == 400)
            let noSubject = try await connection.request("POST", "/publish", body: Array("x".utf8))
            #expect(noSubject.status == 400)
            await connection.close()
        }
    }
}
