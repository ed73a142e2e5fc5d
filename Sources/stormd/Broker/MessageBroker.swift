import NIOCore
import NIOPosix
import StormCore

/// Called by a broker for every message on a subscribed channel, with the envelope's bytes.
///
/// It runs on the broker's own thread (a nats.c delivery thread for NATS), possibly concurrently for
/// different channels: it must not block and must not touch event-loop state directly.
typealias BrokerDelivery = @Sendable (_ envelope: ByteBuffer) -> Void

/// Carries envelopes between gateways. Two implementations: `NATSBroker` (the real one, for several
/// gateways) and `MemoryBroker` (the zero-config single-node default and fast unit tests). Callers never
/// know which one they hold.
protocol MessageBroker: AnyObject, Sendable {
    /// Where the broker lives, for logs and `/readyz` ("memory", "nats://127.0.0.1:4222").
    var endpointDescription: String { get }

    /// Whether publishing and subscribing work right now (`/readyz`, `storm_broker_connected`).
    var isConnected: Bool { get }

    /// Connects. Throws a `.configuration` or `.connection` `StormError` when that is impossible.
    func start() async throws(StormError)

    /// Publishes one envelope; the future, on `eventLoop`, succeeds once the broker has accepted it and
    /// fails with a `StormError`.
    ///
    /// A future rather than `async`: the in-memory and NATS core brokers answer at once, so a publish from
    /// an event loop completes on that loop with no hop to another thread and back (each hop costs
    /// milliseconds on a busy host, and allocations at 20,000 publishes a second).
    func publish(_ envelope: ByteBuffer, on channel: ChannelName, eventLoop: any EventLoop) -> EventLoopFuture<Void>

    /// Starts delivering the channel's envelopes to `deliver`; returns once the broker has registered the
    /// interest, so that a message published anywhere after this returns is delivered.
    func subscribe(to channel: ChannelName, deliver: @escaping BrokerDelivery) async throws(StormError) -> any BrokerSubscription

    /// Stops: flushes what is pending (NATS drains), then disconnects. Idempotent.
    func shutdown() async
}

/// One channel's interest at a broker.
protocol BrokerSubscription: AnyObject, Sendable {
    /// Stops deliveries. After `cancel` returns no new delivery starts, but one already running may end.
    func cancel()
}

extension MessageBroker {
    /// `publish` for callers outside an event loop (tests, tools).
    func publish(_ envelope: ByteBuffer, on channel: ChannelName) async throws(StormError) {
        do {
            try await publish(envelope, on: channel, eventLoop: MultiThreadedEventLoopGroup.singleton.any()).get()
        } catch let error as StormError {
            throw error
        } catch {
            throw StormError(.internalError, "publish failed: \(error)")
        }
    }
}
