import NIOCore
import StormCore
import StormPresence

/// The channels one session subscribes to, kept in step with its loop's hub and the router's counts.
///
/// A channel is in `counted` from the moment the router counted it until the session releases it; when
/// the router's future fails the interest was never counted, so it is dropped without a release.
///
/// It is also where presence learns about the session: a confirmed subscribe joins, an unsubscribe leaves
/// and `removeAll` (every session calls it when it ends) forgets the connection. The tracker only queues
/// these changes, so nothing here waits for Redis.
package final class SessionChannels {
    private var counted: Set<ChannelName> = []
    private let hub: LoopHub
    private let router: ChannelRouter
    private let presence: PresenceTracker?
    /// This connection's presence client id, assigned at its first confirmed subscribe.
    private(set) var presenceClient: String?
    /// The token's user (nil: anonymous), under which presence knows this connection.
    private let user: String?

    package init(hub: LoopHub, router: ChannelRouter, presence: PresenceTracker? = nil, user: String? = nil) {
        self.hub = hub
        self.router = router
        self.presence = presence
        self.user = user
    }

    /// Registers the connection with presence now (not at its first subscribe), so that disconnecting
    /// its user (`disconnectEverywhere(user:)`) reaches it even while it holds no channel.
    package func registerClient(session: any FanoutSubscriber) {
        guard let presence, presenceClient == nil else { return }
        presenceClient = presence.connect(session: session, on: hub.eventLoop, user: user)
    }

    package var count: Int { counted.count }

    package func contains(_ channel: ChannelName) -> Bool { counted.contains(channel) }

    /// Subscribes `session` to every channel not yet held; succeeds once deliveries have started for all,
    /// fails with the first error (channels that did start stay subscribed).
    package func subscribe(_ channels: [ChannelName], session: any FanoutSubscriber) -> EventLoopFuture<Void> {
        let loop = hub.eventLoop
        var pending: [EventLoopFuture<Void>] = []
        for channel in channels where !counted.contains(channel) {
            counted.insert(channel)
            hub.add(session, to: channel)
            let future = router.retain(channel, on: hub).assumeIsolated().flatMapErrorThrowing { [self] error in
                // Not counted by the router: forget it here too, unless the session let go already.
                if self.counted.remove(channel) != nil { self.hub.remove(session, from: channel) }
                throw error
            }.map { [self] in
                self.joined(channel, session: session)
            }.nonisolated()
            pending.append(future)
        }
        return EventLoopFuture.andAllSucceed(pending, on: loop)
    }

    /// Returns whether the session held the channel.
    @discardableResult
    package func unsubscribe(_ channel: ChannelName, session: any FanoutSubscriber) -> Bool {
        guard counted.remove(channel) != nil else { return false }
        hub.remove(session, from: channel)
        router.release(channel, on: hub)
        if let presence, let presenceClient { presence.leave(presenceClient, channel: channel) }
        return true
    }

    package func removeAll(session: any FanoutSubscriber) {
        for channel in counted {
            hub.remove(session, from: channel)
            router.release(channel, on: hub)
        }
        counted.removeAll()
        if let presence, let presenceClient { presence.disconnect(presenceClient) }
        presenceClient = nil
    }

    /// Deliveries of `channel` started: tell presence, unless the session let go meanwhile.
    private func joined(_ channel: ChannelName, session: any FanoutSubscriber) {
        guard let presence, counted.contains(channel) else { return }
        let client = presenceClient ?? presence.connect(session: session, on: hub.eventLoop, user: user)
        presenceClient = client
        presence.join(client, channel: channel)
    }
}
