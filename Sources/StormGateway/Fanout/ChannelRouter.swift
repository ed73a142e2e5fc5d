import Logging
import NIOConcurrencyHelpers
import NIOCore
import StormBroker
import StormCore
import StormObservability
import Tracing

/// Holds one broker subscription per channel that has local subscribers, and routes each broker message
/// to the event loops whose sessions want it.
///
/// Interest is counted per loop: the broker subscription starts with the first local subscriber of a
/// channel and ends with the last, and a message is handed only to the loops that have a subscriber.
package final class ChannelRouter: Sendable {
    private let broker: any MessageBroker
    private let hubs: [LoopHub]
    private let hubByLoop: [ObjectIdentifier: LoopHub]
    private let metrics: GatewayMetrics
    private let logger: Logger
    private let allocator = ByteBufferAllocator()
    /// With a tracer, each message carrying trace context gets one fan-out span on this gateway.
    private let tracing: StormTracing?
    /// Messages this gateway's publishers asked not to get back (`exclude_self`).
    private let exclusions: PublisherExclusions?

    /// One channel's interest. Broker callbacks capture the entry itself, so a delivery reads the loop
    /// counts without a table lookup, and an entry that was replaced (unsubscribe, then subscribe again
    /// while the broker was still busy) delivers nothing.
    private final class Entry: @unchecked Sendable {
        // @unchecked: every mutable field is read and written under `ChannelRouter.table`'s lock.
        package enum State {
            case pending([EventLoopPromise<Void>])
            case active(any BrokerSubscription)
            case released
        }
        package let channel: ChannelName
        package var loopCounts: [Int]
        package var state: State
        /// Messages the broker delivered for this channel since its subscription started (for the
        /// `messages` of `GET /api/v1/channels`, from which stormtop computes per-channel rates).
        package var messages: UInt64 = 0

        package init(channel: ChannelName, loops: Int) {
            self.channel = channel
            self.loopCounts = Array(repeating: 0, count: loops)
            self.state = .pending([])
        }
    }

    private let table = NIOLockedValueBox<[ChannelName: Entry]>([:])
    /// Distinct channels served at once (`--max-channels`).
    private let maxChannels: Int

    package init(
        broker: any MessageBroker, hubs: [LoopHub], metrics: GatewayMetrics, logger: Logger, tracing: StormTracing? = nil, maxChannels: Int = .max,
        exclusions: PublisherExclusions? = nil
    ) {
        self.tracing = tracing
        self.exclusions = exclusions
        self.maxChannels = maxChannels
        self.broker = broker
        self.hubs = hubs
        var byLoop: [ObjectIdentifier: LoopHub] = [:]
        for hub in hubs { byLoop[ObjectIdentifier(hub.eventLoop)] = hub }
        self.hubByLoop = byLoop
        self.metrics = metrics
        self.logger = logger
    }

    /// The hub of the loop a connection lives on.
    package func hub(for eventLoop: any EventLoop) -> LoopHub? {
        hubByLoop[ObjectIdentifier(eventLoop)]
    }

    /// Channels with a live broker subscription (for `storm_broker_subscriptions`).
    package var activeChannelCount: Int {
        table.withLockedValue { $0.count }
    }

    /// The channels with local subscribers and how many each has on this gateway (all loops summed): a
    /// read-only copy for `GET /api/v1/channels`.
    package func subscriberCounts() -> [(channel: ChannelName, subscribers: Int, messages: UInt64)] {
        table.withLockedValue { table in
            table.values.map { (channel: $0.channel, subscribers: $0.loopCounts.reduce(0, +), messages: $0.messages) }
        }
    }

    /// Counts one more subscriber of `channel` on `hub`'s loop. The future succeeds on that loop once the
    /// broker delivers the channel's messages, and fails with the broker's error when it cannot, or with
    /// `too_many_channels` (not counted) when the channel is new and the gateway serves `maxChannels`.
    package func retain(_ channel: ChannelName, on hub: LoopHub) -> EventLoopFuture<Void> {
        let promise = hub.eventLoop.makePromise(of: Void.self)
        let maxChannels = self.maxChannels
        let startSubscription: Entry? = table.withLockedValue { table in
            let entry: Entry
            var created = false
            if let existing = table[channel] {
                entry = existing
            } else {
                guard table.count < maxChannels else {
                    promise.fail(
                        StormError(
                            .tooManyChannels,
                            "this gateway already serves \(maxChannels) channels (--max-channels); '\(channel.rawValue)' was not subscribed: retry later or on another gateway"))
                    return nil
                }
                entry = Entry(channel: channel, loops: hubs.count)
                table[channel] = entry
                created = true
            }
            entry.loopCounts[hub.index] += 1
            switch entry.state {
            case .pending(var waiters):
                waiters.append(promise)
                entry.state = .pending(waiters)
            case .active:
                promise.succeed(())
            case .released:
                promise.fail(StormError(.internalError, "channel '\(channel)' was released while in use"))
            }
            return created ? entry : nil
        }
        if let entry = startSubscription {
            Task { await self.subscribe(entry) }
        }
        return promise.futureResult
    }

    /// Counts one subscriber fewer; the last one on every loop ends the broker subscription.
    package func release(_ channel: ChannelName, on hub: LoopHub) {
        let toCancel: (any BrokerSubscription)? = table.withLockedValue { table in
            guard let entry = table[channel], entry.loopCounts[hub.index] > 0 else { return nil }
            entry.loopCounts[hub.index] -= 1
            guard entry.loopCounts.allSatisfy({ $0 == 0 }) else { return nil }
            table[channel] = nil
            switch entry.state {
            case .active(let subscription):
                entry.state = .released
                return subscription
            case .pending(let waiters):
                // The subscription is still being made: `subscribe` cancels it when it lands.
                entry.state = .released
                for waiter in waiters { waiter.fail(StormError(.internalError, "unsubscribed before the subscription started")) }
                return nil
            case .released:
                return nil
            }
        }
        toCancel?.cancel()
    }

    private func subscribe(_ entry: Entry) async {
        let result: Result<any BrokerSubscription, StormError>
        do {
            let subscription: any BrokerSubscription
            if tracing != nil {
                subscription = try await broker.subscribeTraced(to: entry.channel) { [weak self, entry] envelope, offset, trace in
                    self?.route(envelope, offset: offset, for: entry, trace: trace)
                }
            } else {
                subscription = try await broker.subscribe(to: entry.channel) { [weak self, entry] envelope, offset in
                    self?.route(envelope, offset: offset, for: entry, trace: nil)
                }
            }
            result = .success(subscription)
        } catch {
            result = .failure(error)
        }
        let (waiters, orphan): ([EventLoopPromise<Void>], (any BrokerSubscription)?) = table.withLockedValue { table in
            guard case .pending(let waiters) = entry.state else {
                // Released while we were subscribing: nobody wants it any more.
                if case .success(let subscription) = result { return ([], subscription) }
                return ([], nil)
            }
            switch result {
            case .success(let subscription):
                entry.state = .active(subscription)
            case .failure:
                entry.state = .released
                if table[entry.channel] === entry { table[entry.channel] = nil }
            }
            return (waiters, nil)
        }
        orphan?.cancel()
        switch result {
        case .success:
            for waiter in waiters { waiter.succeed(()) }
        case .failure(let error):
            logger.warning("broker subscription failed", metadata: ["storm.channel": "\(entry.channel)", "error": "\(error)"])
            for waiter in waiters { waiter.fail(error) }
        }
    }

    /// Runs on the broker's delivery thread: frames the message once and hands it to each interested loop.
    private func route(_ envelope: ByteBuffer, offset: UInt64, for entry: Entry, trace: TraceHeaders?) {
        metrics.brokerMessagesReceived.increment()
        guard var delivery = Delivery(envelope: envelope, offset: offset, channel: entry.channel, allocator: allocator) else {
            metrics.droppedMalformed.increment()
            logger.debug("dropped a message that is not a STORM envelope", metadata: ["storm.channel": "\(entry.channel)"])
            return
        }
        // One atomic load while no publisher excludes itself; the lookup only when one does.
        if let exclusions, !exclusions.isEmpty, let fields = EnvelopeFields(envelope) {
            delivery.excludedConnection = exclusions.take(PublisherExclusions.key(channel: entry.channel, id: fields.id))
        }
        // Copy the counts out so the lock is not held while enqueueing.
        let counts = table.withLockedValue { _ in
            entry.messages &+= 1
            return entry.loopCounts
        }
        if let tracing, let trace {
            delivery.trace = FanoutTrace.start(tracing, trace: trace, channel: entry.channel, offset: offset, loops: counts.reduce(0) { $0 + ($1 > 0 ? 1 : 0) })
        }
        for (index, count) in counts.enumerated() where count > 0 {
            hubs[index].enqueue(delivery)
        }
    }
}
