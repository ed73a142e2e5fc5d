import NIOCore
import NIOPosix
import StormCore
import StormObservability

/// Called by a broker for every message on a subscribed channel, with the envelope's bytes and its
/// offset (0 when the broker keeps no history).
///
/// It runs on the broker's own thread (a nats.c delivery thread for NATS), possibly concurrently for
/// different channels: it must not block and must not touch event-loop state directly.
package typealias BrokerDelivery = @Sendable (_ envelope: ByteBuffer, _ offset: UInt64) -> Void

/// `BrokerDelivery` with the message's W3C trace context (`nil` when it carried none), for tracing the
/// fan-out. Same threading rules.
package typealias TracedBrokerDelivery = @Sendable (_ envelope: ByteBuffer, _ offset: UInt64, _ trace: TraceHeaders?) -> Void

/// A stored message: its offset and envelope bytes.
package struct StoredEnvelope: Sendable {
    package var offset: UInt64
    package var envelope: ByteBuffer

    package init(offset: UInt64, envelope: ByteBuffer) {
        self.offset = offset
        self.envelope = envelope
    }
}

/// A slice of a channel's history, oldest first.
package struct ChannelHistory: Sendable {
    /// Changes when history was lost (stream recreated, memory engine restarted): offsets from another
    /// epoch mean nothing here.
    package var epoch: String
    package var messages: [StoredEnvelope]
    /// The channel's newest offset, `nil` when it has no stored message.
    package var latestOffset: UInt64?
    /// The oldest offset still stored for the channel, `nil` when it has none.
    package var earliestOffset: UInt64?
    /// Messages at or below this offset may have been removed (retention): a client resuming from an
    /// older offset cannot be told it missed nothing. 0 when nothing was ever removed.
    package var lostUpTo: UInt64 = 0
    /// The newest offset of the whole broker (every channel): an offset above it is in the future.
    package var brokerLatestOffset: UInt64 = 0

    package init(epoch: String, messages: [StoredEnvelope], latestOffset: UInt64? = nil, earliestOffset: UInt64? = nil, lostUpTo: UInt64 = 0, brokerLatestOffset: UInt64 = 0) {
        self.epoch = epoch
        self.messages = messages
        self.latestOffset = latestOffset
        self.earliestOffset = earliestOffset
        self.lostUpTo = lostUpTo
        self.brokerLatestOffset = brokerLatestOffset
    }
}

/// How a publish was stored.
package struct PublishReceipt: Sendable {
    /// The message's offset (0 when the broker keeps no history).
    package var offset: UInt64
    /// The broker had already stored a message with this idempotency key: this publish added nothing.
    package var duplicate: Bool

    package init(offset: UInt64, duplicate: Bool) {
        self.offset = offset
        self.duplicate = duplicate
    }
}

/// Carries envelopes between gateways. Two implementations: `NATSBroker` (the real one, for several
/// gateways) and `MemoryBroker` (the zero-config single-node default and fast unit tests). Callers never
/// know which one they hold.
package protocol MessageBroker: AnyObject, Sendable {
    /// Where the broker lives, for logs and `/readyz` ("memory", "nats://127.0.0.1:4222").
    var endpointDescription: String { get }

    /// Whether publishing and subscribing work right now (`/readyz`, `storm_broker_connected`).
    var isConnected: Bool { get }

    /// Why publishing cannot work right now (`/readyz` answers 503 with it), or nil when it can.
    var unavailableReason: String? { get }

    /// The durable stream as last sampled (`storm_stream_*` gauges), nil for a broker without one.
    var streamStatus: StreamStatus? { get }

    /// Connects. Throws a `.configuration` or `.connection` `StormError` when that is impossible.
    func start() async throws(StormError)

    /// Publishes one envelope; the future, on `eventLoop`, succeeds once the broker has accepted it and
    /// fails with a `StormError`.
    ///
    /// A future rather than `async`: the in-memory and NATS core brokers answer at once, so a publish from
    /// an event loop completes on that loop with no hop to another thread and back (each hop costs
    /// milliseconds on a busy host, and allocations at 20,000 publishes a second).
    ///
    /// `trace`, when given, travels with the message (NATS headers `traceparent`, `tracestate`) to
    /// `subscribeTraced` deliveries and the history consumer.
    func publish(_ envelope: ByteBuffer, on channel: ChannelName, idempotencyKey: String, trace: TraceHeaders?, eventLoop: any EventLoop) -> EventLoopFuture<PublishReceipt>

    /// Messages of `channel` with offsets above `offset`, oldest first, at most `limit`. Offsets are
    /// strictly increasing per channel, and one sequence is shared by all channels of a broker, so "after
    /// N" means the same on every channel (an SSE `Last-Event-ID` covers several channels at once).
    ///
    /// `bounds`: the read gives up (`broker_unavailable`) at its deadline, and stops at its next request
    /// to the server once `isCancelled` says its connection went. Blocking work runs on the broker's
    /// history pool, never on the pool that makes subscriptions. Gateways read through `HistoryReader`.
    func history(of channel: ChannelName, after offset: UInt64, limit: Int, bounds: HistoryReadBounds) async throws(StormError) -> ChannelHistory

    /// The current history epoch (see `ChannelHistory.epoch`), as last seen: cheap, for subscribe replies.
    var epoch: String { get }

    /// Starts delivering the channel's envelopes to `deliver`; returns once the broker has registered the
    /// interest, so that a message published anywhere after this returns is delivered.
    func subscribe(to channel: ChannelName, deliver: @escaping BrokerDelivery) async throws(StormError) -> any BrokerSubscription

    /// `subscribe(to:deliver:)`, also handing over each message's trace context. Only for a gateway with a
    /// tracer: reading the headers costs a little per message, which the plain subscription skips.
    func subscribeTraced(to channel: ChannelName, deliver: @escaping TracedBrokerDelivery) async throws(StormError) -> any BrokerSubscription

    /// Sends a control request (a disconnect) to one gateway: at most once, never stored, and on a path
    /// that no channel name reaches, so no client can send, read or replay one (docs/architecture.md,
    /// "Control plane"). Delivered to the gateway's `subscribeControl` handler if it listens now.
    func sendControl(_ message: [UInt8], to gateway: String) async throws(StormError)

    /// Receives the control requests sent to `gateway` (this process's gateway id). Same threading rules
    /// as `BrokerDelivery`.
    func subscribeControl(gateway: String, deliver: @escaping @Sendable ([UInt8]) -> Void) async throws(StormError) -> any BrokerSubscription

    /// Stops: flushes what is pending (NATS drains), then disconnects. Idempotent.
    func shutdown() async
}

/// One channel's interest at a broker.
package protocol BrokerSubscription: AnyObject, Sendable {
    /// Stops deliveries. After `cancel` returns no new delivery starts, but one already running may end.
    func cancel()
}

extension MessageBroker {
    package var streamStatus: StreamStatus? { nil }

    /// Not connected is the only reason a broker without a store of its own can give.
    package var unavailableReason: String? {
        isConnected ? nil : "broker \(endpointDescription) is not connected"
    }

    /// `history` within the standard bounds (5 s, never cancelled), for tests and tools.
    package func history(of channel: ChannelName, after offset: UInt64, limit: Int) async throws(StormError) -> ChannelHistory {
        try await history(of: channel, after: offset, limit: limit, bounds: .standard())
    }

    /// `publish` without trace context.
    package func publish(_ envelope: ByteBuffer, on channel: ChannelName, idempotencyKey: String, eventLoop: any EventLoop) -> EventLoopFuture<PublishReceipt> {
        publish(envelope, on: channel, idempotencyKey: idempotencyKey, trace: nil, eventLoop: eventLoop)
    }

    /// `publish` for callers outside an event loop (tests, tools).
    @discardableResult
    package func publish(_ envelope: ByteBuffer, on channel: ChannelName, idempotencyKey: String? = nil) async throws(StormError) -> PublishReceipt {
        do {
            let key = idempotencyKey ?? "\(ObjectIdentifier(self).hashValue)-\(UInt64.random(in: 0...UInt64.max))"
            return try await publish(envelope, on: channel, idempotencyKey: key, eventLoop: MultiThreadedEventLoopGroup.singleton.any()).get()
        } catch let error as StormError {
            throw error
        } catch {
            throw StormError(.internalError, "publish failed: \(error)")
        }
    }
}
