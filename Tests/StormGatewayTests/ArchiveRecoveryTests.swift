import Foundation
import Logging
import NIOCore
import StormCore
import StormTestSupport
import Testing

@testable import StormBroker
@testable import StormConsumer
@testable import StormGateway
@testable import StormNATS
@testable import StormObservability
@testable import StormStore

/// Issue #14, item 1: one history reader. A stream that keeps 10 messages, a consumer that copies
/// everything into PostgreSQL, and a client resuming from an offset the stream dropped long ago: the
/// WebSocket recovery and the HTTP history route both answer with every message after it, exactly once,
/// read from PostgreSQL for the old part and from JetStream for the rest.
@Suite(
    "Recovery and history beyond the stream (real JetStream and PostgreSQL)", .serialized, .timeLimit(.minutes(3)),
    .enabled(if: PostgresTestEnvironment.shouldRun, "needs STORM_TEST_POSTGRES_URL and STORM_TEST_NATS_URL: run ./scripts/test"))
struct ArchiveRecoveryTests {
    static let kept: Int64 = 10

    struct World {
        var gateway: Gateway
        var consumer: HistoryConsumer
        var consumerTask: Task<Void, any Error>
        var postgres: PostgresClient
        var admin: PostgresClient
        var stream: JetStreamStreamConfiguration

        func stop() async {
            consumer.stop()
            _ = try? await consumerTask.value
            await gateway.stop()
            await postgres.shutdown()
            await admin.shutdown()
        }
    }

    static func makeWorld() async throws -> World {
        guard let natsURL = TestEnvironment.natsURL else { throw PostgresTestEnvironment.Missing(variable: "STORM_TEST_NATS_URL") }
        let databaseURL = try await PostgresTestEnvironment.freshDatabase()
        let tag = "a\(UInt32.random(in: 0...UInt32.max))"
        let stream = JetStreamStreamConfiguration(name: tag.uppercased(), subjectPrefix: "test.\(tag)", maxAge: .seconds(600), maxMessages: kept)

        var brokerConfiguration = NATSBrokerConfiguration()
        brokerConfiguration.urls = [natsURL]
        brokerConfiguration.connectionName = "archive-gateway"
        brokerConfiguration.subjectPrefix = stream.subjectPrefix
        brokerConfiguration.jetStream?.stream = stream
        let broker = NATSBroker(configuration: brokerConfiguration, logger: PostgresTestEnvironment.logger("archive-broker"))
        let gateway = try await TestGateway.start(broker: broker) { configuration in
            configuration.store.postgresURL = databaseURL
        }

        var consumerConfiguration = HistoryConsumerConfiguration(natsURLs: [natsURL])
        consumerConfiguration.stream = stream
        consumerConfiguration.maxBackoff = .milliseconds(500)
        consumerConfiguration.lagSampleInterval = .milliseconds(200)
        let logger = PostgresTestEnvironment.logger("archive-consumer")
        let postgres = PostgresClient(conninfo: databaseURL, logger: logger)
        let consumer = HistoryConsumer(configuration: consumerConfiguration, postgres: postgres, metrics: ConsumerMetrics(), logger: logger)
        let task = Task { try await consumer.run() }
        let admin = PostgresClient(conninfo: databaseURL, size: 1, logger: logger)
        return World(gateway: gateway, consumer: consumer, consumerTask: task, postgres: postgres, admin: admin, stream: stream)
    }

    static func offset(of response: TestHTTPResponse) throws -> UInt64 {
        UInt64(JSONScanner.number(try JSONScanner.objectMembers(response.body)["offset"] ?? []) ?? 0)
    }

    static func rows(_ admin: PostgresClient) async -> Int {
        (try? await PostgresTestEnvironment.counts(admin).rows) ?? -1
    }

    static func historyOffsets(_ body: [UInt8]) throws -> [UInt64] {
        let members = try JSONScanner.objectMembers(body)
        let text = String(decoding: members["messages"] ?? [], as: UTF8.self)
        return text.components(separatedBy: "\"offset\":").dropFirst().compactMap { UInt64($0.prefix { $0.isNumber }) }
    }

    @Test("a WebSocket client resuming from an offset the stream dropped recovers every message once; the history route answers the same")
    func resumeBeyondTheStream() async throws {
        let world = try await Self.makeWorld()
        do {
            try await run(world)
        } catch {
            await world.stop()
            throw error
        }
        await world.stop()
    }

    private func run(_ world: World) async throws {
        let gateway = world.gateway
        // 40 messages on two interleaved channels, in rounds of 8 each stored before the next, so the
        // consumer stores every one before the stream (10 messages) drops it.
        var offsets: [String: [UInt64]] = ["arch.a": [], "arch.b": []]
        var published = 0
        for round in 0..<5 {
            for n in 0..<8 {
                let channel = n % 2 == 0 ? "arch.a" : "arch.b"
                let response = try await gateway.publish(channel, "{\"n\":\(round * 8 + n)}")
                #expect(response.status == 200, "\(response.text)")
                offsets[channel, default: []].append(try Self.offset(of: response))
                published += 1
            }
            let expected = published
            let stored = await eventually { await Self.rows(world.admin) >= expected }
            let count = await Self.rows(world.admin)
            #expect(stored, "the consumer stored \(count) of \(expected)")
        }
        let channelA = offsets["arch.a"] ?? []
        #expect(channelA.count == 20)
        // The second message of arch.a is long gone from the stream (it keeps the newest 10 of 40).
        let resumeFrom = channelA[1]
        let missed = Array(channelA.dropFirst(2))

        let connection = try await RawConnection.connect(port: gateway.port)
        let first = try await connection.request("GET", "/api/v1/channels/arch.a/history?since=0&limit=1")
        let epoch = try JSONScanner.objectMembers(first.body)["epoch"].flatMap { try? JSONScanner.string($0) } ?? ""
        #expect(!epoch.isEmpty)

        // The HTTP route: one page, and pages of 3 across the junction of PostgreSQL and the stream.
        let page = try await connection.request("GET", "/api/v1/channels/arch.a/history?since=\(resumeFrom)&limit=1000")
        #expect(page.status == 200, "\(page.text)")
        #expect(try Self.historyOffsets(page.body) == missed)
        #expect(page.text.contains("\"complete\":true"), "\(page.text.prefix(200))")
        var paged: [UInt64] = []
        var since = resumeFrom
        for _ in 0..<50 {
            let response = try await connection.request("GET", "/api/v1/channels/arch.a/history?since=\(since)&limit=3")
            #expect(response.status == 200)
            let got = try Self.historyOffsets(response.body)
            guard let last = got.last else { break }
            paged += got
            since = last
        }
        #expect(paged == missed)

        // WebSocket recovery from the same offset: the reply, then every missed message once, then live.
        let socket = try await TestWebSocket.connect(port: gateway.port)
        try await socket.send("{\"id\":7,\"op\":\"subscribe\",\"channel\":\"arch.a\",\"since\":{\"offset\":\(resumeFrom),\"epoch\":\"\(epoch)\"}}")
        let reply = try await socket.next("reply")
        #expect(reply.text.contains("\"recovered\":true"), "\(reply.text)")
        var recovered: [UInt64] = []
        for _ in missed {
            let frame = try await socket.next("message")
            recovered.append(try Envelope(decoding: frame.payload).offset ?? 0)
        }
        #expect(recovered == missed)
        // The next frame is the live message published now: nothing repeated, nothing after it skipped.
        let live = try await gateway.publish("arch.a", "{\"n\":\"live\"}")
        let liveOffset = try Self.offset(of: live)
        let next = try await socket.next("message")
        #expect(try Envelope(decoding: next.payload).offset == liveOffset, "\(next.text)")

        // The same through SSE's Last-Event-ID.
        let events = try await TestEventStream.connect(port: gateway.port, channels: ["arch.a"], extraHeaders: ["Last-Event-ID: \(resumeFrom)"])
        var streamed: [UInt64] = []
        for _ in 0...missed.count {
            let event = try await events.nextMessage()
            streamed.append(UInt64(event.id ?? "") ?? 0)
        }
        #expect(streamed == missed + [liveOffset])

        // Without the archive's help (an offset of another epoch) nothing is promised.
        let other = try await TestWebSocket.connect(port: gateway.port)
        try await other.send("{\"id\":8,\"op\":\"subscribe\",\"channel\":\"arch.a\",\"since\":{\"offset\":\(resumeFrom),\"epoch\":\"another\"}}")
        #expect(try await other.next("reply").text.contains("\"recovered\":false"))

        await other.close()
        await events.close()
        await socket.close()
        await connection.close()
    }
}
