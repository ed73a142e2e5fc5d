import NIOCore
import StormBroker
import StormCore
import StormObservability

extension GatewayContext {
    /// A client's publish, through the publish hook when one is configured, then `Publisher.publish`
    /// (the one publish path, with its checks and metrics). Without a publish hook this is
    /// `Publisher.publish` itself; with one, the hook is asked off the event loop first, and the message
    /// it answers replaces the client's (checked for size again).
    package func publish(
        _ payload: [UInt8], encoding: PayloadEncoding?, on channel: ChannelName, idempotencyKey: String?, via transport: GatewayMetrics.Transport,
        trace: TraceHeaders?, traceparent: String? = nil, excluding connection: UInt64 = 0, principal: Principal, client: String, eventLoop: any EventLoop
    ) -> EventLoopFuture<(Envelope, PublishReceipt)> {
        guard hooks.isEnabled(.publish) else {
            return publisher.publish(
                payload, encoding: encoding, on: channel, idempotencyKey: idempotencyKey, via: transport, trace: trace, excluding: connection, eventLoop: eventLoop)
        }
        if state.isDraining {
            return eventLoop.makeFailedFuture(StormError(.shuttingDown, "the gateway is shutting down; publish to another gateway"))
        }
        do {
            try publisher.checkSize(payload.count)
        } catch {
            return eventLoop.makeFailedFuture(error)
        }
        let request = HookRequest(
            kind: .publish, client: client, transport: transport, principal: principal, channel: channel, payload: payload, encoding: encoding,
            traceparent: trace?.traceparent ?? traceparent)
        let publisher = self.publisher
        return hooks.ask(.publish, request, eventLoop: eventLoop).flatMap { changes in
            var payload = payload
            var encoding = encoding
            if let replacement = changes.data {
                do throws(StormError) {
                    (payload, encoding) = try PublishFields.payload(replacement)
                } catch {
                    return eventLoop.makeFailedFuture(StormError(.hookUnavailable, "the publish hook answered a replacement that is not valid: \(error.message)"))
                }
            }
            return publisher.publish(
                payload, encoding: encoding, on: channel, idempotencyKey: idempotencyKey, via: transport, trace: trace, excluding: connection, eventLoop: eventLoop)
        }
    }
}
