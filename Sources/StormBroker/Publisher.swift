import Atomics
import NIOCore
import Prometheus
import StormCore
import StormObservability
import Tracing

/// The one way a message enters STORM, whatever sends it: clients over HTTP or WebSocket (`publish`), and
/// the gateway itself for presence join/leave events (`publishEvent`). It checks the size, builds the
/// envelope once, counts it (`storm_messages_published_total{transport}`, refusals for lack of room) and
/// returns when the broker has accepted it. Gateway-to-gateway requests never come here: they go on the
/// control plane (`MessageBroker.sendControl`), outside the channels and the stream.
package final class Publisher: Sendable {
    private let broker: any MessageBroker
    private let ids: MessageIDGenerator
    private let metrics: GatewayMetrics
    private let maxMessageSize: Int
    private let state: GatewayState
    private let allocator = ByteBufferAllocator()
    /// The gateway's tracer; `nil` traces nothing and forwards no trace context.
    package let tracing: StormTracing?
    /// Messages not to be delivered back to their publishing connection (`exclude_self`).
    package let exclusions: PublisherExclusions

    package init(
        broker: any MessageBroker, ids: MessageIDGenerator, metrics: GatewayMetrics, maxMessageSize: Int, state: GatewayState, tracing: StormTracing? = nil,
        exclusions: PublisherExclusions = PublisherExclusions()
    ) {
        self.tracing = tracing
        self.exclusions = exclusions
        self.broker = broker
        self.ids = ids
        self.metrics = metrics
        self.maxMessageSize = maxMessageSize
        self.state = state
    }

    /// Refuses a payload over the limit before anything else is done with it.
    package func checkSize(_ size: Int) throws(StormError) {
        guard size <= maxMessageSize else {
            throw StormError(.messageTooLarge, "message of \(size) bytes is over the limit of \(maxMessageSize) bytes (--max-message-size)")
        }
    }

    /// Checks a client's idempotency key: it becomes the message id, so it must be a short token.
    package static func validateIdempotencyKey(_ key: String) throws(StormError) {
        let allowed = key.utf8.allSatisfy { byte in
            ChannelName.isAllowedCharacter(byte) || byte == UInt8(ascii: ".")
        }
        guard (1...64).contains(key.utf8.count), allowed else {
            throw StormError(.badRequest, "idempotency key must be 1 to 64 characters of A-Z a-z 0-9 _ - : @ = .")
        }
    }

    /// Publishes a client's payload; the future (on `eventLoop`) gives the envelope and how the broker
    /// stored it.
    ///
    /// With a client-supplied `idempotencyKey` the key is the message id and the broker's deduplication key
    /// (JetStream's `Nats-Msg-Id`, scoped to the channel), so a retried publish is stored once and answers
    /// with the first one's offset and `duplicate: true`.
    ///
    /// With a tracer, a `publish` span (a child of the client's `trace`, if any) covers the publish up to
    /// the broker's acknowledgement, and its context goes into the message headers for the fan-out and the
    /// history consumer.
    ///
    /// `excluding`: the number of the local connection that must not get this message back
    /// (`exclude_self`; 0 for none), registered before the broker can deliver it.
    package func publish(
        _ payload: [UInt8], encoding: PayloadEncoding? = nil, on channel: ChannelName, idempotencyKey: String? = nil,
        via transport: GatewayMetrics.Transport, trace: TraceHeaders? = nil, excluding connection: UInt64 = 0, eventLoop: any EventLoop
    ) -> EventLoopFuture<(Envelope, PublishReceipt)> {
        guard !state.isDraining else {
            return eventLoop.makeFailedFuture(StormError(.shuttingDown, "the gateway is shutting down; publish to another gateway"))
        }
        do {
            try checkSize(payload.count)
            if let idempotencyKey { try Self.validateIdempotencyKey(idempotencyKey) }
        } catch {
            return eventLoop.makeFailedFuture(error)
        }
        let counter = transport == .webSocket ? metrics.publishedWebSocket : metrics.publishedHTTP
        return send(
            payload, encoding: encoding, on: channel, id: idempotencyKey ?? ids.next(), countedBy: counter,
            transportName: transport.rawValue, trace: trace, excluding: connection, eventLoop: eventLoop)
    }

    /// Publishes an event the gateway itself makes (presence join and leave), on the same path as a
    /// client's message. Unlike `publish` it is not refused while draining: a draining gateway's leave
    /// events are how the others learn that its clients went.
    package func publishEvent(_ payload: [UInt8], on channel: ChannelName, eventLoop: any EventLoop) -> EventLoopFuture<PublishReceipt> {
        do {
            try checkSize(payload.count)
        } catch {
            return eventLoop.makeFailedFuture(error)
        }
        return send(payload, encoding: .json, on: channel, id: ids.next(), countedBy: metrics.publishedServer, transportName: "server", trace: nil, excluding: 0,
            eventLoop: eventLoop)
            .map { $0.1 }
    }

    private func send(
        _ payload: [UInt8], encoding: PayloadEncoding?, on channel: ChannelName, id: String, countedBy counter: Prometheus.Counter,
        transportName: String, trace: TraceHeaders?, excluding connection: UInt64, eventLoop: any EventLoop
    ) -> EventLoopFuture<(Envelope, PublishReceipt)> {
        let started = NIODeadline.now()
        let envelope = Envelope(channel: channel, id: id, timestampMicros: unixMicrosNow(), payload: payload, encoding: encoding)
        let bytes = envelope.encoded()
        var buffer = allocator.buffer(capacity: bytes.count)
        buffer.writeBytes(bytes)
        let metrics = self.metrics
        let key = PublisherExclusions.key(channel: channel, id: id.utf8)
        if connection != 0 { exclusions.register(key, connection: connection) }
        let exclusions = connection != 0 ? self.exclusions : nil
        guard let tracing else {
            return broker.publish(buffer, on: channel, idempotencyKey: key, trace: nil, eventLoop: eventLoop).countingRefusals(metrics).forgettingExclusion(key, exclusions).map { receipt in
                metrics.publishDuration.record(Double((NIODeadline.now() - started).nanoseconds) / 1e9)
                if !receipt.duplicate { counter.increment() }
                return (envelope, receipt)
            }
        }
        let span = tracing.startSpan("publish \(channel.rawValue)", context: tracing.context(from: trace), ofKind: .producer)
        span.attributes["messaging.system"] = "storm"
        span.attributes["messaging.operation.type"] = "publish"
        span.attributes["messaging.destination.name"] = channel.rawValue
        span.attributes["messaging.message.id"] = id
        span.attributes["messaging.message.body.size"] = payload.count
        span.attributes["storm.transport"] = transportName
        let future = broker.publish(buffer, on: channel, idempotencyKey: key, trace: tracing.headers(continuing: span.context), eventLoop: eventLoop)
            .countingRefusals(metrics).forgettingExclusion(key, exclusions)
        future.whenComplete { result in
            switch result {
            case .success(let receipt):
                if receipt.offset > 0 { span.attributes["storm.offset"] = Int(clamping: receipt.offset) }
                if receipt.duplicate { span.attributes["storm.duplicate"] = true }
            case .failure(let error):
                span.recordError(error)
                span.setStatus(SpanStatus(code: .error, message: (error as? StormError)?.message))
            }
            span.end()
        }
        return future.map { receipt in
            metrics.publishDuration.record(Double((NIODeadline.now() - started).nanoseconds) / 1e9)
            if !receipt.duplicate { counter.increment() }
            return (envelope, receipt)
        }
    }
}

extension EventLoopFuture where Value == PublishReceipt {
    /// Counts a publish the broker refused for lack of room (`storm_publish_refused_total`).
    fileprivate func countingRefusals(_ metrics: GatewayMetrics) -> EventLoopFuture<PublishReceipt> {
        whenFailure { error in
            if (error as? StormError)?.code == .storageFull { metrics.publishRefusedStorageFull.increment() }
        }
        return self
    }

    /// A publish that failed or was a duplicate brings nothing back: its exclusion is dropped.
    fileprivate func forgettingExclusion(_ key: String, _ exclusions: PublisherExclusions?) -> EventLoopFuture<PublishReceipt> {
        guard let exclusions else { return self }
        whenComplete { result in
            switch result {
            case .success(let receipt): if receipt.duplicate { exclusions.forget(key) }
            case .failure: exclusions.forget(key)
            }
        }
        return self
    }
}

/// Gateway-wide flags that every connection reads.
package final class GatewayState: Sendable {
    package init() {}

    private let draining = ManagedAtomic(false)

    package var isDraining: Bool { draining.load(ordering: .relaxed) }
    package func beginDraining() { draining.store(true, ordering: .relaxed) }
}
