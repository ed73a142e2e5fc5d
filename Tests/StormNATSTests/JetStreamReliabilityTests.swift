import Foundation
import Logging
import NIOConcurrencyHelpers
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

/// Broker outages and stream settings against real nats-servers: a gateway that starts before NATS, an
/// existing stream left alone (or updated with `--stream-update`), and a full stream answering 507.
@Suite(
    "JetStream reliability",
    .enabled(if: NATSTestEnvironment.shouldRun, "STORM_TEST_NATS_URL is not set: run ./scripts/test to start nats-server"))
struct JetStreamReliabilityTests {
    private func logger(_ label: String) -> Logger {
        var logger = Logger(label: "storm.test.\(label)")
        logger.logLevel = ProcessInfo.processInfo.environment["STORM_TEST_LOG"].flatMap(Logger.Level.init(rawValue:)) ?? .critical
        return logger
    }

    private func tag() -> String { "\(UInt32.random(in: 0...UInt32.max))" }

    private func broker(url: String, prefix: String, stream: JetStreamStreamConfiguration) -> NATSBroker {
        var configuration = NATSBrokerConfiguration(urls: [url], subjectPrefix: prefix, connectionName: "reliability-test", reconnectWait: .milliseconds(50))
        configuration.maxReconnectWait = .milliseconds(500)
        configuration.streamRetryBackoff = RetryBackoff(initial: .milliseconds(50), cap: .milliseconds(500), jitter: 0.2)
        configuration.jetStream?.stream = stream
        return NATSBroker(configuration: configuration, logger: logger("broker"))
    }


    private func readyz(_ gateway: Gateway) async throws -> TestHTTPResponse {
        let connection = try await RawConnection.connect(port: gateway.port)
        let response: TestHTTPResponse
        do {
            response = try await connection.request("GET", "/readyz")
        } catch {
            await connection.close()
            throw error
        }
        await connection.close()
        return response
    }

    @Test("a gateway started while nothing listens on the NATS port becomes ready once nats-server with JetStream starts there")
    func startsBeforeNATS() async throws {
        _ = try NATSTestEnvironment.requireURL()
        let binary = try NATSTestEnvironment.requireServerBinary()
        let server = PrivateNATSServer(binary: binary, port: try await unusedPort())
        defer { server.stop() }
        let id = tag()
        let stream = JetStreamStreamConfiguration(name: "STORMREL\(id)", subjectPrefix: "storm.test.rel\(id)")
        let gateway = try await TestGateway.start(broker: broker(url: server.url, prefix: stream.subjectPrefix, stream: stream))
        do {
            let before = try await readyz(gateway)
            #expect(before.status == 503)
            #expect(before.text.contains("broker_unavailable"))
            let refused = try await gateway.publish("room", "{\"n\":0}")
            #expect(refused.status == 503 && refused.text.contains("broker_unavailable"))

            try server.start()
            #expect(await server.waitUntilReady(), "private nats-server did not start")
            let ready = try await eventually { try await readyz(gateway).status == 200 }
            #expect(ready, "the gateway did not become ready after NATS started")
            let published = try await gateway.publish("room", "{\"n\":1}")
            #expect(published.status == 200, "\(published.text)")
        } catch {
            await gateway.stop()
            throw error
        }
        await gateway.stop()
    }

    @Test("control requests reach a broker that subscribed before NATS was up")
    func controlBeforeNATS() async throws {
        _ = try NATSTestEnvironment.requireURL()
        let binary = try NATSTestEnvironment.requireServerBinary()
        let server = PrivateNATSServer(binary: binary, port: try await unusedPort())
        defer { server.stop() }
        let id = tag()
        let stream = JetStreamStreamConfiguration(name: "STORMREL\(id)", subjectPrefix: "storm.test.rel\(id)")
        let receiver = broker(url: server.url, prefix: stream.subjectPrefix, stream: stream)
        try await receiver.start()
        let received = ReceivedControl()
        let subscription = try await receiver.subscribeControl(gateway: "g\(id)") { received.add($0) }

        try server.start()
        #expect(await server.waitUntilReady(), "private nats-server did not start")
        let sender = broker(url: server.url, prefix: stream.subjectPrefix, stream: stream)
        try await sender.start()
        #expect(await eventually { receiver.isConnected && sender.isConnected })
        // Core NATS is at most once: send until one arrives (bounded: 100 tries).
        for _ in 0..<100 where received.count == 0 {
            try await sender.sendControl(Array("disconnect".utf8), to: "g\(id)")
            _ = await eventually(timeout: .milliseconds(100)) { received.count > 0 }
        }
        #expect(received.count > 0, "the control request never arrived")
        subscription.cancel()
        await sender.shutdown()
        await receiver.shutdown()
    }

    @Test("an existing stream with other settings is left unchanged without --stream-update, and updated with it")
    func existingStreamIsKept() async throws {
        let url = try NATSTestEnvironment.requireURL()
        let id = tag()
        let operatorStream = JetStreamStreamConfiguration(name: "STORMREL\(id)", subjectPrefix: "storm.test.rel\(id)", maxMessages: 1000)
        let session = try JetStreamSession.connect(urls: [url], name: "reliability-operator")
        defer {
            try? session.deleteStream(operatorStream.name)
            session.close()
        }
        _ = try ensureStream(context: session.context, configuration: operatorStream)
        #expect(try session.streamLimits(operatorStream.name)?.maxMessages == 1000)

        // The gateway's configuration: unlimited messages (the default), no --stream-update.
        var configured = operatorStream
        configured.maxMessages = -1
        let keeping = broker(url: url, prefix: configured.subjectPrefix, stream: configured)
        try await keeping.start()
        #expect(keeping.unavailableReason == nil, "\(keeping.unavailableReason ?? "")")
        await keeping.shutdown()
        #expect(try session.streamLimits(operatorStream.name)?.maxMessages == 1000, "the stream was changed without --stream-update")

        configured.updateExisting = true
        let updating = broker(url: url, prefix: configured.subjectPrefix, stream: configured)
        try await updating.start()
        #expect(updating.unavailableReason == nil, "\(updating.unavailableReason ?? "")")
        await updating.shutdown()
        #expect(try session.streamLimits(operatorStream.name)?.maxMessages == -1, "--stream-update did not update the stream")
    }

    @Test("a full stream with discard new answers 507 storage_full, counts it, takes /readyz to 503, and recovers after a purge")
    func fullStream() async throws {
        let url = try NATSTestEnvironment.requireURL()
        let id = tag()
        let stream = JetStreamStreamConfiguration(name: "STORMREL\(id)", subjectPrefix: "storm.test.rel\(id)", maxBytes: 4096, discard: .new)
        let session = try JetStreamSession.connect(urls: [url], name: "reliability-operator")
        defer {
            try? session.deleteStream(stream.name)
            session.close()
        }
        let gateway = try await TestGateway.start(broker: broker(url: url, prefix: stream.subjectPrefix, stream: stream))
        do {
            #expect(try await readyz(gateway).status == 200)
            #expect(try session.streamLimits(stream.name)?.discard == .new)
            let body = String(repeating: "x", count: 200)
            var refusal: TestHTTPResponse?
            for index in 0..<200 {
                let answer = try await gateway.publish("room", "{\"n\":\(index),\"pad\":\"\(body)\"}")
                if answer.status != 200 {
                    refusal = answer
                    break
                }
            }
            let refused = try #require(refusal, "the stream never filled")
            #expect(refused.status == 507, "\(refused.text)")
            #expect(refused.text.contains("\"storage_full\""))
            #expect(try await gateway.metric("storm_publish_refused_total{reason=\"storage_full\"}") ?? 0 >= 1)
            let notReady = try await readyz(gateway)
            #expect(notReady.status == 503)
            #expect(notReady.text.contains("full"))

            try session.purgeStream(stream.name)
            // /readyz recovers by itself (it checks the stream for room), before any publish.
            let recovered = try await eventually { try await readyz(gateway).status == 200 }
            #expect(recovered, "/readyz stayed 503 after the purge")
            let again = try await gateway.publish("room", "{\"n\":\"after purge\"}")
            #expect(again.status == 200, "\(again.text)")
            #expect(try await readyz(gateway).status == 200)
        } catch {
            await gateway.stop()
            throw error
        }
        await gateway.stop()
    }
}

private final class ReceivedControl: Sendable {
    private let messages = NIOLockedValueBox<[[UInt8]]>([])
    var count: Int { messages.withLockedValue { $0.count } }
    func add(_ message: [UInt8]) { messages.withLockedValue { $0.append(message) } }
}
