import NIOConcurrencyHelpers
import NIOCore
import StormCore
import StormObservability

/// The in-process broker: the zero-config single-node default, and the fast engine for unit tests.
///
/// Publishing calls every subscriber's delivery closure synchronously on the publisher's thread, which is
/// what NATS's delivery thread does in the real engine. It keeps a bounded window of recent messages per
/// channel (`historyWindow`, default 1,000) so recovery works without NATS too; the window and the
/// offsets live as long as the process, which is what the epoch says.
package final class MemoryBroker: MessageBroker {
    private final class Subscription: BrokerSubscription {
        let channel: ChannelName
        let deliver: TracedBrokerDelivery
        weak let broker: MemoryBroker?

        init(channel: ChannelName, deliver: @escaping TracedBrokerDelivery, broker: MemoryBroker) {
            self.channel = channel
            self.deliver = deliver
            self.broker = broker
        }

        func cancel() { broker?.remove(self) }
    }

    private final class ControlSubscription: BrokerSubscription {
        let gateway: String
        let deliver: @Sendable ([UInt8]) -> Void
        weak let broker: MemoryBroker?

        init(gateway: String, deliver: @escaping @Sendable ([UInt8]) -> Void, broker: MemoryBroker) {
            self.gateway = gateway
            self.deliver = deliver
            self.broker = broker
        }

        func cancel() { broker?.remove(self) }
    }

    private struct State {
        var subscriptions: [ChannelName: [ObjectIdentifier: Subscription]] = [:]
        /// Control handlers by gateway id: a table of their own, apart from every channel and its window.
        var control: [String: [ObjectIdentifier: ControlSubscription]] = [:]
        /// Recent messages per channel, oldest first, at most `historyWindow`.
        var windows: [ChannelName: [StoredEnvelope]] = [:]
        /// Per channel, the newest offset pushed out of its window.
        var evictedUpTo: [ChannelName: UInt64] = [:]
        /// Offsets of recent idempotency keys, so a retried publish is stored once.
        var recentKeys: [String: UInt64] = [:]
        var keyOrder: [String] = []
        var sequence: UInt64 = 0
        var stopped = false
    }

    private let state = NIOLockedValueBox(State())
    private let historyWindow: Int
    /// Idempotency keys remembered, like JetStream's duplicate window.
    private let rememberedKeys = 10_000
    package let epochValue: String

    package init(historyWindow: Int = 1000) {
        self.historyWindow = historyWindow
        self.epochValue = "memory-\(MessageIDGenerator().instanceID)"
    }

    package var endpointDescription: String { "memory" }
    package var isConnected: Bool { !state.withLockedValue { $0.stopped } }
    package var epoch: String { epochValue }

    package func start() async throws(StormError) {}

    package func publish(_ envelope: ByteBuffer, on channel: ChannelName, idempotencyKey: String, trace: TraceHeaders?, eventLoop: any EventLoop) -> EventLoopFuture<PublishReceipt> {
        // Deliver under the lock: the offset order and the delivery order must agree, as they do on a
        // NATS delivery thread.
        let outcome: Result<PublishReceipt, StormError> = state.withLockedValue { state in
            guard !state.stopped else { return .failure(StormError(.brokerUnavailable, "the in-memory broker is stopped")) }
            if let offset = state.recentKeys[idempotencyKey] {
                return .success(PublishReceipt(offset: offset, duplicate: true))
            }
            state.sequence += 1
            let offset = state.sequence
            state.recentKeys[idempotencyKey] = offset
            state.keyOrder.append(idempotencyKey)
            if state.keyOrder.count > rememberedKeys * 2 {
                for key in state.keyOrder.prefix(rememberedKeys) { state.recentKeys[key] = nil }
                state.keyOrder.removeFirst(rememberedKeys)
            }
            if historyWindow > 0 {
                state.windows[channel, default: []].append(StoredEnvelope(offset: offset, envelope: envelope))
                if let count = state.windows[channel]?.count, count > historyWindow {
                    let evicted = state.windows[channel]?[count - historyWindow - 1].offset ?? 0
                    state.windows[channel]?.removeFirst(count - historyWindow)
                    state.evictedUpTo[channel] = evicted
                }
            }
            for subscription in state.subscriptions[channel]?.values ?? [:].values {
                subscription.deliver(envelope, offset, trace)
            }
            return .success(PublishReceipt(offset: offset, duplicate: false))
        }
        return eventLoop.makeCompletedFuture(outcome.mapError { $0 as any Error })
    }

    package func history(of channel: ChannelName, after offset: UInt64, limit: Int, bounds: HistoryReadBounds) async throws(StormError) -> ChannelHistory {
        if bounds.isCancelled() { throw StormError(.brokerUnavailable, "the history read of '\(channel)' was cancelled: its connection closed") }
        let (window, evicted, latest) = state.withLockedValue { ($0.windows[channel] ?? [], $0.evictedUpTo[channel] ?? 0, $0.sequence) }
        let start = window.firstIndex { $0.offset > offset } ?? window.endIndex
        return ChannelHistory(
            epoch: epochValue, messages: Array(window[start...].prefix(max(0, limit))),
            latestOffset: window.last?.offset, earliestOffset: window.first?.offset, lostUpTo: evicted,
            brokerLatestOffset: latest)
    }

    package func subscribe(to channel: ChannelName, deliver: @escaping BrokerDelivery) async throws(StormError) -> any BrokerSubscription {
        try await subscribeTraced(to: channel) { envelope, offset, _ in deliver(envelope, offset) }
    }

    package func subscribeTraced(to channel: ChannelName, deliver: @escaping TracedBrokerDelivery) async throws(StormError) -> any BrokerSubscription {
        let subscription = Subscription(channel: channel, deliver: deliver, broker: self)
        state.withLockedValue { $0.subscriptions[channel, default: [:]][ObjectIdentifier(subscription)] = subscription }
        return subscription
    }

    package func sendControl(_ message: [UInt8], to gateway: String) async throws(StormError) {
        let handlers: [ControlSubscription]? = state.withLockedValue { state in
            state.stopped ? nil : Array((state.control[gateway] ?? [:]).values)
        }
        guard let handlers else { throw StormError(.brokerUnavailable, "the in-memory broker is stopped") }
        for handler in handlers { handler.deliver(message) }
    }

    package func subscribeControl(gateway: String, deliver: @escaping @Sendable ([UInt8]) -> Void) async throws(StormError) -> any BrokerSubscription {
        let subscription = ControlSubscription(gateway: gateway, deliver: deliver, broker: self)
        state.withLockedValue { $0.control[gateway, default: [:]][ObjectIdentifier(subscription)] = subscription }
        return subscription
    }

    package func shutdown() async {
        state.withLockedValue {
            $0.stopped = true
            $0.subscriptions.removeAll()
            $0.control.removeAll()
        }
    }

    private func remove(_ subscription: ControlSubscription) {
        state.withLockedValue { state in
            state.control[subscription.gateway]?[ObjectIdentifier(subscription)] = nil
            if state.control[subscription.gateway]?.isEmpty == true { state.control[subscription.gateway] = nil }
        }
    }

    private func remove(_ subscription: Subscription) {
        state.withLockedValue { state in
            state.subscriptions[subscription.channel]?[ObjectIdentifier(subscription)] = nil
            if state.subscriptions[subscription.channel]?.isEmpty == true { state.subscriptions[subscription.channel] = nil }
        }
    }
}
