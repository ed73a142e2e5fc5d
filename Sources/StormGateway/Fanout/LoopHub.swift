import NIOConcurrencyHelpers
import NIOCore
import StormCore
import StormObservability
import StormPresence

/// A client connection that receives fan-out: a WebSocket or an SSE session. Used only on its event loop.
/// (`transport` and `closeForShutdown()` come from `PresenceSession`.)
package protocol FanoutSubscriber: PresenceSession {
    /// Queues a channel's deliveries of one drain without flushing; the hub flushes every session that
    /// answered `.queued(flushDue: true, …)` once the batch is written.
    func enqueue(_ run: DeliveryRun) -> EnqueueOutcome

    /// Writes what `enqueue` queued: one `writev` for everything since the last flush.
    func flush()

    /// Called about once a second by the hub: pings, heartbeats, dead-peer detection.
    func tick(now: NIODeadline)
}

package enum EnqueueOutcome {
    /// `messages` queued (some of a run may be held back by recovery). `flushDue`: the first write since
    /// the last flush, so the hub must flush this session.
    case queued(flushDue: Bool, messages: Int)
    /// Not queued, and nothing owed: the session is not streaming yet, or recovery holds the messages.
    case skipped
    /// Not queued: the connection is closed, or was just disconnected as too slow. The hub forgets it.
    case closed
}

/// The subscribers of one event loop, and the inbox through which broker threads hand it messages.
///
/// An event loop owns its connections, so the subscriber table needs no lock: only the inbox, which
/// broker threads fill, is locked. Messages are handed over in batches: the first message into an empty
/// inbox schedules one drain `flushDelay` later, and every message arriving meanwhile rides along. A
/// drain is a pass over each channel's subscribers (`ChannelFanout`): each is written, in one write,
/// everything it has not had yet, which is what turns one `send()` per message per subscriber into one
/// per connection per pass. Messages arriving during the pass are taken between chunks of subscribers,
/// so the rest of the pass carries them too.
package final class LoopHub: @unchecked Sendable {
    // @unchecked: `channels`, `sessions`, `dirty` and `ticker` are only touched on `eventLoop`
    // (asserted in debug builds); `inbox` is behind its lock.
    package let eventLoop: any EventLoop
    package let index: Int
    private let flushDelay: TimeAmount
    private let maxFlushDelay: TimeAmount
    private let metrics: GatewayMetrics

    private var channels: [ChannelName: ChannelFanout] = [:]
    private var sessions: [ObjectIdentifier: any FanoutSubscriber] = [:]
    private var dirty: [any FanoutSubscriber] = []
    private var ticker: RepeatedTask?

    private struct Inbox {
        var deliveries: [Delivery] = []
        var drainScheduled = false
        /// The earliest the next drain should run: the last drain's end plus what it cost (see `batchDelay`).
        var quietUntil = NIODeadline.uptimeNanoseconds(0)
    }
    private let inbox = NIOLockedValueBox(Inbox())

    package init(eventLoop: any EventLoop, index: Int, flushDelay: TimeAmount, maxFlushDelay: TimeAmount, metrics: GatewayMetrics) {
        self.eventLoop = eventLoop
        self.index = index
        self.flushDelay = flushDelay
        self.maxFlushDelay = max(flushDelay, maxFlushDelay)
        self.metrics = metrics
    }

    /// Starts the once-a-second tick that drives pings and heartbeats for every session of this loop (one
    /// timer per loop rather than one per connection keeps idle connections cheap).
    package func start() {
        eventLoop.execute {
            self.ticker = self.eventLoop.scheduleRepeatedTask(initialDelay: .seconds(1), delay: .seconds(1)) { _ in
                let now = NIODeadline.now()
                for session in self.sessions.values { session.tick(now: now) }
            }
        }
    }

    // MARK: Sessions (on the loop)

    package func register(_ session: any FanoutSubscriber) {
        eventLoop.preconditionInEventLoop()
        sessions[ObjectIdentifier(session)] = session
    }

    package func unregister(_ session: any FanoutSubscriber) {
        eventLoop.preconditionInEventLoop()
        sessions[ObjectIdentifier(session)] = nil
    }

    package func add(_ session: any FanoutSubscriber, to channel: ChannelName) {
        eventLoop.preconditionInEventLoop()
        let fanout = channels[channel] ?? ChannelFanout(channel: channel)
        channels[channel] = fanout
        fanout.add(session)
    }

    package func remove(_ session: any FanoutSubscriber, from channel: ChannelName) {
        eventLoop.preconditionInEventLoop()
        guard let fanout = channels[channel] else { return }
        fanout.remove(session)
        if fanout.isEmpty { channels[channel] = nil }
    }

    /// Closes every session of this loop for shutdown and stops the tick.
    package func closeAll() -> EventLoopFuture<Void> {
        eventLoop.submit {
            self.ticker?.cancel()
            self.ticker = nil
            for session in Array(self.sessions.values) { session.closeForShutdown() }
        }
    }

    // MARK: Deliveries (from broker threads)

    package func enqueue(_ delivery: Delivery) {
        let delay = inbox.withLockedValue { inbox -> TimeAmount? in
            inbox.deliveries.append(delivery)
            if inbox.drainScheduled { return nil }
            inbox.drainScheduled = true
            return batchDelay(quietUntil: inbox.quietUntil)
        }
        guard let delay else { return }
        if delay > .zero {
            eventLoop.scheduleTask(in: delay) { self.drain() }
        } else {
            eventLoop.execute { self.drain() }
        }
    }

    /// How long a batch collects before its pass starts: `flushDelay`, stretched (only if
    /// `--max-flush-interval` allows it) so that the loop rests about as long as its last pass took.
    /// Passes batch by themselves under load, since each carries what arrived during the one before, so
    /// the stretching is off by default: it buys fewer, larger writes with latency.
    private func batchDelay(quietUntil: NIODeadline) -> TimeAmount {
        let rest = quietUntil - .now()
        return min(maxFlushDelay, max(flushDelay, rest))
    }

    /// How many subscribers a pass writes before it looks for newly arrived messages.
    package static let chunk = 256

    /// One pass over every channel with messages to write. Between chunks of subscribers it takes what
    /// arrived meanwhile, so later subscribers of the pass get those messages too (see `ChannelFanout`);
    /// the ones it already passed get them in the next pass, which starts right after.
    private func drain() {
        let started = NIODeadline.now()
        var tally = DrainTally()
        take(inbox.withLockedValue { $0.deliveries.swapAndClear() })
        for fanout in Array(channels.values) where fanout.hasUnwritten {
            let passStarted = NIODeadline.now()
            var slot = 0
            while slot < fanout.slots {
                let end = min(slot + Self.chunk, fanout.slots)
                while slot < end {
                    if let (session, outcome) = fanout.serve(slot: slot) { note(outcome, of: session, in: &tally) }
                    slot += 1
                }
                flushDirty()
                take(inbox.withLockedValue { $0.deliveries.swapAndClear() })
            }
            fanout.endPass()
            metrics.fanoutPass.record(Double((NIODeadline.now() - passStarted).nanoseconds) / 1e9)
            if fanout.isEmpty { channels[fanout.channel] = nil }
        }
        let finished = NIODeadline.now()
        let next = inbox.withLockedValue { inbox -> TimeAmount? in
            inbox.quietUntil = finished + (finished - started)
            // Messages that arrived late in the pass are owed to the subscribers it had already passed.
            guard inbox.deliveries.isEmpty, !channels.values.contains(where: \.hasUnwritten) else { return flushDelay }
            inbox.drainScheduled = false
            return nil
        }
        if let next { eventLoop.scheduleTask(in: next) { self.drain() } }
        tally.report(to: metrics)
    }

    /// Counts what writing a subscriber did, and remembers it for the flush when it is the first write.
    private func note(_ outcome: EnqueueOutcome, of session: any FanoutSubscriber, in tally: inout DrainTally) {
        switch outcome {
        case .queued(let flushDue, let messages):
            tally.writes += 1
            if flushDue { dirty.append(session) }
            if session.transport == .sse { tally.sse += Int64(messages) } else { tally.webSocket += Int64(messages) }
        case .skipped:
            break
        case .closed:
            tally.dropped += 1
        }
    }

    /// Appends arrived deliveries to their channels' logs.
    private func take(_ deliveries: [Delivery]) {
        let nowMicros = unixMicrosNow()
        for delivery in deliveries {
            guard let fanout = channels[delivery.channel] else {
                delivery.trace?.loopFinished(subscribers: 0)
                continue
            }
            metrics.fanoutLatency.record(Double(nowMicros &- min(nowMicros, delivery.publishedAtMicros)) / 1_000_000)
            fanout.append(delivery)
            delivery.trace?.loopFinished(subscribers: fanout.subscriberCount)
        }
    }

    private func flushDirty() {
        guard !dirty.isEmpty else { return }
        for session in dirty { session.flush() }
        dirty.removeAll(keepingCapacity: dirty.count < 65_536)
    }

    /// What a drain wrote, added to the metrics once at its end.
    private struct DrainTally {
        var webSocket: Int64 = 0
        var sse: Int64 = 0
        var dropped: Int64 = 0
        var writes: Int64 = 0

        func report(to metrics: GatewayMetrics) {
            if writes > 0 { metrics.fanoutWrites.increment(by: writes) }
            if webSocket > 0 { metrics.deliveredWebSocket.increment(by: webSocket) }
            if sse > 0 { metrics.deliveredSSE.increment(by: sse) }
            if dropped > 0 { metrics.droppedSlowClient.increment(by: dropped) }
        }
    }
}

extension Array {
    /// Returns the contents and leaves an empty array that keeps its capacity for the next batch.
    fileprivate mutating func swapAndClear() -> [Element] {
        var taken: [Element] = []
        taken.reserveCapacity(Swift.min(count, 1024))
        swap(&taken, &self)
        return taken
    }
}
