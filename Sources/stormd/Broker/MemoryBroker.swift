import NIOConcurrencyHelpers
import NIOCore
import StormCore

/// The in-process broker: the zero-config single-node default, and the fast engine for unit tests.
///
/// Publishing calls every subscriber's delivery closure synchronously on the publisher's thread, which is
/// what NATS's delivery thread does in the real engine.
final class MemoryBroker: MessageBroker {
    private final class Subscription: BrokerSubscription {
        let channel: ChannelName
        let deliver: BrokerDelivery
        weak let broker: MemoryBroker?

        init(channel: ChannelName, deliver: @escaping BrokerDelivery, broker: MemoryBroker) {
            self.channel = channel
            self.deliver = deliver
            self.broker = broker
        }

        func cancel() { broker?.remove(self) }
    }

    private let subscriptions = NIOLockedValueBox<[ChannelName: [ObjectIdentifier: Subscription]]>([:])
    private let stopped = NIOLockedValueBox(false)

    init() {}

    var endpointDescription: String { "memory" }
    var isConnected: Bool { !stopped.withLockedValue { $0 } }

    func start() async throws(StormError) {}

    func publish(_ envelope: ByteBuffer, on channel: ChannelName, eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        guard isConnected else {
            return eventLoop.makeFailedFuture(StormError(.brokerUnavailable, "the in-memory broker is stopped"))
        }
        let targets = subscriptions.withLockedValue { $0[channel].map { Array($0.values) } ?? [] }
        for subscription in targets {
            subscription.deliver(envelope)
        }
        return eventLoop.makeSucceededVoidFuture()
    }

    func subscribe(to channel: ChannelName, deliver: @escaping BrokerDelivery) async throws(StormError) -> any BrokerSubscription {
        let subscription = Subscription(channel: channel, deliver: deliver, broker: self)
        subscriptions.withLockedValue { $0[channel, default: [:]][ObjectIdentifier(subscription)] = subscription }
        return subscription
    }

    func shutdown() async {
        stopped.withLockedValue { $0 = true }
        subscriptions.withLockedValue { $0.removeAll() }
    }

    private func remove(_ subscription: Subscription) {
        subscriptions.withLockedValue { table in
            table[subscription.channel]?[ObjectIdentifier(subscription)] = nil
            if table[subscription.channel]?.isEmpty == true { table[subscription.channel] = nil }
        }
    }
}
