import Logging
import NIOCore
import ServiceLifecycle
import StormCore
import StormObservability

/// Deletes history beyond each channel's retention, every `interval` (a minute by default).
///
/// A channel keeps at most `maxCount` messages and nothing older than `maxAge`, whichever is stricter;
/// a row of the `channels` table whose `pattern` is the channel's name, or a `prefix.>` that covers it,
/// overrides them with `options.history_size` (integer) and `options.history_age` (an interval such as
/// `"1 day"`); the most specific row wins. Defaults (`--history-max-age 7d`, `--history-max-count 10000`)
/// and why they were chosen: see `StoreConfiguration`.
///
/// Several consumers may run: a transaction-scoped advisory lock lets one prune at a time and the others
/// skip that round, instead of deleting the same rows concurrently.
package final class HistoryRetention: Service, Sendable {
    package let postgres: PostgresClient
    package let maxAge: TimeAmount
    package let maxCount: Int
    package let interval: Duration
    package let metrics: ConsumerMetrics?
    private let logger: Logger

    package static let advisoryLockKey: Int64 = 0x5354_4F52_4D02  // "STORM" 2

    package init(postgres: PostgresClient, maxAge: TimeAmount, maxCount: Int, interval: Duration = .seconds(60), metrics: ConsumerMetrics?, logger: Logger) {
        self.postgres = postgres
        self.maxAge = maxAge
        self.maxCount = maxCount
        self.interval = interval
        self.metrics = metrics
        self.logger = logger
    }

    package func run() async throws {
        // cancelOnGracefulShutdown ends the sleeps at shutdown; a prune in flight finishes its statement.
        try? await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                try await Task.sleep(for: self.interval)
                do throws(StormError) {
                    let removed = try await self.prune()
                    if removed.byAge + removed.byCount > 0 {
                        self.logger.info("pruned history", metadata: ["storm.pruned_by_age": "\(removed.byAge)", "storm.pruned_by_count": "\(removed.byCount)"])
                    }
                } catch {
                    self.logger.warning("history prune failed; retrying in \(self.interval): \(error.message)")
                }
            }
        }
    }

    /// One prune round; returns the rows deleted by age and by count (zero when another process held
    /// the prune lock).
    @discardableResult
    package func prune() async throws(StormError) -> (byAge: Int, byCount: Int) {
        let ageText = "\(max(1, maxAge.nanoseconds / 1_000_000_000)) seconds"
        let countText = String(maxCount)
        let removed = try await postgres.withConnection { connection throws(StormError) -> (Int, Int) in
            try connection.transaction(doing: "prune history") { connection throws(StormError) -> (Int, Int) in
                let lock = try connection.query("SELECT pg_try_advisory_xact_lock($1)", [.text(String(Self.advisoryLockKey))], doing: "take the prune lock")
                guard lock.text(0, 0) == "t" else { return (0, 0) }
                let byAge = try connection.query(Self.pruneByAgeSQL, [.text(ageText)], doing: "prune history by age").affected
                let byCount = try connection.query(Self.pruneByCountSQL, [.text(countText)], doing: "prune history by count").affected
                return (byAge, byCount)
            }
        }
        metrics?.pruned.increment(by: Int64(removed.0 + removed.1))
        return (removed.0, removed.1)
    }

    /// The `channels` rows that apply to `m.channel`, most specific first (an exact name, then longer
    /// prefixes).
    private static let matchingRule = """
        (r.pattern = m.channel OR (right(r.pattern, 2) = '.>' AND starts_with(m.channel, left(r.pattern, -1))))
        """

    /// `$1`: the default age. Candidates come from the `ts` index (older than the shortest age anywhere);
    /// each is then checked against its own channel's age.
    package static let pruneByAgeSQL = """
        DELETE FROM messages m
        WHERE m.ts < now() - least($1::interval, (SELECT min((options->>'history_age')::interval) FROM channels WHERE options ? 'history_age'))
          AND m.ts < now() - coalesce(
                (SELECT (r.options->>'history_age')::interval FROM channels r
                 WHERE r.options ? 'history_age' AND \(matchingRule)
                 ORDER BY (r.pattern = m.channel) DESC, length(r.pattern) DESC LIMIT 1),
                $1::interval)
        """

    /// `$1`: the default count. Only channels holding more rows than the smallest limit anywhere are
    /// looked at; each keeps its newest `keep` offsets.
    package static let pruneByCountSQL = """
        WITH sizes AS (
            SELECT channel, count(*) AS n FROM messages GROUP BY channel
            HAVING count(*) > least($1::bigint, (SELECT min((options->>'history_size')::bigint) FROM channels WHERE options ? 'history_size'))
        ), limits AS (
            SELECT m.channel, coalesce(
                (SELECT (r.options->>'history_size')::bigint FROM channels r
                 WHERE r.options ? 'history_size' AND \(matchingRule)
                 ORDER BY (r.pattern = m.channel) DESC, length(r.pattern) DESC LIMIT 1),
                $1::bigint) AS keep
            FROM sizes m
        ), cutoffs AS (
            SELECT l.channel,
                (SELECT x."offset" FROM messages x WHERE x.channel = l.channel ORDER BY x."offset" DESC OFFSET l.keep LIMIT 1) AS cutoff
            FROM limits l
        )
        DELETE FROM messages m USING cutoffs c
        WHERE m.channel = c.channel AND m."offset" <= c.cutoff
        """
}
