import Foundation
import NIOCore
import StormConfiguration
import StormCore

/// What a `stormd` process runs, and where history is stored.
///
/// - `role` (`--role`, `STORM_ROLE`, default `all`): `gateway` serves clients only; `consumer` only copies
///   JetStream into PostgreSQL (and answers `/healthz`, `/readyz`, `/metrics`); `all` runs the gateway, plus
///   the consumer when PostgreSQL is configured. Separate roles let each be scaled and restarted on its own.
/// - `postgresURL` (`--postgres`, `STORM_POSTGRES_URL`, none): a libpq conninfo (`host=… dbname=…`) or URI
///   (`postgresql://user@host:5432/storm`). Its password never reaches a log or an error message; prefer
///   the environment, the config file, `PGPASSWORD` or `~/.pgpass` to argv, which `ps` shows to everyone.
/// - `migrateOnStart` (`--migrate-on-start`, `STORM_MIGRATE_ON_START`, `true`): apply pending schema
///   migrations before serving, so a fresh database just works; set false where a release job runs
///   `stormd migrate` with a more privileged role.
/// - `historyMaxAge` (`--history-max-age`, `STORM_HISTORY_MAX_AGE`, `7d`) and `historyMaxCount`
///   (`--history-max-count`, `STORM_HISTORY_MAX_COUNT`, `10000`): what the periodic prune keeps per channel
///   unless the channel's own options say otherwise. Why these defaults: history exists for recovery and
///   scroll-back, not for archiving. A week covers a client that was offline over a long weekend plus a
///   margin, and 10,000 messages is far more than any UI scrolls back through, while it bounds a hot
///   channel's rows (about 10,000 x 1 KiB = 10 MiB) so one noisy channel cannot fill the disk. Both are per
///   channel and whichever is stricter wins. JetStream keeps its own, shorter window (24 h).
package struct StoreConfiguration: Sendable {
    package enum Role: String, Sendable, CaseIterable {
        case gateway
        case consumer
        case all
    }

    package var role: Role = .all
    package var postgresURL: String?
    package var migrateOnStart = true
    package var historyMaxAge: TimeAmount = .hours(24 * 7)
    package var historyMaxCount = 10_000
    /// Whether `--nats` is set: the consumer reads JetStream, so `all` runs it only with NATS.
    package var natsConfigured = false

    package init() {}

    /// Resolves the store settings; `natsConfigured` says whether `--nats` was given (the consumer reads
    /// JetStream, so it needs NATS).
    package init(sources: ConfigurationSources, natsConfigured: Bool) throws(StormError) {
        if let value = sources.value(.role) {
            guard let role = Role(rawValue: value.value) else {
                throw StormError(.configuration, "\(value.origin): '\(value.value)' is not a role (gateway, consumer or all)")
            }
            self.role = role
        }
        if let value = sources.value(.postgres) {
            let url = value.value.trimmingCharacters(in: .whitespacesAndNewlines)
            postgresURL = url.isEmpty ? nil : url
        }
        if let value = sources.value(.migrateOnStart) {
            switch value.value.lowercased() {
            case "true", "yes", "1", "on": migrateOnStart = true
            case "false", "no", "0", "off": migrateOnStart = false
            default: throw StormError(.configuration, "\(value.origin): '\(value.value)' is not true or false")
            }
        }
        if let value = sources.value(.historyMaxAge) {
            historyMaxAge = try ConfigurationSources.parseDuration(value, range: .minutes(1)...TimeAmount.hours(24 * 3650))
        }
        if let value = sources.value(.historyMaxCount) {
            historyMaxCount = try ConfigurationSources.parseInt(value, range: 1...100_000_000)
        }
        if role == .consumer {
            guard postgresURL != nil else {
                throw StormError(.configuration, "--role consumer needs --postgres (or STORM_POSTGRES_URL): the consumer writes history to PostgreSQL")
            }
            guard natsConfigured else {
                throw StormError(.configuration, "--role consumer needs --nats: the consumer reads the messages from JetStream")
            }
        }
        self.natsConfigured = natsConfigured
    }

    /// Whether this process serves clients.
    package var runsGateway: Bool { role != .consumer }

    /// Whether this process copies JetStream into PostgreSQL.
    package var runsConsumer: Bool { role == .consumer || (role == .all && postgresURL != nil && natsConfigured) }

    /// The PostgreSQL URL with any password replaced by `***`, for logs and `--print-config`.
    package var redactedPostgresURL: String? { postgresURL.map(redactedPostgresConnectionString) }
}
