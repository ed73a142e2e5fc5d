import Atomics
import NIOCore
import StormCore

/// The one way a client's message enters STORM, whatever the transport: it checks the size, builds the
/// envelope once, and returns when the broker has accepted it.
final class Publisher: Sendable {
    private let broker: any MessageBroker
    private let ids: MessageIDGenerator
    private let metrics: GatewayMetrics
    private let maxMessageSize: Int
    private let state: GatewayState
    private let allocator = ByteBufferAllocator()

    init(broker: any MessageBroker, ids: MessageIDGenerator, metrics: GatewayMetrics, maxMessageSize: Int, state: GatewayState) {
        self.broker = broker
        self.ids = ids
        self.metrics = metrics
        self.maxMessageSize = maxMessageSize
        self.state = state
    }

    /// Refuses a payload over the limit before anything else is done with it.
    func checkSize(_ size: Int) throws(StormError) {
        guard size <= maxMessageSize else {
            throw StormError(.messageTooLarge, "message of \(size) bytes is over the limit of \(maxMessageSize) bytes (--max-message-size)")
        }
    }

    /// Publishes a client's payload; the future (on `eventLoop`) gives the envelope as delivered.
    func publish(_ payload: [UInt8], encoding: PayloadEncoding? = nil, on channel: ChannelName, via transport: GatewayMetrics.Transport, eventLoop: any EventLoop) -> EventLoopFuture<Envelope> {
        guard !state.isDraining else {
            return eventLoop.makeFailedFuture(StormError(.shuttingDown, "the gateway is shutting down; publish to another gateway"))
        }
        do {
            try checkSize(payload.count)
        } catch {
            return eventLoop.makeFailedFuture(error)
        }
        let started = NIODeadline.now()
        let envelope = Envelope(channel: channel, id: ids.next(), timestampMicros: unixMicrosNow(), payload: payload, encoding: encoding)
        let bytes = envelope.encoded()
        var buffer = allocator.buffer(capacity: bytes.count)
        buffer.writeBytes(bytes)
        let metrics = self.metrics
        return broker.publish(buffer, on: channel, eventLoop: eventLoop).map {
            metrics.publishDuration.record(Double((NIODeadline.now() - started).nanoseconds) / 1e9)
            (transport == .webSocket ? metrics.publishedWebSocket : metrics.publishedHTTP).increment()
            return envelope
        }
    }
}

/// Gateway-wide flags that every connection reads.
final class GatewayState: Sendable {
    private let draining = ManagedAtomic(false)

    var isDraining: Bool { draining.load(ordering: .relaxed) }
    func beginDraining() { draining.store(true, ordering: .relaxed) }
}
