import NIOCore
import StormCore
import StormObservability

/// `--header-timeout` and `--idle-timeout` for an HTTP connection, first in its pipeline so that it
/// sees bytes before the HTTP decoder does.
///
/// A connection has `headerTimeout` to complete a request head from when it opens, and from the first
/// byte of each next request; between a response and that byte it may stay silent for `idleTimeout`.
/// When the header timeout passes after some bytes came, the connection is answered 408
/// `request_timeout` (written raw: no request is in flight for the HTTP encoder) and closed; a silent
/// one is closed without an answer. `HTTPRequestHandler` reports heads and responses, and stops the
/// clock when the connection becomes a WebSocket or an event stream (their ping and heartbeat govern
/// them from then on).
package final class RequestDeadlineHandler: ChannelInboundHandler, RemovableChannelHandler {
    package typealias InboundIn = ByteBuffer
    package typealias InboundOut = ByteBuffer
    package typealias OutboundOut = ByteBuffer

    private enum Phase {
        /// Waiting for a complete head; `sawBytes` once part of it arrived.
        case awaitingHead(sawBytes: Bool)
        /// A request is being read or answered: no clock.
        case inRequest
        /// Answered, kept alive, nothing of the next request yet.
        case idle
        /// Upgraded, streaming, or closing.
        case off
    }

    private let headerTimeout: TimeAmount
    private let idleTimeout: TimeAmount
    private let metrics: any HTTPServerMetrics
    private var phase = Phase.awaitingHead(sawBytes: false)
    private var timer: Scheduled<Void>?
    private var context: ChannelHandlerContext?

    package init(headerTimeout: TimeAmount, idleTimeout: TimeAmount, metrics: any HTTPServerMetrics) {
        self.headerTimeout = headerTimeout
        self.idleTimeout = idleTimeout
        self.metrics = metrics
    }

    package func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        arm(headerTimeout)
    }

    package func handlerRemoved(context: ChannelHandlerContext) {
        stop()
        self.context = nil
    }

    package func channelInactive(context: ChannelHandlerContext) {
        stop()
        context.fireChannelInactive()
    }

    package func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch phase {
        case .idle:
            phase = .awaitingHead(sawBytes: true)
            arm(headerTimeout)
        case .awaitingHead(sawBytes: false):
            phase = .awaitingHead(sawBytes: true)
        default:
            break
        }
        context.fireChannelRead(data)
    }

    /// A complete request head arrived.
    package func headReceived() {
        guard case .awaitingHead = phase else { return }
        phase = .inRequest
        cancelTimer()
    }

    /// The answer to the current request is written and the connection stays open for the next one.
    package func responseDone() {
        guard case .inRequest = phase else { return }
        phase = .idle
        arm(idleTimeout)
    }

    /// The connection is no longer plain HTTP (upgraded, streaming) or is closing: no more timeouts.
    package func stop() {
        phase = .off
        cancelTimer()
    }

    private func cancelTimer() {
        timer?.cancel()
        timer = nil
    }

    private func arm(_ amount: TimeAmount) {
        cancelTimer()
        guard let context else { return }
        let loop = context.eventLoop.assumeIsolated()
        timer = loop.scheduleTask(in: amount) { [self] in self.expired() }
    }

    private func expired() {
        timer = nil
        guard let context else { return }
        switch phase {
        case .awaitingHead(let sawBytes):
            phase = .off
            metrics.countTimeout(.header)
            guard sawBytes else {
                context.close(promise: nil)
                return
            }
            metrics.countClientError(.requestTimeout)
            let error = StormError(.requestTimeout, "the request head did not arrive within \(headerTimeout.nanoseconds / 1_000_000) ms (--header-timeout)")
            let body = error.jsonBody + "\n"
            let response = "HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n" + body
            let written = context.eventLoop.makePromise(of: Void.self)
            context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(string: response)), promise: written)
            written.futureResult.assumeIsolated().whenComplete { [context] _ in context.close(promise: nil) }
        case .idle:
            phase = .off
            metrics.countTimeout(.idle)
            context.close(promise: nil)
        case .inRequest, .off:
            break
        }
    }
}
