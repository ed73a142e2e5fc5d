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

/// Two gateways sharing one real nats-server (started by ./scripts/test): what one accepts, the other's
/// clients receive. In CI these fail, never skip, when the server is missing.
@Suite("Cluster over NATS", .serialized, .enabled(if: NATSTestEnvironment.shouldRun, "STORM_TEST_NATS_URL is not set: run ./scripts/test to start nats-server"))
struct ClusterTests {
    private func natsBroker(_ url: String, name: String, prefix: String) -> NATSBroker {
        var configuration = NATSBrokerConfiguration()
        configuration.urls = [url]
        configuration.connectionName = name
        configuration.subjectPrefix = prefix
        var logger = Logger(label: name)
        logger.logLevel = .warning
        return NATSBroker(configuration: configuration, logger: logger)
    }

    /// A subject prefix per test keeps tests that share the server from seeing each other's messages.
    private func uniquePrefix() -> String {
        "test\(UInt32.random(in: 0...UInt32.max))"
    }

    @Test("a message published on gateway A reaches WebSocket and SSE subscribers on gateway B, in order")
    func crossGateway() async throws {
        guard let url = TestEnvironment.requireNATS() else { return }
        let prefix = uniquePrefix()
        let count = 300
        try await TestGateway.with(broker: natsBroker(url, name: "gateway-a", prefix: prefix)) { a in
            try await TestGateway.with(broker: natsBroker(url, name: "gateway-b", prefix: prefix)) { b in
                let ws = try await TestWebSocket.connect(port: b.port)
                #expect(try await ws.subscribe(["cluster.news"]).type == "reply")
                let sse = try await TestEventStream.connect(port: b.port, channels: ["cluster.news"])
                #expect(sse.head.status == 200)
                let publisher = try await RawConnection.connect(port: a.port)
                for n in 1...count {
                    let response = try await publisher.request("POST", "/publish?subject=cluster.news", body: Array("{\"n\":\(n)}".utf8))
                    #expect(response.status == 200)
                }
                for n in 1...count {
                    let frame = try await ws.next("message")
                    #expect(frame.text.hasSuffix("\"data\":{\"n\":\(n)}}"), "WebSocket message \(n): \(frame.text)")
                }
                for n in 1...count {
                    let event = try await sse.nextMessage()
                    #expect(event.data.hasSuffix("\"data\":{\"n\":\(n)}}"), "SSE message \(n)")
                }
                // And back: a WebSocket publish on B reaches a subscriber on A.
                let back = try await TestWebSocket.connect(port: a.port)
                _ = try await back.subscribe(["cluster.back"])
                try await ws.send(#"{"id":1,"op":"publish","channel":"cluster.back","data":[1,2,3]}"#)
                #expect(try await back.next("message").text.contains(#""data":[1,2,3]"#))
                #expect(try await b.metric("storm_broker_connected") == 1)
                await publisher.close()
                await ws.close()
                await sse.close()
                await back.close()
            }
        }
    }

    @Test("the last local unsubscribe ends the gateway's NATS subscription")
    func interestCounting() async throws {
        guard let url = TestEnvironment.requireNATS() else { return }
        try await TestGateway.with(broker: natsBroker(url, name: "gateway-c", prefix: uniquePrefix())) { gateway in
            let first = try await TestWebSocket.connect(port: gateway.port)
            let second = try await TestWebSocket.connect(port: gateway.port)
            _ = try await first.subscribe(["interest"])
            _ = try await second.subscribe(["interest"])
            #expect(try await gateway.metric("storm_broker_subscriptions") == 1)
            await first.close()
            try await first.connection.waitUntilClosed()
            try await Task.sleep(for: .milliseconds(100))
            #expect(try await gateway.metric("storm_broker_subscriptions") == 1)
            await second.close()
            // Bounded wait for the server to notice the close.
            var subscriptions: Double? = 1
            for _ in 0..<100 where subscriptions != 0 {
                try await Task.sleep(for: .milliseconds(20))
                subscriptions = try await gateway.metric("storm_broker_subscriptions")
            }
            #expect(subscriptions == 0)
        }
    }
}
