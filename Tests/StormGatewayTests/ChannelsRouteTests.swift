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

@Suite("GET /api/v1/channels")
struct ChannelsRouteTests {
    private func get(_ gateway: Gateway, _ path: String, method: String = "GET") async throws -> TestHTTPResponse {
        let connection = try await RawConnection.connect(port: gateway.port)
        return try await cleaningUp({ await connection.close() }) {
            return try await connection.request(method, path)
        }
    }

    @Test("channels with local subscribers, summed over the loops, sorted, filtered by pattern")
    func countsAndPattern() async throws {
        try await TestGateway.with { gateway in
            var sockets: [TestWebSocket] = []
            for channel in ["news.b", "chat.a", "chat.a"] {
                let socket = try await TestWebSocket.connect(port: gateway.port)
                let reply = try await socket.subscribe([channel])
                #expect(reply.type == "reply")
                sockets.append(socket)
            }
            let all = try await get(gateway, "/api/v1/channels")
            #expect(all.status == 200)
            #expect(all.text.contains(#""channels":[{"channel":"chat.a","subscribers":2,"messages":0},{"channel":"news.b","subscribers":1,"messages":0}]"#))
            let chat = try await get(gateway, "/api/v1/channels?pattern=chat.*")
            #expect(chat.text.contains(#""channels":[{"channel":"chat.a","subscribers":2,"messages":0}]"#))
            #expect(try await get(gateway, "/api/v1/channels?pattern=none.*").text.contains(#""channels":[]"#))
            #expect(try await get(gateway, "/api/v1/channels?pattern=bad..x").status == 400)
            #expect(try await get(gateway, "/api/v1/channels", method: "POST").status == 405)

            // Each message the broker delivers for a channel is counted once, however many subscribers it has.
            try await gateway.publish("chat.a", "one")
            try await gateway.publish("chat.a", "two")
            let counted = try await eventually(timeout: .seconds(20)) {
                try await get(gateway, "/api/v1/channels?pattern=chat.*").text.contains(#"{"channel":"chat.a","subscribers":2,"messages":2}"#)
            }
            #expect(counted, "two messages on chat.a")
            #expect(try await get(gateway, "/api/v1/channels?pattern=news.*").text.contains(#""messages":0"#))

            // A subscriber that leaves is no longer counted (bounded wait for the close to be processed).
            await sockets[0].close()
            var gone = false
            for _ in 0..<200 where !gone {
                gone = !(try await get(gateway, "/api/v1/channels").text.contains("news.b"))
                if !gone { try await Task.sleep(for: .milliseconds(10)) }
            }
            #expect(gone)
            for socket in sockets.dropFirst() { await socket.close() }
        }
    }
}
