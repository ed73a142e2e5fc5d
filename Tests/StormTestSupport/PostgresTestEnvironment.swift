import Foundation
import Logging
import NIOCore
import NIOPosix
import StormBroker
import StormCore
import StormNATS
import StormStore
import Testing

/// Where the integration tests find PostgreSQL. `./scripts/test` starts one (initdb in a temp dir) and
/// sets these; in CI a missing server fails the suites instead of skipping them.
package enum PostgresTestEnvironment {
    package static var url: String? { nonEmpty("STORM_TEST_POSTGRES_URL") }
    /// A `pg_ctl` wrapper that already knows the data directory and log file (see scripts/test).
    package static var pgCtl: String? { nonEmpty("STORM_TEST_PG_CTL") }
    package static var dataDirectory: String? { nonEmpty("STORM_TEST_PG_DATA") }

    package static var isCI: Bool {
        guard let value = nonEmpty("CI")?.lowercased() else { return false }
        return value != "false" && value != "0"
    }

    /// Run when there is a server, and in CI even without one, so that it fails loudly there.
    package static var shouldRun: Bool { url != nil || isCI }

    package static func requireURL() throws -> String {
        guard let url else { throw Missing(variable: "STORM_TEST_POSTGRES_URL") }
        return url
    }

    package struct Missing: Error, CustomStringConvertible {
        package var variable: String
        package var description: String { "\(variable) is not set: run ./scripts/test, which starts PostgreSQL" }

        package init(variable: String) {
            self.variable = variable
        }
    }

    private static func nonEmpty(_ name: String) -> String? {
        guard let value = ProcessInfo.processInfo.environment[name], !value.isEmpty else { return nil }
        return value
    }

    package static func logger(_ label: String) -> Logger {
        var logger = Logger(label: "storm.test.\(label)")
        logger.logLevel = ProcessInfo.processInfo.environment["STORM_TEST_LOG"].flatMap(Logger.Level.init(rawValue:)) ?? .warning
        return logger
    }

    /// A new, empty database on the test server, so tests neither see nor disturb each other's rows.
    /// Returns its URL (the server URL with the database name replaced).
    package static func freshDatabase() async throws -> String {
        let url = try requireURL()
        let name = "storm_t\(UInt32.random(in: 0...UInt32.max))"
        let admin = PostgresClient(conninfo: url, size: 1, logger: logger("admin"))
        return try await cleaningUp({ await admin.shutdown() }) {
            try await admin.withConnection { connection throws(StormError) in
                try connection.execute("CREATE DATABASE \(name)", doing: "create a test database")
            }
            guard let slash = url.lastIndex(of: "/") else { throw Missing(variable: "STORM_TEST_POSTGRES_URL (no /DATABASE)") }
            return String(url[..<slash]) + "/" + name
        }
    }

    /// Runs `body`, then shuts `client` down, awaited, whether `body` threw or not.
    package static func closing(_ client: PostgresClient, _ body: () async throws -> Void) async throws {
        do {
            try await body()
        } catch {
            await client.shutdown()
            throw error
        }
        await client.shutdown()
    }

    /// Counts rows (and distinct ids) of `messages`.
    package static func counts(_ client: PostgresClient) async throws -> (rows: Int, distinctIDs: Int) {
        let result = try await client.withConnection { connection throws(StormError) in
            try connection.query("SELECT count(*), count(DISTINCT (channel, id)) FROM messages", doing: "count rows")
        }
        return (Int(result.int64(0, 0) ?? -1), Int(result.int64(0, 1) ?? -1))
    }
}

/// A history row with a real envelope; offsets double as timestamps' microseconds.
package func testHistoryRow(_ channel: String, _ offset: Int64, id: String? = nil) throws -> HistoryRow {
    let envelope = Envelope(
        channel: try ChannelName(validating: channel), id: id ?? "\(channel)-\(offset)",
        timestampMicros: 1_764_403_915_123_456 + UInt64(offset), payload: Array("{\"n\":\(offset)}".utf8))
    return HistoryRow(
        channel: channel, offset: offset, id: envelope.id, timestampMicros: envelope.timestampMicros, encoding: envelope.encoding.rawValue,
        envelope: envelope.encoded())
}
