import Foundation
import Logging
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
@Suite("PostgreSQL store (real server)", .enabled(if: PostgresTestEnvironment.shouldRun, "needs STORM_TEST_POSTGRES_URL: run ./scripts/test"))
struct PostgresTests {
    @Test("migrations apply once, then report the schema up to date")
    func migrationsAreIdempotent() async throws {
        let url = try await PostgresTestEnvironment.freshDatabase()
        let client = PostgresClient(conninfo: url, logger: PostgresTestEnvironment.logger("migrate"))
        try await PostgresTestEnvironment.closing(client) { try await migrations(client) }
    }

    private func migrations(_ client: PostgresClient) async throws {
        let logger = PostgresTestEnvironment.logger("migrate")
        #expect(try await Migrations.currentVersion(using: client) == 0)
        let first = try await Migrations.apply(using: client, logger: logger)
        #expect(first == Migrations.all.map(\.version))
        let second = try await Migrations.apply(using: client, logger: logger)
        #expect(second.isEmpty)
        // Concurrent appliers (workers starting together) serialise on the advisory lock.
        async let a = Migrations.apply(using: client, logger: logger)
        async let b = Migrations.apply(using: client, logger: logger)
        let (concurrentA, concurrentB) = try await (a, b)
        #expect(concurrentA.isEmpty && concurrentB.isEmpty)
        #expect(try await Migrations.currentVersion(using: client) == Migrations.all.map(\.version).max())
        let tables = try await client.withConnection { connection throws(StormError) in
            try connection.query(
                "SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_tables WHERE schemaname = 'public'", doing: "list tables")
        }
        #expect(tables.text(0, 0) == "channels,messages,schema_migrations,users")
    }

    @Test("inserting is idempotent on (channel, offset) and (channel, id)")
    func insertIsIdempotent() async throws {
        let url = try await PostgresTestEnvironment.freshDatabase()
        let client = PostgresClient(conninfo: url, logger: PostgresTestEnvironment.logger("insert"))
        try await PostgresTestEnvironment.closing(client) { try await inserts(client) }
    }

    private func inserts(_ client: PostgresClient) async throws {
        try await Migrations.apply(using: client, logger: PostgresTestEnvironment.logger("insert"))
        let rows = try (1...100).map { try testHistoryRow("chat.a", Int64($0)) }
        let first = try await client.withConnection { connection throws(StormError) in try insertMessages(rows, epoch: "1", on: connection) }
        let again = try await client.withConnection { connection throws(StormError) in try insertMessages(rows, epoch: "1", on: connection) }
        // The same message id at another offset (a publish retried outside the duplicate window).
        let duplicate = try testHistoryRow("chat.a", 500, id: "chat.a-7")
        let sameID = try await client.withConnection { connection throws(StormError) in
            try insertMessages([duplicate], epoch: "1", on: connection)
        }
        #expect(first == 100)
        #expect(again == 0)
        #expect(sameID == 0)
        let counts = try await PostgresTestEnvironment.counts(client)
        #expect(counts.rows == 100 && counts.distinctIDs == 100)
    }

    @Test("the COPY path stores exact values: bytes with NUL, non-ASCII ids, microsecond timestamps, the epoch")
    func copyStoresExactValues() async throws {
        let url = try await PostgresTestEnvironment.freshDatabase()
        let client = PostgresClient(conninfo: url, logger: PostgresTestEnvironment.logger("copy"))
        try await cleaningUp({ await client.shutdown() }) {
            try await Migrations.apply(using: client, logger: PostgresTestEnvironment.logger("copy"))
            let envelope: [UInt8] = Array("{\"data\":\"a\u{0}b\"}".utf8) + [0, 0xFF, 0x0A, 0x5C]
            let rows = [
                HistoryRow(channel: "chat.ü", offset: 7, id: "idé-1", timestampMicros: 1_764_403_915_123_456, encoding: "text", envelope: envelope),
                HistoryRow(channel: "chat.a", offset: 9, id: "x", timestampMicros: 1, encoding: "base64", envelope: [0]),
            ]
            let inserted = try await client.withConnection { connection throws(StormError) in try insertMessages(rows, epoch: "e-42", on: connection) }
            #expect(inserted == 2)
            let read = try await client.withConnection { connection throws(StormError) in
                try connection.query(
                    #"SELECT channel, "offset", id, (extract(epoch FROM ts) * 1000000)::bigint, encoding, envelope = $1, epoch FROM messages ORDER BY "offset""#,
                    [.bytes(envelope)], doing: "read back")
            }
            #expect(read.rows.count == 2)
            #expect(read.text(0, 0) == "chat.ü" && read.int64(0, 1) == 7 && read.text(0, 2) == "idé-1")
            #expect(read.int64(0, 3) == 1_764_403_915_123_456 && read.text(0, 4) == "text" && read.text(0, 5) == "t" && read.text(0, 6) == "e-42")
            #expect(read.int64(1, 3) == 1 && read.text(1, 5) == "f")
        }
    }

    @Test("one batch holding one id twice stores it once, at the earlier offset")
    func duplicateWithinOneBatch() async throws {
        let url = try await PostgresTestEnvironment.freshDatabase()
        let client = PostgresClient(conninfo: url, logger: PostgresTestEnvironment.logger("copy"))
        try await cleaningUp({ await client.shutdown() }) {
            try await Migrations.apply(using: client, logger: PostgresTestEnvironment.logger("copy"))
            let rows = [try testHistoryRow("chat.a", 5, id: "same"), try testHistoryRow("chat.a", 3, id: "same"), try testHistoryRow("chat.a", 3, id: "other")]
            let inserted = try await client.withConnection { connection throws(StormError) in try insertMessages(rows, epoch: "1", on: connection) }
            #expect(inserted == 1)
            let read = try await client.withConnection { connection throws(StormError) in
                try connection.query(#"SELECT "offset", id FROM messages"#, doing: "read back")
            }
            #expect(read.rows.count == 1 && read.int64(0, 0) == 3 && read.text(0, 1) == "same")
        }
    }

    @Test("a COPY stream the server rejects fails the statement and leaves the connection usable")
    func malformedCopyStream() async throws {
        let url = try await PostgresTestEnvironment.freshDatabase()
        let client = PostgresClient(conninfo: url, logger: PostgresTestEnvironment.logger("copy"))
        try await cleaningUp({ await client.shutdown() }) {
            let outcome = try await client.withConnection { connection throws(StormError) -> (StormError.Code?, String?) in
                try connection.execute("CREATE TABLE t (a bigint)", doing: "create t")
                var failure: StormError.Code?
                do throws(StormError) {
                    try connection.copyIn("COPY t (a) FROM STDIN (FORMAT binary)", data: Array("not a binary copy".utf8), doing: "copy garbage")
                } catch {
                    failure = error.code
                }
                let alive = try connection.query("SELECT 1 + 1", doing: "check the connection")
                return (failure, alive.text(0, 0))
            }
            #expect(outcome.0 == StormError.Code.internalError)
            #expect(outcome.1 == "2")
        }
    }

    @Test("HistoryStore returns ascending offsets after the given one, capped, with exact envelope bytes")
    func historyReads() async throws {
        let url = try await PostgresTestEnvironment.freshDatabase()
        let client = PostgresClient(conninfo: url, logger: PostgresTestEnvironment.logger("history"))
        try await cleaningUp({ await client.shutdown() }) {
            try await Migrations.apply(using: client, logger: PostgresTestEnvironment.logger("history"))
            // Offsets are stream sequences: sparse per channel, interleaved between channels.
            let rows = try (1...300).map { try testHistoryRow($0 % 3 == 0 ? "chat.b" : "chat.a", Int64($0)) }
            _ = try await client.withConnection { connection throws(StormError) in try insertMessages(rows, epoch: "42", on: connection) }
            let store = PostgresHistoryStore(client: client, maxLimit: 50)
            let channel = try ChannelName(validating: "chat.a")

            let page = try await store.history(channel: channel, after: 10, limit: 5)
            #expect(page.map(\.offset) == [11, 13, 14, 16, 17])
            #expect(page.allSatisfy { $0.epoch == "42" && $0.channel == channel })
            #expect(page.first?.envelope == rows[10].envelope)

            let capped = try await store.history(channel: channel, after: 0, limit: 1_000_000)
            #expect(capped.count == 50)
            #expect(capped.map(\.offset) == capped.map(\.offset).sorted())

            #expect(try await store.history(channel: channel, after: 300, limit: 10).isEmpty)
            #expect(try await store.history(channel: channel, after: 10, limit: 0).isEmpty)
            await #expect(throws: StormError.self) { try await store.history(channel: channel, after: -1, limit: 10) }
            #expect(try await store.history(channel: channel, after: 298, limit: 10).map(\.offset) == [299])
            #expect(try await store.history(channel: ChannelName(validating: "chat.none"), after: 0, limit: 10).isEmpty)
        }
    }

    @Test("retention keeps each channel's newest N and nothing older than its age; channels rows override")
    func retention() async throws {
        let url = try await PostgresTestEnvironment.freshDatabase()
        let client = PostgresClient(conninfo: url, logger: PostgresTestEnvironment.logger("prune"))
        try await cleaningUp({ await client.shutdown() }) {
            try await Migrations.apply(using: client, logger: PostgresTestEnvironment.logger("prune"))
            var rows = try (1...30).map { try testHistoryRow("big.a", Int64($0)) }
            rows += try (31...35).map { try testHistoryRow("small.a", Int64($0)) }
            rows += try (36...60).map { try testHistoryRow("custom.a", Int64($0)) }
            let fixtures = rows
            _ = try await client.withConnection { connection throws(StormError) in try insertMessages(fixtures, epoch: "1", on: connection) }
            try await client.withConnection { connection throws(StormError) in
                // The fixture timestamps are from 2025: make small.a recent so only the count rule can apply.
                try connection.query("UPDATE messages SET ts = now() WHERE channel <> 'big.a'", doing: "age fixtures")
                try connection.query(
                    #"INSERT INTO channels (pattern, options) VALUES ('custom.>', '{"history_size": 3}')"#, doing: "configure a channel")
            }
            let retention = HistoryRetention(
                postgres: client, maxAge: .hours(24 * 365 * 100), maxCount: 10, metrics: nil, logger: PostgresTestEnvironment.logger("prune"))
            let removed = try await retention.prune()
            #expect(removed.byCount == 20 + 22)
            let store = PostgresHistoryStore(client: client)
            #expect(try await store.history(channel: ChannelName(validating: "big.a"), after: 0, limit: 100).map(\.offset) == Array(21...30))
            #expect(try await store.history(channel: ChannelName(validating: "small.a"), after: 0, limit: 100).count == 5)
            #expect(try await store.history(channel: ChannelName(validating: "custom.a"), after: 0, limit: 100).map(\.offset) == [58, 59, 60])

            // By age: big.a's 2025 rows are older than a day.
            let byAge = HistoryRetention(postgres: client, maxAge: .hours(24), maxCount: 10, metrics: nil, logger: PostgresTestEnvironment.logger("prune"))
            #expect(try await byAge.prune().byAge == 10)
            #expect(try await PostgresTestEnvironment.counts(client).rows == 8)
        }
    }

    @Test("errors name the call and the server's words, never the password")
    func errors() async throws {
        let url = try await PostgresTestEnvironment.freshDatabase()
        let client = PostgresClient(conninfo: url, logger: PostgresTestEnvironment.logger("errors"))
        try await cleaningUp({ await client.shutdown() }) {
            do {
                _ = try await client.withConnection { connection throws(StormError) in
                    try connection.query("SELECT * FROM no_such_table", doing: "read a missing table")
                }
                Issue.record("a missing table must fail")
            } catch let error as StormError {
                #expect(error.code == .internalError)
                #expect(error.message.contains("no_such_table") && error.message.contains("42P01") && error.message.contains("[PQexecParams]"))
            } catch {
                Issue.record("not a StormError: \(error)")
            }
            // The connection survives a failed statement.
            let one = try await client.withConnection { connection throws(StormError) in try connection.query("SELECT 1", doing: "select") }
            #expect(one.text(0, 0) == "1")

            let refused = PostgresClient(conninfo: "postgresql://storm:hunter2@127.0.0.1:1/storm", logger: PostgresTestEnvironment.logger("errors"))
            try await cleaningUp({ await refused.shutdown() }) {
                do {
                    _ = try await refused.withConnection { connection throws(StormError) in try connection.query("SELECT 1", doing: "select") }
                    Issue.record("port 1 must refuse")
                } catch let error as StormError {
                    #expect(error.code == .connection)
                    #expect(!error.message.contains("hunter2"))
                    #expect(error.message.contains("[PQconnectdbParams]"))
                } catch {
                    Issue.record("not a StormError: \(error)")
                }
            }
        }
    }

    @Test("connection strings are redacted in URIs and keyword form")
    func redaction() {
        #expect(redactedPostgresConnectionString("postgresql://u:secret@h:5432/db") == "postgresql://u:***@h:5432/db")
        #expect(redactedPostgresConnectionString("postgres://u@h/db?password=secret&sslmode=require") == "postgres://u@h/db?password=***&sslmode=require")
        #expect(redactedPostgresConnectionString("host=h password='se cret' dbname=db") == "host=h password=*** dbname=db")
        #expect(redactedPostgresConnectionString("host=h user=u") == "host=h user=u")
    }
}
