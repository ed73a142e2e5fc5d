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
// MARK: - Helpers

private func testLogger(_ label: String) -> Logger {
    var logger = Logger(label: "storm.test.\(label)")
    logger.logLevel = .warning
    return logger
}

/// A subject prefix no other test (or earlier run against the same server) shares.
private func uniquePrefix() -> String {
    "storm.test.p\(UInt32.random(in: 0...UInt32.max))"
}

private func makeBroker(
    url: String, prefix: String, name: String, configure: (inout NATSBrokerConfiguration) -> Void = { _ in }
) -> NATSBroker {
    var configuration = NATSBrokerConfiguration(urls: [url], subjectPrefix: prefix, connectionName: name)
    configure(&configuration)
    return NATSBroker(configuration: configuration, logger: testLogger(name))
}

private func channel(_ name: String) throws(StormError) -> ChannelName {
    try ChannelName(validating: name)
}

private func envelopeBuffer(channel: ChannelName, index: Int) -> ByteBuffer {
    let envelope = Envelope(
        channel: channel, id: "test-\(index)", timestampMicros: unixMicrosNow(), payload: Array("{\"n\":\(index)}".utf8))
    return ByteBuffer(bytes: envelope.encoded())
}


/// Collects deliveries from a nats.c thread.
private final class Inbox: Sendable {
    private let items = NIOLockedValueBox<[ByteBuffer]>([])
    var count: Int { items.withLockedValue { $0.count } }
    var all: [ByteBuffer] { items.withLockedValue { $0 } }
    var delivery: BrokerDelivery { { [self] buffer, _ in items.withLockedValue { $0.append(buffer) } } }
}

/// Flips when released: proves nats.c let go of the delivery closure.
private final class ReleaseProbe: Sendable {
    let released: NIOLockedValueBox<Bool>
    init(_ flag: NIOLockedValueBox<Bool>) { released = flag }
    deinit { released.withLockedValue { $0 = true } }
}

@Suite("NATSBroker without a server")
struct NATSBrokerOfflineTests {
    @Test("an invalid URL is a configuration error naming the URL, and nothing crashes")
    func invalidURL() async throws {
        for url in ["not a url", "http://127.0.0.1:4222", "nats://", "nats://127.0.0.1:99999"] {
            let broker = NATSBroker(
                configuration: NATSBrokerConfiguration(urls: [url], connectionName: "invalid"), logger: testLogger("invalid"))
            do {
                try await broker.start()
                Issue.record("'\(url)' must be refused")
            } catch {
                #expect(error.code == .configuration)
                #expect(error.message.contains(url), "message should name the URL: \(error.message)")
            }
            #expect(!broker.isConnected)
            do {
                try await broker.publish(ByteBuffer(string: "{}"), on: try channel("a.b"))
                Issue.record("publish on a broker that never started must fail")
            } catch {
                #expect(error.code == .brokerUnavailable)
            }
            await broker.shutdown()
            await broker.shutdown()
        }
    }

    @Test("credentials in a URL never reach errors or the endpoint description")
    func credentialsAreRedacted() async throws {
        let broker = NATSBroker(
            configuration: NATSBrokerConfiguration(urls: ["nats://alice:s3cret@127.0.0.1:99999"], connectionName: "redact"),
            logger: testLogger("redact"))
        #expect(!broker.endpointDescription.contains("s3cret"))
        do {
            try await broker.start()
            Issue.record("port 99999 must be refused")
        } catch {
            #expect(error.code == .configuration)
            #expect(!error.message.contains("s3cret"))
        }
    }

    @Test("an invalid subject prefix is a configuration error")
    func invalidPrefix() async throws {
        let broker = NATSBroker(
            configuration: NATSBrokerConfiguration(urls: ["nats://127.0.0.1:4222"], subjectPrefix: "storm.>"),
            logger: testLogger("prefix"))
        do {
            try await broker.start()
            Issue.record("a wildcard prefix must be refused")
        } catch {
            #expect(error.code == .configuration)
        }
    }

    @Test("without connect retries, an unreachable server is a connection error")
    func unreachableWithoutRetry() async throws {
        let port = try await unusedPort()
        let broker = NATSBroker(
            configuration: NATSBrokerConfiguration(
                urls: ["nats://127.0.0.1:\(port)"], connectionName: "unreachable", retryOnFailedConnect: false,
                connectTimeout: .milliseconds(500)),
            logger: testLogger("unreachable"))
        do {
            try await broker.start()
            Issue.record("connecting to a closed port must fail without retries")
        } catch {
            #expect(error.code == .connection)
            #expect(error.message.contains("127.0.0.1:\(port)"))
        }
        #expect(!broker.isConnected)
        await broker.shutdown()
    }

    @Test("with connect retries, start returns, and publishing and subscribing are refused until NATS answers")
    func unreachableWithRetry() async throws {
        let port = try await unusedPort()
        let broker = NATSBroker(
            configuration: NATSBrokerConfiguration(
                urls: ["nats://127.0.0.1:\(port)"], connectionName: "retrying", reconnectWait: .milliseconds(50)),
            logger: testLogger("retrying"))
        try await broker.start()
        try await broker.start()  // idempotent
        #expect(!broker.isConnected)
        let target = try channel("room.1")
        do {
            try await broker.publish(envelopeBuffer(channel: target, index: 0), on: target)
            Issue.record("publish while disconnected must fail")
        } catch {
            #expect(error.code == .brokerUnavailable)
            #expect(error.message.contains("nothing was published"))
        }
        do {
            _ = try await broker.subscribe(to: target) { _, _ in }
            Issue.record("subscribe while disconnected must fail")
        } catch {
            #expect(error.code == .brokerUnavailable)
        }
        await broker.shutdown()
        await broker.shutdown()
        #expect(!broker.isConnected)
        await #expect(throws: StormError.self) { try await broker.start() }
    }
}

// MARK: - Integration tests against a real nats-server

@Suite(
    "NATSBroker against a real nats-server",
    .enabled(if: NATSTestEnvironment.shouldRun, "STORM_TEST_NATS_URL is not set: run ./scripts/test to start nats-server"))
struct NATSBrokerIntegrationTests {
    @Test("two gateways: 500 envelopes published on A arrive at B complete and in order")
    func twoGatewaysInOrder() async throws {
        let url = try NATSTestEnvironment.requireURL()
        let prefix = uniquePrefix()
        let gatewayA = makeBroker(url: url, prefix: prefix, name: "gateway-a")
        let gatewayB = makeBroker(url: url, prefix: prefix, name: "gateway-b")
        try await gatewayA.start()
        try await gatewayB.start()
        #expect(await eventually { gatewayA.isConnected && gatewayB.isConnected })

        let room = try channel("chat.room-1")
        let inbox = Inbox()
        let subscription = try await gatewayB.subscribe(to: room, deliver: inbox.delivery)
        // No sleep: subscribe returns only once the server knows the interest.
        for index in 0..<500 {
            try await gatewayA.publish(envelopeBuffer(channel: room, index: index), on: room)
        }
        #expect(await eventually { inbox.count >= 500 }, "received \(inbox.count) of 500")

        let ids = try inbox.all.map { buffer in
            try Envelope(decoding: Array(buffer.readableBytesView)).id
        }
        #expect(ids == (0..<500).map { "test-\($0)" })
        subscription.cancel()
        await gatewayA.shutdown()
        await gatewayB.shutdown()
    }

    @Test("channels map to <prefix>.<channel>: other prefixes and other channels are not delivered")
    func subjectsAreIsolated() async throws {
        let url = try NATSTestEnvironment.requireURL()
        let prefix = uniquePrefix()
        let broker = makeBroker(url: url, prefix: prefix, name: "isolation")
        let stranger = makeBroker(url: url, prefix: uniquePrefix(), name: "stranger")
        try await broker.start()
        try await stranger.start()
        #expect(await eventually { broker.isConnected && stranger.isConnected })
        #expect(broker.subject(for: try channel("a.b")) == "\(prefix).a.b")

        let watched = try channel("a.b")
        let inbox = Inbox()
        let subscription = try await broker.subscribe(to: watched, deliver: inbox.delivery)
        try await stranger.publish(envelopeBuffer(channel: watched, index: 1), on: watched)  // other prefix
        try await broker.publish(envelopeBuffer(channel: try channel("a.c"), index: 2), on: try channel("a.c"))
        try await broker.publish(envelopeBuffer(channel: watched, index: 3), on: watched)
        #expect(await eventually { inbox.count >= 1 })
        // Same connection, same order: "3" arrives after anything the other two could have produced.
        let ids = try inbox.all.map { try Envelope(decoding: Array($0.readableBytesView)).id }
        #expect(ids == ["test-3"])
        subscription.cancel()
        await broker.shutdown()
        await stranger.shutdown()
    }

    @Test("cancel stops deliveries and releases the closure; cancel is idempotent and safe after shutdown")
    func cancelStopsDeliveries() async throws {
        let url = try NATSTestEnvironment.requireURL()
        let prefix = uniquePrefix()
        let publisher = makeBroker(url: url, prefix: prefix, name: "cancel-pub")
        let subscriber = makeBroker(url: url, prefix: prefix, name: "cancel-sub")
        try await publisher.start()
        try await subscriber.start()
        #expect(await eventually { publisher.isConnected && subscriber.isConnected })

        let room = try channel("cancel.room")
        let sentinelRoom = try channel("cancel.sentinel")
        let inbox = Inbox()
        let sentinel = Inbox()
        let released = NIOLockedValueBox(false)
        let subscription: any BrokerSubscription
        do {
            let probe = ReleaseProbe(released)
            subscription = try await subscriber.subscribe(to: room) { buffer, _ in
                _ = probe
                inbox.delivery(buffer, 0)
            }
        }
        let sentinelSubscription = try await subscriber.subscribe(to: sentinelRoom, deliver: sentinel.delivery)

        try await publisher.publish(envelopeBuffer(channel: room, index: 0), on: room)
        #expect(await eventually { inbox.count == 1 })

        subscription.cancel()
        subscription.cancel()
        for index in 1...10 {
            try await publisher.publish(envelopeBuffer(channel: room, index: index), on: room)
        }
        try await publisher.publish(envelopeBuffer(channel: sentinelRoom, index: 99), on: sentinelRoom)
        #expect(await eventually { sentinel.count == 1 })
        #expect(inbox.count == 1, "a cancelled subscription received \(inbox.count - 1) more messages")
        #expect(await eventually { released.withLockedValue { $0 } }, "nats.c never released the delivery closure")

        await subscriber.shutdown()
        await publisher.shutdown()
        subscription.cancel()
        sentinelSubscription.cancel()
    }

    @Test("shutdown is idempotent, releases every subscription, and afterwards everything is refused cleanly")
    func shutdownIsIdempotent() async throws {
        let url = try NATSTestEnvironment.requireURL()
        let broker = makeBroker(url: url, prefix: uniquePrefix(), name: "shutdown")
        try await broker.start()
        #expect(await eventually { broker.isConnected })
        let released = NIOLockedValueBox(false)
        let room = try channel("shutdown.room")
        let subscription: any BrokerSubscription
        do {
            let probe = ReleaseProbe(released)
            subscription = try await broker.subscribe(to: room) { _, _ in _ = probe }
        }

        await broker.shutdown()
        await broker.shutdown()
        #expect(!broker.isConnected)
        #expect(await eventually { released.withLockedValue { $0 } }, "the delivery closure outlived shutdown")
        subscription.cancel()
        do {
            try await broker.publish(envelopeBuffer(channel: room, index: 0), on: room)
            Issue.record("publish after shutdown must fail")
        } catch {
            #expect(error.code == .brokerUnavailable)
        }
        do {
            _ = try await broker.subscribe(to: room) { _, _ in }
            Issue.record("subscribe after shutdown must fail")
        } catch {
            #expect(error.code == .brokerUnavailable)
        }
    }

    @Test("publishing while NATS is down is refused; after NATS returns, subscriptions work again")
    func reconnect() async throws {
        _ = try NATSTestEnvironment.requireURL()
        let binary = try NATSTestEnvironment.requireServerBinary()
        let server = PrivateNATSServer(binary: binary, port: try await unusedPort())
        try server.start()
        #expect(await server.waitUntilReady(), "private nats-server did not start")

        let broker = makeBroker(url: server.url, prefix: uniquePrefix(), name: "reconnect") {
            $0.reconnectWait = .milliseconds(50)
        }
        try await broker.start()
        #expect(await eventually { broker.isConnected })
        let room = try channel("reconnect.room")
        let inbox = Inbox()
        let subscription = try await broker.subscribe(to: room, deliver: inbox.delivery)
        try await broker.publish(envelopeBuffer(channel: room, index: 0), on: room)
        #expect(await eventually { inbox.count == 1 })

        server.stop()
        #expect(await eventually { !broker.isConnected })
        do {
            try await broker.publish(envelopeBuffer(channel: room, index: 1), on: room)
            Issue.record("publish while NATS is down must fail")
        } catch {
            #expect(error.code == .brokerUnavailable)
            #expect(error.message.contains("nothing was published"))
        }

        try server.start()
        #expect(await server.waitUntilReady(), "private nats-server did not restart")
        #expect(await eventually { broker.isConnected }, "the broker did not reconnect")
        // nats.c re-sends the SUB on reconnect; publish until one comes back (bounded: 100 tries).
        for index in 2..<102 where inbox.count < 2 {
            try await broker.publish(envelopeBuffer(channel: room, index: index), on: room)
            _ = await eventually(timeout: .milliseconds(100)) { inbox.count >= 2 }
        }
        #expect(inbox.count >= 2, "no delivery after the reconnect")
        subscription.cancel()
        await broker.shutdown()
        server.stop()
    }
}
