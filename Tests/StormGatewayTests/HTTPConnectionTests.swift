import NIOCore
import NIOPosix
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

/// `StormHTTPConnection`, which the bench's publishers drive from their event loops and `StormHTTPClient`
/// wraps for every `stormctl` command, against a real gateway.
@Suite("HTTP client connection")
struct HTTPConnectionTests {
    @Test("pipelined publishes are answered in order, and arrive in order")
    func pipelinedPublishes() async throws {
        try await TestGateway.with { gateway in
            let ws = try await TestWebSocket.connect(port: gateway.port)
            _ = try await ws.subscribe(["http.pipelined"])
            let loop = MultiThreadedEventLoopGroup.singleton.next()
            let connection = try await StormHTTPConnection.connect(
                to: StormEndpoint(host: "127.0.0.1", port: gateway.port), on: loop
            ).get()
            let channel = try ChannelName(validating: "http.pipelined")
            // All sent before the first answer is read: one connection, answered in request order.
            let answers = (0..<20).map { connection.publish(channel: channel, payload: Array("m\($0)".utf8)) }
            var ids: [String] = []
            for answer in answers {
                let response = try await answer.get()
                #expect(response.status == 200)
                ids.append(try JSONScanner.string(try JSONScanner.objectMembers(response.body)["id"] ?? []))
            }
            for (index, id) in ids.enumerated() {
                let envelope = try Envelope(decoding: try await ws.next("message").payload)
                #expect(envelope.id == id)
                #expect(envelope.payload == Array("m\(index)".utf8))
            }
            #expect(connection.isActive)
            try await connection.close().get()
            await ws.close()
        }
    }

    @Test("an error status is an answer; an unreachable gateway is a connection error")
    func failures() async throws {
        try await TestGateway.with { gateway in
            let loop = MultiThreadedEventLoopGroup.singleton.next()
            let connection = try await StormHTTPConnection.connect(
                to: StormEndpoint(host: "127.0.0.1", port: gateway.port), on: loop
            ).get()
            let refused = try await connection.send(method: .POST, path: "/publish", query: [("subject", "a..b")], body: [1]).get()
            #expect(refused.status == 400)
            #expect(String(decoding: refused.body, as: UTF8.self).contains("invalid_channel"))
            try await connection.close().get()
        }
        // A port nothing listens on: taken from a gateway that has stopped.
        let gateway = try await TestGateway.start()
        let port = gateway.port
        await gateway.stop()
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        do {
            _ = try await StormHTTPConnection.connect(to: StormEndpoint(host: "127.0.0.1", port: port), on: loop).get()
            Issue.record("connected to a stopped gateway")
        } catch let error as StormError {
            #expect(error.code == .connection)
            #expect(error.message.contains("connection refused"))
        }
        let client = StormHTTPClient(endpoint: StormEndpoint(host: "127.0.0.1", port: port))
        await #expect(throws: StormError.self) { _ = try await client.publish(channel: ChannelName(validating: "a"), payload: [1]) }
    }
}
