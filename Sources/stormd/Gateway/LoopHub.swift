import NIOConcurrencyHelpers
import NIOCore
import StormCore

/// A client connection that receives fan-out: a WebSocket or an SSE session. Used only on its event loop.
protocol FanoutSubscriber: AnyObject {
    var transport: GatewayMetrics.Transport { get }

    /// Queues a channel's deliveries of one drain without flushing; the hub flushes every session that
    /// answered `.queued(flushDue: true, …)` once the batch is written.
    func enqueue(_ run: DeliveryRun) -> EnqueueOutcome

    /// Writes what `enqueue` queued: one `writev` for everything since the last flush.
    func flush()

    /// Called about once a second by the hub: pings, heartbeats, dead-peer detection.
    func tick(now: NIODeadline)

    /// Closes the connection for a gateway shutdown (WebSocket close 1001, SSE stream end).
    func closeForShutdown()
}

enum EnqueueOutcome {
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
/// inbox schedules one drain `flushDelay` later, and every message arriving meanwhile rides along. The
/// drain writes each channel's messages to each of its subscribers in one write and then flushes each touched connection
/// once, which is what turns one `send()` per message per subscriber into one per connection per batch.
final class LoopHub: @unchecked Sendable {
    // @unchecked: `subscribers`, `sessions`, `dirty` and `ticker` are only touched on `eventLoop`
    // (asserted in debug builds); `inbox` is behind its lock.
    let eventLoop: any EventLoop
    let index: Int
    private let flushDelay: TimeAmount
    private let maxFlushDelay: TimeAmount
    private let metrics: GatewayMetrics

    private var subscribers: [ChannelName: [ObjectIdentifier: any FanoutSubscriber]] = [:]
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

    init(eventLoop: any EventLoop, index: Int, flushDelay: TimeAmount, maxFlushDelay: TimeAmount, metrics: GatewayMetrics) {
        self.eventLoop = eventLoop
        self.index = index
        self.flushDelay = flushDelay
        self.maxFlushDelay = max(flushDelay, maxFlushDelay)
        self.metrics = metrics
    }

    /// Starts the once-a-second tick that drives pings and heartbeats for every session of this loop (one
    /// timer per loop rather than one per connection keeps idle connections cheap).
    func start() {
        eventLoop.execute {
            self.ticker = self.eventLoop.scheduleRepeatedTask(initialDelay: .seconds(1), delay: .seconds(1)) { _ in
                let now = NIODeadline.now()
                for session in self.sessions.values { session.tick(now: now) }
            }
        }
    }

    // MARK: Sessions (on the loop)

    func register(_ session: any FanoutSubscriber) {
        eventLoop.preconditionInEventLoop()
        sessions[ObjectIdentifier(session)] = session
    }

    func unregister(_ session: any FanoutSubscriber) {
        eventLoop.preconditionInEventLoop()
        sessions[ObjectIdentifier(session)] = nil
    }

    func add(_ session: any FanoutSubscriber, to channel: ChannelName) {
        eventLoop.preconditionInEventLoop()
        subscribers[channel, default: [:]][ObjectIdentifier(session)] = session
    }

    func remove(_ session: any FanoutSubscriber, from channel: ChannelName) {
        eventLoop.preconditionInEventLoop()
        subscribers[channel]?[ObjectIdentifier(session)] = nil
        if subscribers[channel]?.isEmpty == true { subscribers[channel] = nil }
    }

    /// Closes every session of this loop for shutdown and stops the tick.
    func closeAll() -> EventLoopFuture<Void> {
        eventLoop.submit {
            self.ticker?.cancel()
            self.ticker = nil
            for session in Array(self.sessions.values) { session.closeForShutdown() }
        }
    }

    var sessionCount: EventLoopFuture<Int> { eventLoop.submit { self.sessions.count } }

    // MARK: Deliveries (from broker threads)

    func enqueue(_ delivery: Delivery) {
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

    /// How long a batch collects before it is written: `flushDelay`, stretched so that the loop rests at
    /// least as long as the last drain took, up to `maxFlushDelay`. Under light load (messages further
    /// apart than a drain costs) that is just the configured delay. When writing a batch gets expensive
    /// (many subscribers, high rates), the loop spends at most about half its time writing and batches
    /// grow instead, so each `writev` carries more messages and the cost per delivery falls exactly when it
    /// matters; latency rises gracefully, bounded by `maxFlushDelay`.
    private func batchDelay(quietUntil: NIODeadline) -> TimeAmount {
        let rest = quietUntil - .now()
        return min(maxFlushDelay, max(flushDelay, rest))
    }

    private func drain() {
        let batch = inbox.withLockedValue { inbox -> [Delivery] in
            inbox.drainScheduled = false
            return inbox.deliveries.swapAndClear()
        }
        var deliveredWebSocket: Int64 = 0
        var deliveredSSE: Int64 = 0
        var dropped: Int64 = 0
        let started = NIODeadline.now()
        let nowMicros = unixMicrosNow()
        var gone: [(ChannelName, ObjectIdentifier)] = []
        for run in runs(of: batch) {
            guard let targets = subscribers[run.channel] else {
                for delivery in run.deliveries { delivery.trace?.loopFinished(subscribers: 0) }
                continue
            }
            for delivery in run.deliveries {
                metrics.fanoutLatency.record(Double(nowMicros &- min(nowMicros, delivery.publishedAtMicros)) / 1_000_000)
            }
            for (key, session) in targets {
                switch session.enqueue(run) {
                case .queued(let flushDue, let messages):
                    if flushDue { dirty.append(session) }
                    if session.transport == .sse { deliveredSSE += Int64(messages) } else { deliveredWebSocket += Int64(messages) }
                case .skipped:
                    break
                case .closed:
                    dropped += 1
                    gone.append((run.channel, key))
                }
            }
            for delivery in run.deliveries { delivery.trace?.loopFinished(subscribers: targets.count) }
        }
        for (channel, key) in gone {
            subscribers[channel]?[key] = nil
            if subscribers[channel]?.isEmpty == true { subscribers[channel] = nil }
        }
        if !dirty.isEmpty {
            for session in dirty { session.flush() }
            dirty.removeAll(keepingCapacity: dirty.count < 65_536)
        }
        let finished = NIODeadline.now()
        inbox.withLockedValue { $0.quietUntil = finished + (finished - started) }
        if deliveredWebSocket > 0 { metrics.deliveredWebSocket.increment(by: deliveredWebSocket) }
        if deliveredSSE > 0 { metrics.deliveredSSE.increment(by: deliveredSSE) }
        if dropped > 0 { metrics.droppedSlowClient.increment(by: dropped) }
    }
}

extension LoopHub {
    /// The batch split by channel, each channel's deliveries in arrival order. Only the order within a
    /// channel is promised to clients (each is its own broker subject), so a channel's messages may be
    /// written ahead of another's that arrived between them.
    fileprivate func runs(of batch: [Delivery]) -> [DeliveryRun] {
        let allocator = ByteBufferAllocator()
        guard batch.count > 1 else {
            return batch.map { DeliveryRun(channel: $0.channel, deliveries: [$0], allocator: allocator) }
        }
        var order: [ChannelName] = []
        var byChannel: [ChannelName: [Delivery]] = [:]
        for delivery in batch {
            if byChannel[delivery.channel] == nil { order.append(delivery.channel) }
            byChannel[delivery.channel, default: []].append(delivery)
        }
        return order.map { DeliveryRun(channel: $0, deliveries: byChannel[$0] ?? [], allocator: allocator) }
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
