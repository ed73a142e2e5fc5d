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

/// Idle connections: WebSocket pings find dead peers, SSE heartbeats keep proxies from timing out.
@Suite("Keepalive")
struct KeepaliveTests {
    /// Also at 1 s, the once-a-second tick's own period: a tick that came late used to find twice the
    /// interval of silence before it had pinged, and closed clients that answered every ping.
    @Test("a silent WebSocket client is pinged, then dropped; one that answers stays", arguments: [1, 2])
    func webSocketPings(intervalSeconds: Int64) async throws {
        try await TestGateway.with(configure: { $0.limits.webSocketPingInterval = .seconds(intervalSeconds) }) { gateway in
            let silent = try await TestWebSocket.connect(port: gateway.port)
            let lively = try await TestWebSocket.connect(port: gateway.port)
            _ = try await silent.subscribe(["quiet"])
            _ = try await lively.subscribe(["quiet"])

            // The lively client answers each ping with a pong, as browsers do.
            async let livelyPings: Int = {
                var pings = 0
                let deadline = ContinuousClock.now + .seconds(max(7, 6 * intervalSeconds))
                while ContinuousClock.now < deadline {
                    guard let frame = try? await lively.readFrame(seconds: 1) else { continue }
                    if frame.opcode == 0x9 {
                        pings += 1
                        try await lively.sendFrame(opcode: 0xA, payload: frame.payload)
                    }
                    #expect(frame.opcode != 0x8, "a client that answers pings must not be closed")
                }
                return pings
            }()

            let ping = try await silent.readFrame(seconds: 10)
            #expect(ping.opcode == 0x9)
            let close = try await silent.readFrame(seconds: 10)
            #expect(close.opcode == 0x8)
            #expect(close.closeCode == 1001)
            // The gateway forgot the silent connection: only the lively one is left.
            var open: Double? = 2
            for _ in 0..<200 where open != 1 {
                try await Task.sleep(for: .milliseconds(50))
                open = try await gateway.metric("storm_connections{transport=\"websocket\"}")
            }
            #expect(open == 1, "the silent connection is still open on the gateway")
            #expect(try await livelyPings >= 1)
            #expect(!lively.connection.isClosed)
            await lively.close()
        }
    }

    @Test("SSE streams carry heartbeat comments")
    func sseHeartbeats() async throws {
        try await TestGateway.with(configure: { $0.limits.sseHeartbeatInterval = .seconds(1) }) { gateway in
            let sse = try await TestEventStream.connect(port: gateway.port, channels: ["quiet"])
            #expect(sse.head.header("transfer-encoding") == "chunked")
            var sawHeartbeat = false
            for _ in 0..<4 where !sawHeartbeat {
                let event = try await sse.nextEvent(seconds: 5)
                sawHeartbeat = event.comment == "heartbeat"
            }
            #expect(sawHeartbeat)
            await sse.close()
        }
    }
}
