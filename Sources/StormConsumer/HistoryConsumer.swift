import Atomics
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOPosix
import ServiceLifecycle
import StormCore
import StormNATS
import StormObservability
import StormStore
import Tracing

/// Copies every message of the JetStream stream into PostgreSQL's `messages` table: the consumer role.
///
/// The loop: fetch up to `batchSize` messages from the durable pull consumer, parse each envelope and its
/// stream sequence (the offset), write the batch in one transaction (`COPY` into a staging table, then
/// `INSERT … SELECT … ON CONFLICT DO NOTHING`, see `insertMessages`), and only after it committed
/// acknowledge every message. The next batch is fetched while one is written. So:
/// - nothing is acknowledged that is not stored: a crash or a failed commit leaves the batch un-acked and
///   JetStream redelivers it after `ackWait`;
/// - redelivery stores nothing twice: `(channel, offset)` and `(channel, id)` are unique;
/// - when PostgreSQL is down, the same batch is retried with capped exponential backoff (no new fetches
///   pile up), `/readyz` says why, and the consumer catches up from JetStream when it returns.
///
/// A message that is not an envelope (someone else published on STORM's subjects) can never be stored:
/// it is logged, counted (`storm_consumer_failures_total{reason="malformed"}`) and terminated, so it does
/// not come back forever.
///
/// Threads: nats.c fetches block (up to `fetchWait`), and run on a two-thread `NIOThreadPool` of the
/// consumer's own (so acknowledging one batch does not wait behind the fetch of the next); libpq calls run
/// on the `PostgresClient`'s threads. Nothing blocks an event loop.
package final class HistoryConsumer: Service, ConsumerHealthReporting, Sendable {
    /// What `/readyz` reports.
    package typealias Health = ConsumerHealth

    package let configuration: HistoryConsumerConfiguration
    package let postgres: PostgresClient
    package let metrics: ConsumerMetrics
    private let logger: Logger
    private let threads: NIOThreadPool
    private let stopping = ManagedAtomic(false)
    private let healthBox = NIOLockedValueBox(Health.starting)
    /// The code of the last failure: `broker_unavailable` (NATS) or `store_unavailable` (PostgreSQL).
    private let failureCode = NIOLockedValueBox(StormError.Code.brokerUnavailable)
    /// Messages delivered to some consumer of the durable but not acknowledged, beyond the batch this
    /// one holds (sampled with the lag): a consumer that died mid-batch left them, and JetStream
    /// redelivers them only after `ackWait`. Their rows are missing meanwhile.
    private let awaitingRedelivery = NIOLockedValueBox<UInt64>(0)
    private let subjectPrefixWithDot: String
    /// With a tracer: one `history insert` span per batch, linked to each traced message's publish.
    private let tracing: StormTracing?

    package init(configuration: HistoryConsumerConfiguration, postgres: PostgresClient, metrics: ConsumerMetrics, logger: Logger, tracing: StormTracing? = nil) {
        self.tracing = tracing
        self.configuration = configuration
        self.postgres = postgres
        self.metrics = metrics
        self.logger = logger
        self.threads = NIOThreadPool(numberOfThreads: 2)
        self.subjectPrefixWithDot = configuration.stream.subjectPrefix + "."
        threads.start()
    }

    /// `.ready` only while nothing is missing for long: messages un-acknowledged by a consumer that
    /// died (awaiting redelivery after `ackWait`) make it `.degraded`, saying so.
    package var health: Health {
        let health = healthBox.withLockedValue { $0 }
        let waiting = awaitingRedelivery.withLockedValue { $0 }
        if health == .ready, waiting > 0 {
            return .degraded(
                "\(waiting) messages were delivered but not acknowledged (a consumer stopped mid-batch?): their rows are missing until JetStream redelivers them after the ack wait (\(configuration.ackWait.components.seconds) s)")
        }
        return health
    }


    /// `/readyz`'s reason when not ready.
    package var notReadyReason: String? { notReadyError?.message }

    /// `/readyz`'s answer when not ready: `store_unavailable` while PostgreSQL fails, `catching_up`
    /// while messages await redelivery, `broker_unavailable` otherwise.
    package var notReadyError: StormError? {
        let stored = healthBox.withLockedValue { $0 }
        switch health {
        case .ready: return nil
        case .starting: return StormError(.brokerUnavailable, "the history consumer is starting")
        case .degraded(let reason):
            if stored == .ready { return StormError(.catchingUp, reason) }
            return StormError(failureCode.withLockedValue { $0 }, reason)
        case .stopped: return StormError(.brokerUnavailable, "the history consumer stopped")
        }
    }

    package func run() async throws {
        await withGracefulShutdownHandler {
            await self.consume()
        } onGracefulShutdown: {
            self.stopping.store(true, ordering: .releasing)
        }
    }

    /// Stops the loop (tests; the service uses graceful shutdown). Returns at once; `run()` then ends.
    package func stop() {
        stopping.store(true, ordering: .releasing)
    }

    // MARK: the loop

    private enum Failure: Error {
        case nats(StormError)
        case postgres(StormError)
    }

    private func consume() async {
        var session: ConsumerSession?
        // The batch being stored (kept across PostgreSQL failures, retried as is), and the next one: fetched
        // while this one is written (`prefetch`, in flight) or already in hand (`ahead`). At most these two
        // batches are held, so memory stays at two batches of messages.
        var pending: FetchedBatch?
        var ahead: FetchedBatch?
        var prefetch: Task<Result<FetchedBatch, StormError>, Never>?
        // The acks of the last committed batch, being sent (the last one waits for JetStream's
        // confirmation, see `FetchedBatch.acknowledge`) while the loop goes on: one batch at a time.
        var acking: Task<Void, Never>?
        var migrated = !configuration.migrateOnStart
        var epochChecked: String?
        var backoff = configuration.initialBackoff
        var lastLagSample = ContinuousClock.now - configuration.lagSampleInterval
        var lastFailure: String?
        var lagFailureLogged = false
        // Un-acknowledged messages beyond those held, at the previous sample: readiness counts only what two
        // samples in a row saw, so an ack still on its way to the server is not mistaken for a dead consumer.
        var previousExcess: UInt64 = 0
        logger.info(
            "history consumer starting",
            metadata: ["nats.stream": "\(configuration.stream.name)", "nats.consumer": "\(configuration.durableName)", "postgres.server": "\(postgres.endpoint)"])

        /// The prefetched batch, once its fetch returned (nil when none was started).
        func landPrefetch() async throws(Failure) {
            guard let task = prefetch else { return }
            prefetch = nil
            switch await task.value {
            case .success(let batch):
                if batch.isEmpty { batch.release() } else { ahead = batch }
            case .failure(let error): throw .nats(error)
            }
        }

        /// Waits until the acks being sent went out and JetStream confirmed them.
        func settleAcks() async {
            guard let task = acking else { return }
            acking = nil
            await task.value
        }

        /// Frees every held batch without acknowledging it: JetStream redelivers them after the ack wait.
        /// Acks already under way (their batch committed) are finished first.
        func releaseAll() async {
            await settleAcks()
            if let task = prefetch {
                prefetch = nil
                if case .success(let batch) = await task.value { await onNATSThread { batch.release() } }
            }
            for batch in [pending, ahead].compactMap({ $0 }) { await onNATSThread { batch.release() } }
            pending = nil
            ahead = nil
        }

        while !stopping.load(ordering: .acquiring) {
            do throws(Failure) {
                if !migrated {
                    do {
                        try await Migrations.apply(using: postgres, logger: logger)
                    } catch {
                        throw .postgres(error)
                    }
                    migrated = true
                }
                if session == nil {
                    let configuration = self.configuration
                    let opened: Result<ConsumerSession, StormError> = await onNATSThread {
                        do throws(StormError) { return .success(try ConsumerSession.open(configuration)) } catch { return .failure(error) }
                    }
                    switch opened {
                    case .success(let opened):
                        session = opened
                        logStreamPlan(opened.streamState, stream: configuration.stream.name, endpoint: opened.session.endpoint, logger: logger)
                    case .failure(let error): throw .nats(error)
                    }
                    logger.info("history consumer bound to JetStream", metadata: ["nats.stream": "\(configuration.stream.name)", "storm.epoch": "\(session?.epoch ?? "-")"])
                }
                guard let current = session else { continue }
                if epochChecked != current.epoch {
                    try await reconcileEpoch(current.epoch)
                    epochChecked = current.epoch
                }
                if ContinuousClock.now - lastLagSample >= configuration.lagSampleInterval {
                    lastLagSample = ContinuousClock.now
                    // Everything delivered to this process must be in hand, and every ack sent confirmed,
                    // while counting what is not.
                    await settleAcks()
                    try await landPrefetch()
                    let sampled: Result<(pending: UInt64, ackPending: UInt64), StormError> = await onNATSThread {
                        do throws(StormError) { return .success(try current.pendingCounts()) } catch { return .failure(error) }
                    }
                    switch sampled {
                    case .success(let counts):
                        // Not yet delivered, plus delivered and not acknowledged: both are rows still missing.
                        metrics.lag.set(Int64(clamping: counts.pending &+ counts.ackPending))
                        let held = UInt64((pending?.count ?? 0) + (ahead?.count ?? 0))
                        let excess = counts.ackPending > held ? counts.ackPending - held : 0
                        awaitingRedelivery.withLockedValue { $0 = min(excess, previousExcess) }
                        previousExcess = excess
                        lagFailureLogged = false
                    case .failure(let error):
                        // Not a reason to stop storing: the fetch says soon enough whether NATS is gone. Nor
                        // may an old sample's count of messages awaiting redelivery pin /readyz at
                        // catching_up while no new sample can confirm it (the consumer info request of a
                        // stream whose leader just died can fail for a while): forget it, and let the next
                        // two samples decide again.
                        awaitingRedelivery.withLockedValue { $0 = 0 }
                        previousExcess = 0
                        if !lagFailureLogged {
                            logger.warning("cannot sample the consumer lag: \(error.message)")
                            lagFailureLogged = true
                        }
                    }
                }
                if pending == nil {
                    try await landPrefetch()
                    if let next = ahead {
                        pending = next
                        ahead = nil
                    } else {
                        let prefix = subjectPrefixWithDot
                        let fetched: Result<FetchedBatch, StormError> = await onNATSThread {
                            do throws(StormError) { return .success(try current.fetch(prefix: prefix)) } catch { return .failure(error) }
                        }
                        switch fetched {
                        case .success(let batch): pending = batch
                        case .failure(let error): throw .nats(error)
                        }
                    }
                }
                guard let batch = pending else { continue }
                if batch.isEmpty {
                    pending = nil
                    markHealthy(&lastFailure)
                    continue
                }
                // Fetch the next batch while this one is written: the NATS round trip and the parsing overlap
                // the transaction. Nothing of it is acknowledged before its own transaction commits.
                if prefetch == nil, ahead == nil {
                    let prefix = subjectPrefixWithDot
                    prefetch = Task {
                        await self.onNATSThread {
                            do throws(StormError) { return .success(try current.fetch(prefix: prefix)) } catch { return .failure(error) }
                        }
                    }
                }
                try await store(batch, epoch: current.epoch)
                // Committed: now, and only now, acknowledge.
                let malformed = batch.malformedCount
                let fetched = batch.count  // read before acknowledge() frees the list
                await settleAcks()
                // Confirmed (one round trip, after JetStream processed the whole batch's acks) only when the
                // lag is sampled next, so the sample sees these acks; otherwise fire and forget.
                let confirm = ContinuousClock.now - lastLagSample >= configuration.lagSampleInterval
                acking = Task { await self.onNATSThread { batch.acknowledge(confirm: confirm) } }
                metrics.acknowledged.increment(by: Int64(fetched - malformed))
                if malformed > 0 {
                    metrics.malformed.increment(by: Int64(malformed))
                    logger.warning("terminated \(malformed) messages on STORM's subjects that are not envelopes (published by something other than a gateway?)")
                }
                pending = nil
                backoff = configuration.initialBackoff
                markHealthy(&lastFailure)
            } catch {
                let reason: String
                switch error {
                case .nats(let failure):
                    failureCode.withLockedValue { $0 = .brokerUnavailable }
                    metrics.natsFailures.increment()
                    reason = failure.message
                    // The subscription may be gone (stream deleted, connection closed): start over. The
                    // un-acked batches are dropped here and redelivered by JetStream.
                    await releaseAll()
                    if let old = session { await onNATSThread { old.close() } }
                    session = nil
                case .postgres(let failure):
                    failureCode.withLockedValue { $0 = .storeUnavailable }
                    metrics.postgresFailures.increment()
                    metrics.postgresConnected.set(Int64(0))
                    reason = failure.message
                }
                healthBox.withLockedValue { $0 = .degraded(reason) }
                if lastFailure != reason {
                    // Logged when the reason changes, not at every retry.
                    logger.warning("history consumer failed; retrying with backoff: \(reason)", metadata: ["storm.backoff_ms": "\(milliseconds(backoff))"])
                    lastFailure = reason
                }
                await sleepUnlessStopping(backoff)
                backoff = min(backoff * 2, configuration.maxBackoff)
            }
        }

        // Nothing un-acked is acknowledged now: JetStream redelivers it to whoever runs next.
        await releaseAll()
        if let session { await onNATSThread { session.close() } }
        healthBox.withLockedValue { $0 = .stopped }
        try? await threads.shutdownGracefully()
        logger.notice("history consumer stopped")
    }

    private func markHealthy(_ lastFailure: inout String?) {
        metrics.postgresConnected.set(Int64(1))
        healthBox.withLockedValue { $0 = .ready }
        if lastFailure != nil {
            logger.notice("history consumer recovered")
            lastFailure = nil
        }
    }

    /// Writes one batch in one statement; throws `.postgres` when nothing may be acknowledged.
    private func store(_ batch: FetchedBatch, epoch: String) async throws(Failure) {
        let rows = batch.rows
        if rows.isEmpty { return }
        let span = tracing.flatMap { Self.startInsertSpan($0, rows: rows) }
        let started = ContinuousClock.now
        let inserted: Int
        do {
            inserted = try await postgres.withConnection { connection throws(StormError) -> Int in
                try insertMessages(rows, epoch: epoch, on: connection)
            }
        } catch {
            span?.recordError(error)
            span?.setStatus(SpanStatus(code: .error, message: error.message))
            span?.end()
            throw .postgres(error)
        }
        span?.attributes["db.response.returned_rows"] = inserted
        span?.end()
        let elapsed = ContinuousClock.now - started
        metrics.insertDuration.record(Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)
        metrics.batchSize.record(Double(rows.count))
        metrics.rows.increment(by: Int64(inserted))
        metrics.postgresConnected.set(Int64(1))
    }

    /// The batch's span, linked to the publish span of every message that carried trace context (a batch
    /// holds messages of many traces, so links rather than one parent); `nil` when none did.
    package static func startInsertSpan(_ tracing: StormTracing, rows: [HistoryRow]) -> (any Span)? {
        guard rows.contains(where: { $0.trace != nil }) else { return nil }
        let span = tracing.startSpan("history insert", context: .topLevel, ofKind: .client)
        span.attributes["db.system.name"] = "postgresql"
        span.attributes["db.operation.name"] = "INSERT"
        span.attributes["db.collection.name"] = "messages"
        span.attributes["db.operation.batch.size"] = rows.count
        for row in rows {
            guard let trace = row.trace else { continue }
            span.addLink(SpanLink(context: tracing.context(from: trace), attributes: ["messaging.destination.name": .string(row.channel), "storm.offset": .int64(row.offset)]))
        }
        return span
    }

    /// A stream that was deleted and recreated restarts its sequences: rows of another epoch would collide
    /// with the new offsets (and could never be resumed from anyway), so they are removed, loudly.
    private func reconcileEpoch(_ epoch: String) async throws(Failure) {
        let deleted: Int
        do {
            deleted = try await postgres.withConnection { connection throws(StormError) -> Int in
                try connection.query("DELETE FROM messages WHERE epoch <> $1", [.text(epoch)], doing: "remove history of an earlier stream epoch").affected
            }
        } catch {
            throw .postgres(error)
        }
        if deleted > 0 {
            logger.warning(
                "the JetStream stream was recreated (new history epoch): removed \(deleted) stored messages of the earlier epoch, whose offsets no longer mean anything",
                metadata: ["storm.epoch": "\(epoch)"])
        }
    }

    private func sleepUnlessStopping(_ duration: Duration) async {
        let deadline = ContinuousClock.now + duration
        while !stopping.load(ordering: .acquiring), ContinuousClock.now < deadline {
            try? await Task.sleep(for: min(.milliseconds(50), deadline - ContinuousClock.now))
        }
    }

    private func onNATSThread<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
        do {
            return try await threads.runIfActive(body)
        } catch {
            return body()
        }
    }
}

// MARK: - Writing

/// Stores `rows` in one transaction; returns how many were new. Idempotent: rows whose `(channel, offset)`
/// or `(channel, id)` exists already (a redelivery after a crash, a republished id) are skipped, and so is
/// the second of two such rows within `rows`.
///
/// `COPY … FROM STDIN (FORMAT binary)` into a temporary staging table (per connection, emptied at every
/// commit), then one `INSERT INTO messages SELECT … ON CONFLICT DO NOTHING`: COPY cannot skip conflicts
/// itself, and it is several times cheaper than a multi-row INSERT with six parameters a row, for the server
/// (no huge statement to parse and plan) and for stormd (no SQL text or parameter array to build).
package func insertMessages(_ rows: [HistoryRow], epoch: String, on connection: PostgresConnection) throws(StormError) -> Int {
    if rows.isEmpty { return 0 }
    var writer = PostgresCopyWriter(reservingCapacity: rows.reduce(0) { $0 + 80 + $1.channel.utf8.count + $1.id.utf8.count + $1.envelope.count })
    for row in rows {
        writer.beginRow(fields: 6)
        writer.text(row.channel)
        writer.int64(row.offset)
        writer.text(row.id)
        writer.timestamp(unixMicros: row.timestampMicros)
        writer.text(row.encoding)
        writer.bytea(row.envelope)
    }
    let data = writer.finish()
    return try connection.transaction(doing: "store a batch of \(rows.count) messages") { connection throws(StormError) -> Int in
        // One round trip; SET LOCAL (undone at commit) keeps the "already exists, skipping" NOTICE of every
        // batch after the first out of the log.
        try connection.execute(
            #"SET LOCAL client_min_messages = warning; CREATE TEMPORARY TABLE IF NOT EXISTS messages_staging (channel text, "offset" bigint, id text, ts timestamptz, encoding text, envelope bytea) ON COMMIT DELETE ROWS"#,
            doing: "create the staging table")
        try connection.copyIn(
            #"COPY messages_staging (channel, "offset", id, ts, encoding, envelope) FROM STDIN (FORMAT binary)"#, data: data,
            doing: "copy a batch of \(rows.count) messages")
        // In offset order, so of two rows with one id the earlier one is kept, as JetStream ordered them.
        return try connection.query(
            #"INSERT INTO messages (channel, "offset", id, ts, encoding, envelope, epoch) SELECT channel, "offset", id, ts, encoding, envelope, $1 FROM messages_staging ORDER BY "offset" ON CONFLICT DO NOTHING"#,
            [.text(epoch)], doing: "store a batch of \(rows.count) messages"
        ).affected
    }
}
