import Atomics
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import StormBroker
import StormCore
import StormObservability
import StormStore


/// One recovery (or one HTTP history request): its total deadline, shared by every channel it reads,
/// and whether the connection that asked for it is gone.
package final class HistoryReadTicket: Sendable {
    package let deadline: NIODeadline
    private let cancelled = ManagedAtomic(false)

    package init(deadline: NIODeadline) {
        self.deadline = deadline
    }

    package var isCancelled: Bool { cancelled.load(ordering: .acquiring) }
    package var isExpired: Bool { NIODeadline.now() >= deadline }

    /// Marks the ticket cancelled; `HistoryReader.cancel` also drops its reads that wait for a slot.
    fileprivate func markCancelled() { cancelled.store(true, ordering: .releasing) }

    package var bounds: HistoryReadBounds {
        HistoryReadBounds(deadline: deadline, isCancelled: { [self] in self.isCancelled })
    }
}

/// Admission of history reads, as plain state: at most `maxRunning` at once, at most `maxWaiting` in
/// line (first come, first served), everything past that refused at once. No clock, no threads, no
/// sockets: `HistoryReader` runs it under its lock, and the unit tests drive it step by step.
package struct HistoryAdmission: Sendable {
    package enum Decision: Equatable, Sendable {
        /// Start now; call `finish()` when done.
        case run
        /// Wait until `finish()` hands over the slot, or `withdraw` takes the read out of line.
        case wait
        /// Both the slots and the line are full.
        case refuse
    }

    package let maxRunning: Int
    package let maxWaiting: Int
    private(set) var running = 0
    private(set) var waiting: [UInt64] = []

    package init(maxRunning: Int, maxWaiting: Int) {
        self.maxRunning = max(1, maxRunning)
        self.maxWaiting = max(0, maxWaiting)
    }

    package mutating func admit(_ id: UInt64) -> Decision {
        if running < maxRunning {
            running += 1
            return .run
        }
        guard waiting.count < maxWaiting else { return .refuse }
        waiting.append(id)
        return .wait
    }

    /// Takes a waiting read out of line (its connection went, or its deadline passed): true if it
    /// was waiting, false if it already got its slot or was never there.
    package mutating func withdraw(_ id: UInt64) -> Bool {
        guard let index = waiting.firstIndex(of: id) else { return false }
        waiting.remove(at: index)
        return true
    }

    /// A running read ended: returns the waiting read that takes over its slot, if any.
    package mutating func finish() -> UInt64? {
        guard !waiting.isEmpty else {
            running = max(0, running - 1)
            return nil
        }
        return waiting.removeFirst()
    }

    /// Every slot busy and the line full: the next read is refused.
    package var isFull: Bool { running >= maxRunning && waiting.count >= maxWaiting }
}

/// How history reads of one gateway are bounded (not flags; documented in docs/reliability.md).
///
/// - `maxInFlight` (`Int`, 4): reads running at once against the broker, each on a thread of the
///   history pool, never on the pool that makes subscriptions.
/// - `maxWaiting` (`Int`, 64): reads waiting for a slot; past it a read is refused at once.
/// - `timeout` (`Duration`, 5 s): total deadline of one recovery or history request, waiting included.
/// - `saturationThreshold` (`Duration`, 10 s): reads refused for longer than this make `/readyz` 503.
package struct HistoryReaderConfiguration: Sendable {
    package var maxInFlight = 4
    package var maxWaiting = 64
    package var timeout: Duration = .seconds(5)
    package var saturationThreshold: Duration = .seconds(10)
}

/// Bounded, cancellable history reads for recovery (WebSocket `since`, SSE `Last-Event-ID`) and the
/// HTTP history route: the one history reader of a gateway. It asks the broker first and, for an offset
/// older than the broker keeps, the archive (PostgreSQL with `--postgres`), stitched by `HistoryStitch`.
///
/// Why: reads used to share the two-thread blocking pool with subscription creation, waited without a
/// deadline, and outlived their connections; after a stream outage, queued reads of clients long gone
/// held every thread and no subscribe was answered for minutes. Now each read runs on the broker's
/// history pool, within a total deadline, is skipped when its connection went before it started, stops
/// at its next fetch when the connection goes while it runs, and waits in a bounded line.
package final class HistoryReader: Sendable {
    private struct Waiter {
        let ticket: HistoryReadTicket
        let continuation: CheckedContinuation<Start, Never>
    }

    private enum Start {
        case run
        case refused
        case cancelled
        case timedOut
    }

    private struct State {
        var admission: HistoryAdmission
        var waiters: [UInt64: Waiter] = [:]
        var nextID: UInt64 = 0
        /// Since when every slot has been busy and the line full (the next read is refused).
        var fullSince: NIODeadline?

        mutating func noteSaturation() {
            fullSince = admission.isFull ? (fullSince ?? .now()) : nil
        }
    }

    /// How a read ended (declared beside the metric whose label it is).
    package typealias Outcome = GatewayMetrics.HistoryReadOutcome

    package let configuration: HistoryReaderConfiguration
    private let broker: any MessageBroker
    /// What the broker no longer keeps (PostgreSQL with `--postgres`), nil without one.
    private let archive: (any HistoryStore)?
    private let metrics: GatewayMetrics
    private let state: NIOLockedValueBox<State>

    package init(
        broker: any MessageBroker, archive: (any HistoryStore)? = nil, configuration: HistoryReaderConfiguration = HistoryReaderConfiguration(), metrics: GatewayMetrics
    ) {
        self.broker = broker
        self.archive = archive
        self.configuration = configuration
        self.metrics = metrics
        self.state = NIOLockedValueBox(State(admission: HistoryAdmission(maxRunning: configuration.maxInFlight, maxWaiting: configuration.maxWaiting)))
    }

    /// A ticket for one recovery or request, its deadline `timeout` from now.
    package func makeTicket() -> HistoryReadTicket {
        HistoryReadTicket(deadline: .now() + Self.timeAmount(configuration.timeout))
    }

    /// The connection of `ticket` is gone: its reads waiting for a slot are dropped now (counted
    /// `cancelled`), and a running one stops at its next request to the server.
    package func cancel(_ ticket: HistoryReadTicket) {
        ticket.markCancelled()
        let dropped: [CheckedContinuation<Start, Never>] = state.withLockedValue { state in
            var dropped: [CheckedContinuation<Start, Never>] = []
            for (id, waiter) in state.waiters where waiter.ticket === ticket {
                if state.admission.withdraw(id) { dropped.append(waiter.continuation) }
                state.waiters[id] = nil
            }
            state.noteSaturation()
            return dropped
        }
        for continuation in dropped { continuation.resume(returning: .cancelled) }
    }

    /// Throws (and counts) when `ticket`'s connection went or its deadline passed: a read nobody waits
    /// for any more must not reach the broker.
    private func checkStillWanted(_ channel: ChannelName, _ ticket: HistoryReadTicket) throws(StormError) {
        if ticket.isCancelled {
            count(.cancelled)
            throw StormError(.brokerUnavailable, "the history read of '\(channel)' was cancelled: its connection closed")
        }
        if ticket.isExpired {
            count(.timeout)
            throw timeoutError(channel)
        }
    }

    /// Reads `channel` after `offset` within `ticket`'s deadline: the broker's history, joined with the
    /// archive's for an offset older than the broker keeps (`HistoryStitch`). Throws `broker_unavailable`
    /// naming why when the read was refused (too many waiting), timed out or cancelled, and the archive's
    /// error when PostgreSQL could not be read.
    package func read(_ channel: ChannelName, after offset: UInt64, limit: Int, ticket: HistoryReadTicket) async throws(StormError) -> ChannelHistory {
        try checkStillWanted(channel, ticket)
        switch await admit(ticket) {
        case .refused:
            count(.refused)
            throw StormError(
                .brokerUnavailable,
                "too many history reads are in flight on this gateway (\(configuration.maxInFlight) running, \(configuration.maxWaiting) waiting); the history of '\(channel)' was not read: retry later")
        case .cancelled:
            count(.cancelled)
            throw StormError(.brokerUnavailable, "the history read of '\(channel)' was cancelled: its connection closed")
        case .timedOut:
            count(.timeout)
            throw timeoutError(channel)
        case .run:
            break
        }
        defer { finish() }
        // Skipped if the connection went or the deadline passed while it waited.
        try checkStillWanted(channel, ticket)
        metrics.recoveryReadsInFlight.increment()
        defer { metrics.recoveryReadsInFlight.decrement() }
        do {
            var history = try await broker.history(of: channel, after: offset, limit: limit, bounds: ticket.bounds)
            if let archive, HistoryStitch.needsArchive(after: offset, limit: limit, broker: history) {
                // Older than the broker keeps: PostgreSQL has it (the consumer copied it there).
                try checkStillWanted(channel, ticket)
                let archived = try await archive.archive(of: channel, after: Int64(clamping: offset), limit: limit, epoch: history.epoch)
                history = HistoryStitch.join(after: offset, limit: limit, broker: history, archive: archived)
            }
            count(.ok)
            return history
        } catch {
            if ticket.isCancelled {
                count(.cancelled)
            } else if ticket.isExpired {
                count(.timeout)
                throw timeoutError(channel)
            } else {
                count(.error)
            }
            throw error
        }
    }

    /// Why `/readyz` should be 503: every slot busy and the line full for longer than
    /// `saturationThreshold`.
    package var unavailableReason: String? {
        let since = state.withLockedValue { $0.fullSince }
        guard let since else { return nil }
        let refusing = NIODeadline.now() - since
        guard refusing >= Self.timeAmount(configuration.saturationThreshold) else { return nil }
        return "history reads have been saturated for \(refusing.nanoseconds / 1_000_000_000) s, new ones are refused (\(configuration.maxInFlight) running, \(configuration.maxWaiting) waiting): resuming clients get \"recovered\":false; check the JetStream stream's health"
    }

    // MARK: Admission

    private func admit(_ ticket: HistoryReadTicket) async -> Start {
        await withCheckedContinuation { (continuation: CheckedContinuation<Start, Never>) in
            let (id, decision): (UInt64, HistoryAdmission.Decision) = state.withLockedValue { state in
                let id = state.nextID
                state.nextID &+= 1
                let decision = state.admission.admit(id)
                if decision == .wait { state.waiters[id] = Waiter(ticket: ticket, continuation: continuation) }
                state.noteSaturation()
                return (id, decision)
            }
            switch decision {
            case .run:
                continuation.resume(returning: .run)
            case .refuse:
                continuation.resume(returning: .refused)
            case .wait:
                // Waiting ends at the deadline at the latest.
                MultiThreadedEventLoopGroup.singleton.any().scheduleTask(deadline: ticket.deadline) { [weak self] in
                    self?.expire(id)
                }
                // The connection may have gone between the caller's check and registering.
                if ticket.isCancelled { cancel(ticket) }
            }
        }
    }

    private func expire(_ id: UInt64) {
        let continuation: CheckedContinuation<Start, Never>? = state.withLockedValue { state in
            guard let waiter = state.waiters[id], state.admission.withdraw(id) else { return nil }
            state.waiters[id] = nil
            state.noteSaturation()
            return waiter.continuation
        }
        continuation?.resume(returning: .timedOut)
    }

    /// A running read ended: its slot goes to the first read in line.
    private func finish() {
        let next: CheckedContinuation<Start, Never>? = state.withLockedValue { state in
            defer { state.noteSaturation() }
            // Bounded by the line's length: every read in line has a waiter, so this ends at once.
            for _ in 0...state.admission.maxWaiting {
                guard let id = state.admission.finish() else { return nil }
                if let waiter = state.waiters.removeValue(forKey: id) { return waiter.continuation }
            }
            return nil
        }
        next?.resume(returning: .run)
    }

    /// A configured duration as a `TimeAmount`, clamped to 0...1 day (never traps).
    package static func timeAmount(_ duration: Duration) -> TimeAmount {
        .milliseconds(min(max(0, milliseconds(duration)), 86_400_000))
    }

    private func count(_ outcome: Outcome) {
        metrics.recoveryReads(outcome).increment()
    }

    private func timeoutError(_ channel: ChannelName) -> StormError {
        StormError(
            .brokerUnavailable,
            "the history read of '\(channel)' did not finish within \(configuration.timeout.components.seconds) s (the JetStream stream is slow or unavailable); retry later")
    }
}
