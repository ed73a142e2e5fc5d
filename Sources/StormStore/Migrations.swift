import Logging
import StormCore

/// One versioned change to the PostgreSQL schema. Versions only grow; a released migration is never
/// edited (a fix is a new version), so every database that says "version 3" has the same schema.
package struct Migration: Sendable {
    package var version: Int
    package var name: String
    package var sql: String
}

/// STORM's schema, as versioned migrations applied by `stormd migrate` and, with `--migrate-on-start`
/// (default true), at every start.
///
/// Applying is idempotent and safe to race: a session-level advisory lock serialises concurrent
/// `stormd` processes (workers, replicas starting together), each migration runs in its own transaction
/// together with its `schema_migrations` row, and applied versions are skipped.
///
/// Tables:
/// - `messages`: the history. `channel`, `"offset"` (the JetStream stream sequence: strictly increasing per
///   channel, not contiguous; quote it, OFFSET is an SQL keyword), `id` (the envelope id, `Nats-Msg-Id`),
///   `ts` (the envelope's publish time), `encoding` (`json`, `text`, `base64`), `envelope` (the exact bytes
///   every transport delivers; `bytea` because a JSON payload may hold `\u0000`, which `jsonb` and `text`
///   refuse, and storing bytes means history is byte-identical to live delivery), `epoch` (the stream's
///   creation time: offsets are only comparable within one epoch), `stored_at`. Primary key
///   `(channel, "offset")` serves history reads; unique `(channel, id)` makes redelivery a no-op.
/// - `users`: for authentication (`id`, `name`, `disabled`, `created`).
/// - `channels`: per-channel options (`pattern`: an exact channel name or `prefix.>`; `options` jsonb with
///   `history_size` (integer), `history_age` (a PostgreSQL interval such as `"1 day"`), `presence`,
///   `publish`/`subscribe` rules, `public`; `created`).
/// - `schema_migrations`: `version`, `name`, `applied_at`.
package enum Migrations {
    package static let all: [Migration] = [
        Migration(
            version: 1, name: "messages",
            sql: """
                CREATE TABLE messages (
                    channel   text        NOT NULL,
                    "offset"  bigint      NOT NULL CHECK ("offset" > 0),
                    id        text        NOT NULL,
                    ts        timestamptz NOT NULL,
                    encoding  text        NOT NULL DEFAULT 'json' CHECK (encoding IN ('json', 'text', 'base64')),
                    envelope  bytea       NOT NULL,
                    epoch     text        NOT NULL,
                    stored_at timestamptz NOT NULL DEFAULT now(),
                    PRIMARY KEY (channel, "offset"),
                    UNIQUE (channel, id)
                );
                -- The age prune finds old rows without scanning the table.
                CREATE INDEX messages_ts ON messages (ts);
                """),
        Migration(
            version: 2, name: "users and channels",
            sql: """
                CREATE TABLE users (
                    id       text        PRIMARY KEY,
                    name     text        NOT NULL,
                    disabled boolean     NOT NULL DEFAULT false,
                    created  timestamptz NOT NULL DEFAULT now()
                );
                CREATE TABLE channels (
                    pattern text        PRIMARY KEY,
                    options jsonb       NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(options) = 'object'),
                    created timestamptz NOT NULL DEFAULT now()
                );
                """),
    ]

    /// Any constant unique to STORM: the key of the advisory lock that serialises migrating processes.
    package static let advisoryLockKey: Int64 = 0x5354_4F52_4D01  // "STORM" 1

    /// Applies every pending migration; returns the versions applied now (empty when up to date).
    @discardableResult
    package static func apply(
        using client: PostgresClient, migrations: [Migration] = Migrations.all, logger: Logger
    ) async throws(StormError) -> [Int] {
        let applied = try await client.withConnection { connection throws(StormError) -> [Int] in
            try connection.query("SELECT pg_advisory_lock($1)", [.text(String(advisoryLockKey))], doing: "take the migration lock")
            defer {
                _ = try? connection.query("SELECT pg_advisory_unlock($1)", [.text(String(advisoryLockKey))], doing: "release the migration lock")
            }
            try connection.execute(
                """
                CREATE TABLE IF NOT EXISTS schema_migrations (
                    version    integer     PRIMARY KEY,
                    name       text        NOT NULL,
                    applied_at timestamptz NOT NULL DEFAULT now()
                )
                """, doing: "create the schema_migrations table")
            let rows = try connection.query("SELECT version FROM schema_migrations ORDER BY version", doing: "read the applied migrations")
            let done = Set((0..<rows.rows.count).compactMap { rows.int64($0, 0) }.map { Int($0) })
            var appliedNow: [Int] = []
            for migration in migrations.sorted(by: { $0.version < $1.version }) where !done.contains(migration.version) {
                try connection.transaction(doing: "apply migration \(migration.version) (\(migration.name))") { connection throws(StormError) in
                    try connection.execute(migration.sql, doing: "apply migration \(migration.version) (\(migration.name))")
                    try connection.query(
                        "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                        [.text(String(migration.version)), .text(migration.name)], doing: "record migration \(migration.version)")
                }
                appliedNow.append(migration.version)
            }
            if let newest = done.max(), let known = migrations.map(\.version).max(), newest > known {
                logger.warning(
                    "the database schema is newer than this stormd (version \(newest), this binary knows up to \(known)): upgrade stormd",
                    metadata: ["postgres.server": "\(client.endpoint)"])
            }
            return appliedNow
        }
        if applied.isEmpty {
            logger.info("database schema is up to date", metadata: ["postgres.server": "\(client.endpoint)"])
        } else {
            logger.notice("applied database migrations \(applied.map(String.init).joined(separator: ", "))", metadata: ["postgres.server": "\(client.endpoint)"])
        }
        return applied
    }

    /// The newest version applied to the database (0 before any).
    package static func currentVersion(using client: PostgresClient) async throws(StormError) -> Int {
        try await client.withConnection { connection throws(StormError) -> Int in
            let exists = try connection.query("SELECT to_regclass('schema_migrations') IS NOT NULL", doing: "look for schema_migrations")
            guard exists.text(0, 0) == "t" else { return 0 }
            let rows = try connection.query("SELECT coalesce(max(version), 0) FROM schema_migrations", doing: "read the schema version")
            return Int(rows.int64(0, 0) ?? 0)
        }
    }
}
