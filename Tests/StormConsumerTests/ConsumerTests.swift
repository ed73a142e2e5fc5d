import Foundation
import Logging
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

/// The history consumer against a real nats-server (JetStream) and PostgreSQL, both started by
/// `./scripts/test`. Each test has its own stream, subject prefix, durable and database.
@Suite(
    "History consumer (real NATS JetStream and PostgreSQL)", .serialized,
    .enabled(if: PostgresTestEnvironment.shouldRun, "needs STORM_TEST_POSTGRES_URL and STORM_TEST_NATS_URL: run ./scripts/test"))
struct ConsumerTests {
    /// One test's world: a stream, a database, and a way to publish into the stream.
    struct Fixture {
        var natsURL: String
        var databaseURL: String
        var stream: JetStreamStreamConfiguration
        var publisher: JetStreamSession
        var postgres: PostgresClient

        static func make() async throws -> Fixture {
            guard let natsURL = ProcessInfo.processInfo.environment["STORM_TEST_NATS_URL"], !natsURL.isEmpty else {
                throw PostgresTestEnvironment.Missing(variable: "STORM_TEST_NATS_URL")
            }
            let databaseURL = try await PostgresTestEnvironment.freshDatabase()
            let tag = UInt32.random(in: 0...UInt32.max)
            let stream = JetStreamStreamConfiguration(name: "STORMTEST\(tag)", subjectPrefix: "storm.test.c\(tag)")
            let publisher = try JetStreamSession.connect(urls: [natsURL], name: "consumer-test-publisher")
            _ = try ensureStream(context: publisher.context, configuration: stream)
            let postgres = PostgresClient(conninfo: databaseURL, logger: PostgresTestEnvironment.logger("consumer-test"))
            return Fixture(natsURL: natsURL, databaseURL: databaseURL, stream: stream, publisher: publisher, postgres: postgres)
        }

        func consumer(batchSize: Int = 1000) -> HistoryConsumer {
            var configuration = HistoryConsumerConfiguration(natsURLs: [natsURL])
            configuration.stream = stream
            configuration.batchSize = batchSize
            configuration.maxBackoff = .milliseconds(500)
            configuration.lagSampleInterval = .milliseconds(200)
            let logger = PostgresTestEnvironment.logger("consumer")
            return HistoryConsumer(
                configuration: configuration, postgres: PostgresClient(conninfo: databaseURL, logger: logger), metrics: ConsumerMetrics(),
                logger: logger)
        }

        /// Envelopes `range` on `channels` (round robin), published with `Nats-Msg-Id` = envelope id.
        func publish(_ range: ClosedRange<Int>, channels: [String] = ["chat.a", "chat.b", "news"], id: (Int) -> String = { "m-\($0)" }) throws {
            var batch: [JetStreamSession.Outgoing] = []
            for index in range {
                let channel = try ChannelName(validating: channels[index % channels.count])
                let envelope = Envelope(channel: channel, id: id(index), timestampMicros: unixMicrosNow(), payload: Array("{\"n\":\(index)}".utf8))
                batch.append(.init(subject: stream.subjectPrefix + "." + channel.rawValue, id: envelope.id, body: envelope.encoded()))
            }
            try publisher.publish(batch)
        }

        func tearDown() async {
            try? publisher.deleteStream(stream.name)
            publisher.close()
            await postgres.shutdown()
        }
    }

    /// Runs the consumer in the background until `body` returns, then stops it.
    static func running<T>(_ consumer: HistoryConsumer, _ body: () async throws -> T) async throws -> T {
        let task = Task { try await consumer.run() }
        do {
            let result = try await body()
            consumer.stop()
            _ = try? await task.value
            await consumer.postgres.shutdown()
            return result
        } catch {
            consumer.stop()
            _ = try? await task.value
            await consumer.postgres.shutdown()
            throw error
        }
    }

    /// Polls until `messages` holds `expected` rows (bounded); returns the final counts.
    static func waitForRows(_ postgres: PostgresClient, _ expected: Int, timeout: Duration = .seconds(60)) async throws -> (rows: Int, distinctIDs: Int) {
        let deadline = ContinuousClock.now + timeout
        var counts = (rows: -1, distinctIDs: -1)
        while ContinuousClock.now < deadline {
            if let now = try? await PostgresTestEnvironment.counts(postgres) {
                counts = now
                if now.rows >= expected { break }
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        return counts
    }

    @Test("a backlog of 10,000 messages becomes exactly 10,000 rows")
    func backlog() async throws {
        let fixture = try await Fixture.make()
        try await cleaningUp({ await fixture.tearDown() }) {
            try fixture.publish(1...10_000)   // the consumer is not running yet
            let consumer = fixture.consumer()
            let started = ContinuousClock.now
            let counts = try await Self.running(consumer) {
                let counts = try await Self.waitForRows(fixture.postgres, 10_000)
                // Ready once a lag sample saw nothing pending and nothing un-acknowledged: nothing is still
                // arriving after that (the final counts below would show a duplicate).
                #expect(await eventually { consumer.health == .ready }, "\(consumer.health)")
                return counts
            }
            let elapsed = ContinuousClock.now - started
            let final = try await PostgresTestEnvironment.counts(fixture.postgres)
            #expect(counts.rows == 10_000)
            #expect(final.rows == 10_000 && final.distinctIDs == 10_000)
            #expect(consumer.metrics.registry.emitToString().contains("storm_consumer_rows_total 10000"))
            print("consumer ingest: 10000 rows in \(elapsed) (\(Int(10_000 / (Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18))) rows/s, including connect and migrations)")

            // Offsets are the stream sequences, ascending per channel.
            let history = PostgresHistoryStore(client: fixture.postgres)
            let page = try await history.history(channel: ChannelName(validating: "chat.a"), after: 0, limit: 5)
            #expect(page.map(\.offset) == [3, 6, 9, 12, 15])
            #expect(page.first.map { (try? Envelope(decoding: $0.envelope))?.id } == "m-3")
        }
    }

    @Test("redelivery and republished ids never duplicate a row")
    func redeliveryIsIdempotent() async throws {
        let fixture = try await Fixture.make()
        try await cleaningUp({ await fixture.tearDown() }) {
            try fixture.publish(1...500)
            // The same Nats-Msg-Id again within the duplicate window: JetStream stores it once.
            try fixture.publish(1...500)
            // The same envelope ids under other Nats-Msg-Ids (a retry after the window): stored in the stream
            // twice, in the table once.
            var again: [JetStreamSession.Outgoing] = []
            for index in 1...100 {
                let channel = try ChannelName(validating: ["chat.a", "chat.b", "news"][index % 3])
                let envelope = Envelope(channel: channel, id: "m-\(index)", timestampMicros: unixMicrosNow(), payload: Array("{}".utf8))
                again.append(.init(subject: fixture.stream.subjectPrefix + "." + channel.rawValue, id: "retry-\(index)", body: envelope.encoded()))
            }
            try fixture.publisher.publish(again)

            let consumer = fixture.consumer(batchSize: 64)
            let first = try await Self.running(consumer) { try await Self.waitForRows(fixture.postgres, 500) }
            #expect(first.rows == 500)

            // Replay the whole stream through a new durable: every message is delivered again.
            try fixture.publisher.deleteConsumer(stream: fixture.stream.name, name: "storm-history")
            let replay = fixture.consumer()
            try await Self.running(replay) {
                let deadline = ContinuousClock.now + .seconds(30)
                while ContinuousClock.now < deadline, !replay.metrics.registry.emitToString().contains("storm_consumer_messages_acked_total 600") {
                    try await Task.sleep(for: .milliseconds(50))
                }
            }
            #expect(replay.metrics.registry.emitToString().contains("storm_consumer_messages_acked_total 600"))
            let final = try await PostgresTestEnvironment.counts(fixture.postgres)
            #expect(final.rows == 500 && final.distinctIDs == 500)
        }
    }

    @Test("PostgreSQL restarting mid-ingest loses nothing and stores nothing twice")
    func postgresRestart() async throws {
        guard let pgCtl = PostgresTestEnvironment.pgCtl else {
            throw PostgresTestEnvironment.Missing(variable: "STORM_TEST_PG_CTL")
        }
        let fixture = try await Fixture.make()
        try await cleaningUp({ await fixture.tearDown() }) {
            let total = 20_000
            try fixture.publish(1...2_000)
            let consumer = fixture.consumer(batchSize: 200)
            let counts = try await Self.running(consumer) {
                _ = try await Self.waitForRows(fixture.postgres, 1)
                // Keep publishing through the restart, so batches are in flight while the server dies.
                let publishing = Task {
                    for start in stride(from: 2_001, through: total, by: 1_000) {
                        try await NIOThreadPool.singleton.runIfActive { try fixture.publish(start...min(start + 999, total)) }
                        try await Task.sleep(for: .milliseconds(20))
                    }
                }
                // posix_spawn + waitpid on a pool thread: Foundation's Process.waitUntilExit can miss the exit of
                // a child when the cooperative pool is busy, and blocking there would starve the consumer.
                let status = try await NIOThreadPool.singleton.runIfActive { runCommand(pgCtl, ["-m", "immediate", "-w", "-t", "30", "restart"]) }
                #expect(status == 0)
                try await publishing.value
                return try await Self.waitForRows(fixture.postgres, total, timeout: .seconds(90))
            }
            #expect(counts.rows == total)
            let final = try await PostgresTestEnvironment.counts(fixture.postgres)
            #expect(final.rows == total && final.distinctIDs == total)
            let metrics = consumer.metrics.registry.emitToString()
            print("after the restart: \(metrics.split(separator: "\n").filter { $0.hasPrefix("storm_consumer_failures_total") }.joined(separator: "; "))")
        }
    }

    @Test("messages a killed consumer left unacknowledged count in the lag, and readiness says catching_up until they are redelivered")
    func unacknowledgedCountInLag() async throws {
        let fixture = try await Fixture.make()
        do {
            try fixture.publish(1...20)
            let consumer = fixture.consumer()
            // What kill -9 mid-batch leaves: a batch delivered to the durable consumer, never acknowledged.
            let dead = try ConsumerSession.open(consumer.configuration)
            let batch = try dead.fetch(prefix: consumer.configuration.stream.subjectPrefix + ".")
            #expect(batch.count == 20)
            batch.release()
            dead.close()
            try await Self.running(consumer) {
                let deadline = ContinuousClock.now + .seconds(20)
                while consumer.notReadyError?.code != .catchingUp, ContinuousClock.now < deadline {
                    try await Task.sleep(for: .milliseconds(50))
                }
                let error = consumer.notReadyError
                #expect(error?.code == .catchingUp, "\(String(describing: error))")
                #expect(error?.message.contains("20 messages") == true, "\(String(describing: error))")
                let scrape = String(decoding: consumer.metrics.registry.emitToBuffer(), as: UTF8.self)
                #expect(scrape.contains("storm_consumer_lag_messages 20.0"), "\(scrape.split(separator: "\n").filter { $0.contains("lag") })")
            }
        } catch {
            await fixture.tearDown()
            throw error
        }
        await fixture.tearDown()
    }

    @Test("the consumer role serves /healthz, /readyz (503 with the reason while PostgreSQL is unreachable) and /metrics")
    func consumerRoleHTTP() async throws {
        guard let natsURL = ProcessInfo.processInfo.environment["STORM_TEST_NATS_URL"], !natsURL.isEmpty else {
            throw PostgresTestEnvironment.Missing(variable: "STORM_TEST_NATS_URL")
        }
        var configuration = HistoryConsumerConfiguration(natsURLs: [natsURL])
        configuration.stream = JetStreamStreamConfiguration(name: "STORMTEST\(UInt32.random(in: 0...UInt32.max))", subjectPrefix: "storm.test.http")
        configuration.maxBackoff = .milliseconds(200)
        let logger = PostgresTestEnvironment.logger("consumer-http")
        let metrics = ConsumerMetrics()
        let consumer = HistoryConsumer(
            configuration: configuration, postgres: PostgresClient(conninfo: "postgresql://storm@127.0.0.1:1/none", logger: logger), metrics: metrics,
            logger: logger)
        let settings = HTTPServerSettings(
            requestPolicy: RequestPolicy(), connectionLimits: ConnectionLimits(), maxBodySize: 65_536, metrics: UncountedHTTPServer(),
            connectionIDs: ConnectionIDs(instanceID: "consumer"), logger: logger)
        let server = ConsumerRoutes.server(host: "127.0.0.1", port: 0, settings: settings, consumer: consumer, registry: metrics.registry)
        try await server.start()
        let port = server.localAddress?.port ?? 0
        try await Self.running(consumer) {
            // Until the consumer has tried PostgreSQL (and failed), /readyz says it is starting.
            #expect(await eventually { consumer.notReadyError?.code == .storeUnavailable }, "\(String(describing: consumer.notReadyError))")
            let connection = try await RawConnection.connect(port: port)
            try await cleaningUp({ await connection.close() }) {
                #expect(try await connection.request("GET", "/healthz").status == 200)
                let ready = try await connection.request("GET", "/readyz")
                #expect(ready.status == 503)
                #expect(ready.text.contains("PostgreSQL") && ready.text.contains("refused"))
                #expect(ready.text.contains("\"store_unavailable\""), "a PostgreSQL outage must name the store: \(ready.text)")
                let scrape = try await connection.request("GET", "/metrics")
                #expect(scrape.text.contains("storm_postgres_connected 0"))
                #expect(scrape.text.contains("storm_consumer_failures_total{reason=\"postgres\"}"))
                #expect(try await connection.request("GET", "/publish").status == 404)
                // The gateway's HTTP server: the same Origin policy, request ids and body limit.
                let foreign = try await connection.request("GET", "/healthz", headers: ["Origin: https://evil.example"])
                #expect(foreign.status == 403 && foreign.text.contains("origin_not_allowed"), "\(foreign.text)")
                #expect(try await connection.request("GET", "/healthz", headers: ["X-Request-Id: probe-7"]).header("x-request-id") == "probe-7")
                let large = try await RawConnection.connect(port: port)
                #expect(try await large.request("POST", "/metrics", body: Array(repeating: 0x61, count: 70_000)).status == 413)
                await large.close()
            }
        }
        await server.stop()
        if let session = try? JetStreamSession.connect(urls: [natsURL], name: "cleanup") {
            try? session.deleteStream(configuration.stream.name)
            session.close()
        }
    }
}

/// `STORM_BENCH_CONSUMER=N swift test --filter ConsumerIngestBenchmark`: publishes N messages, then times
/// the consumer storing them (the BENCHMARKS.md "Consumer ingest" figures). Off by default.
@Suite("Consumer ingest benchmark", .enabled(if: ProcessInfo.processInfo.environment["STORM_BENCH_CONSUMER"] != nil))
struct ConsumerIngestBenchmark {
    @Test("ingest rows/s from a JetStream backlog")
    func ingest() async throws {
        let total = Int(ProcessInfo.processInfo.environment["STORM_BENCH_CONSUMER"] ?? "") ?? 100_000
        let fixture = try await ConsumerTests.Fixture.make()
        try await cleaningUp({ await fixture.tearDown() }) {
            for start in stride(from: 1, through: total, by: 10_000) {
                try fixture.publish(start...min(start + 9_999, total), channels: (0..<100).map { "bench.c\($0)" }, id: { "b-\($0)" })
            }
            // Migrations and the first connect are not part of the figure.
            try await Migrations.apply(using: fixture.postgres, logger: PostgresTestEnvironment.logger("bench"))
            let consumer = fixture.consumer()
            let started = ContinuousClock.now
            let counts = try await ConsumerTests.running(consumer) { try await ConsumerTests.waitForRows(fixture.postgres, total, timeout: .seconds(300)) }
            let elapsed = ContinuousClock.now - started
            let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            #expect(counts.rows == total)
            print("consumer ingest benchmark: \(total) rows in \(String(format: "%.2f", seconds)) s = \(Int(Double(total) / seconds)) rows/s")
        }
    }
}

/// Runs `path` with `arguments` (stdin, stdout and stderr from /dev/null) and returns its exit status,
/// or -1 when it could not be started. Blocking.
func runCommand(_ path: String, _ arguments: [String]) -> Int32 {
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    for descriptor: Int32 in [0, 1, 2] {
        posix_spawn_file_actions_addopen(&actions, descriptor, "/dev/null", descriptor == 0 ? O_RDONLY : O_WRONLY, 0)
    }
    // Nothing else of this process may leak into the child: NIO accepts sockets without CLOEXEC, and a
    // long-lived child (the postmaster `pg_ctl restart` starts) holding a gateway's accepted socket keeps
    // that connection open after the gateway closed it. Other suites' clients then never saw their
    // server close (the slow-client tests waited 90 s for a FIN that postgres held back).
    closeInheritedDescriptors(&actions)
    let argv = ([path] + arguments).map { strdup($0) } + [nil]
    defer { argv.forEach { free($0) } }
    var pid: pid_t = 0
    guard posix_spawn(&pid, path, &actions, nil, argv, environ) == 0 else { return -1 }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 {
        if errno != EINTR { return -1 }
    }
    // WIFEXITED / WEXITSTATUS, spelled out (the macros are not imported).
    return (status & 0x7f) == 0 ? (status >> 8) & 0xff : -1
}

/// Adds "close every descriptor from 3 up" to `actions` (glibc 2.34's
/// `posix_spawn_file_actions_addclosefrom_np`, which Swift's Glibc module does not export: looked up
/// with dlsym). Without it the child inherits every socket of the test process.
func closeInheritedDescriptors(_ actions: inout posix_spawn_file_actions_t) {
    typealias AddCloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
    guard let symbol = dlsym(nil, "posix_spawn_file_actions_addclosefrom_np") else {
        Issue.record("posix_spawn_file_actions_addclosefrom_np is missing (glibc older than 2.34): children inherit every descriptor")
        return
    }
    let addCloseFrom = unsafeBitCast(symbol, to: AddCloseFrom.self)
    _ = addCloseFrom(&actions, 3)
}
