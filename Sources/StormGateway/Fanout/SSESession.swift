import Foundation
import Logging
import NIOCore
import NIOHTTP1
import StormCore
import StormObservability

/// One Server-Sent Events client (`GET /events?subject=…`).
///
/// The response head is sent only once every channel's deliveries have started, so a client that sees
/// the stream open misses nothing published afterwards; a failure before that is an ordinary HTTP error.
/// Events are pre-encoded HTTP chunks written below NIO's `HTTPResponseEncoder`, shared by every
/// subscriber like WebSocket frames.
package final class SSESession: ChannelInboundHandler, FanoutSubscriber {
    package typealias InboundIn = HTTPServerRequestPart
    package typealias OutboundOut = HTTPServerResponsePart

    package let transport = GatewayMetrics.Transport.sse

    private enum State {
        case starting
        case streaming
        case closed
    }

    private let gateway: GatewayContext
    private let hub: LoopHub
    private let requested: [ChannelName]
    private let keepAlive: Bool
    private let resume: ResumePoint?
    private var recovery = RecoveryGate()
    /// The history reads of this stream (its starting position, its recovery), cancelled when it closes.
    private var historyTicket: HistoryReadTicket?
    /// Per-channel event ids, for streams of several channels (`SSEPositions`); nil for one channel,
    /// whose shared chunks carry the offset as their id.
    private var positions: SSEPositions?
    private let channels: SessionChannels
    private var state = State.starting
    private var context: ChannelHandlerContext?
    private var writer: ChannelHandlerContext?
    private var flushPending = false
    /// Mirrors the channel's writability (outbound bytes under `--client-buffer`), kept up to date by
    /// `channelWritabilityChanged`, so the fan-out loop reads a stored flag instead of asking the channel
    /// for every message.
    private var writable = true
    private var lastHeartbeat = NIODeadline.now()
    private var counted = false

    /// Who opened the stream (authorized for every channel before the session was made).
    private let principal: Principal
    /// `storm.connection_id` in this connection's log lines (only the id is kept, see `WebSocketSession`).
    private let connectionID: ConnectionID

    /// The gateway's logger with this connection's id; made only when something is logged.
    private var logger: Logger {
        var logger = gateway.logger
        logger[metadataKey: "storm.connection_id"] = "\(connectionID)"
        return logger
    }

    package init(
        gateway: GatewayContext, hub: LoopHub, channels: [ChannelName], keepAlive: Bool, resume: ResumePoint? = nil, principal: Principal = .anonymous,
        connectionID: ConnectionID? = nil
    ) {
        self.connectionID = connectionID ?? gateway.connectionIDs.nextConnection()
        self.principal = principal
        self.gateway = gateway
        self.hub = hub
        self.requested = channels
        self.keepAlive = keepAlive
        self.resume = resume
        self.channels = SessionChannels(hub: hub, router: gateway.router, presence: gateway.presence, user: principal.user)
    }

    package func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        self.writer = try? context.pipeline.syncOperations.context(handlerType: HTTPResponseEncoder.self)
        hub.register(self)
        if gateway.logger.logLevel <= .debug {
            logger.debug("event stream opened", metadata: ["storm.remote": "\(context.channel.remoteAddress?.description ?? "?")", "storm.channels": "\(requested.count)"])
        }
        if principal.user != nil { channels.registerClient(session: self) }
        guard requested.count > 1 else { return subscribeAll() }
        if let resume {
            positions = SSEPositions(channels: requested, startingAt: resume)
            return subscribeAll()
        }
        // A new stream of several channels starts its positions at the broker's newest offset, read
        // before subscribing: resuming from there may replay a message published just before the
        // subscription started, but can never skip one delivered after it.
        let session = NIOLoopBound(self, eventLoop: context.eventLoop)
        let reader = gateway.historyReader
        let ticket = reader.makeTicket()
        historyTicket = ticket
        let first = requested[0]
        Task {
            let latest: Result<UInt64, StormError>
            do throws(StormError) {
                latest = .success(try await reader.read(first, after: UInt64(Int64.max), limit: 0, ticket: ticket).brokerLatestOffset)
            } catch {
                latest = .failure(error)
            }
            session.eventLoop.execute {
                let session = session.value
                switch latest {
                case .success(let offset):
                    session.positions = SSEPositions(channels: session.requested, startingAt: ResumePoint(offset: offset))
                    session.subscribeAll()
                case .failure(let error):
                    session.fail(error)
                }
            }
        }
    }

    private func subscribeAll() {
        guard context != nil, state == .starting else { return }
        if resume != nil { recovery.begin(requested) }
        channels.subscribe(requested, session: self).assumeIsolated().whenComplete { [self] outcome in
            switch outcome {
            case .success:
                guard let resume = self.resume else { return self.startStreaming() }
                self.recover(from: resume)
            case .failure(let error):
                self.fail(error)
            }
        }
    }

    /// `Last-Event-ID` (or `?since=`): replays what the client missed, then streams live messages; the
    /// event ids are offsets, shared by every channel, so one id resumes all of the stream's channels.
    ///
    /// When the history cannot be read (too many reads in flight, the deadline passed, the stream
    /// unavailable), the stream opens, says why in a comment and ends at once: EventSource reconnects
    /// after `retry` with the same Last-Event-ID, so nothing is skipped, where streaming live messages
    /// would silently lose the missed ones.
    private func recover(from resume: ResumePoint) {
        guard let context else { return }
        let session = NIOLoopBound(self, eventLoop: context.eventLoop)
        let channels = requested
        let reader = gateway.historyReader
        let ticket = historyTicket ?? reader.makeTicket()
        historyTicket = ticket
        let allocator = context.channel.allocator
        Task {
            let results = await Recovery.fetch(channels, after: resume, reader: reader, ticket: ticket, allocator: allocator)
            session.eventLoop.execute {
                let session = session.value
                session.startStreaming()
                guard session.state == .streaming, let writer = session.writer else { return }
                if let failure = results.lazy.compactMap(\.failure).first(where: { $0.code == .brokerUnavailable }) {
                    writer.write(NIOAny(SSEWire.commentChunk("recovery failed: \(failure.code.rawValue): \(failure.message); reconnect with the same Last-Event-ID", allocator: session.allocator)), promise: nil)
                    return session.closeForShutdown()
                }
                // Several channels: their recovered messages interleave by offset, as they were published.
                var messages: [Delivery] = []
                for result in results { messages += session.recovery.finish(result, resumeFrom: resume.offset(for: result.channel)) }
                messages.sort { $0.offset < $1.offset }
                for message in messages { writer.write(NIOAny(session.chunk(message)), promise: nil) }
                writer.flush()
            }
        }
    }

    private func startStreaming() {
        guard state == .starting, let context, let writer else { return }
        state = .streaming
        counted = true
        gateway.metrics.sseConnections.increment()
        gateway.metrics.sseAccepted.increment()
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "text/event-stream; charset=utf-8")
        headers.add(name: "Cache-Control", value: "no-cache")
        headers.add(name: "Transfer-Encoding", value: "chunked")
        headers.add(name: "X-Accel-Buffering", value: "no")
        context.write(Self.wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))), promise: nil)
        // `retry` tells EventSource how soon to reconnect; the comment shows the stream is live.
        var opening = ByteBuffer(string: "retry: 2000\n: connected\n\n")
        var chunk = ByteBuffer(string: String(opening.readableBytes, radix: 16) + "\r\n")
        chunk.writeBuffer(&opening)
        chunk.writeString("\r\n")
        writer.writeAndFlush(NIOAny(chunk), promise: nil)
        lastHeartbeat = .now()
        dropRequestHandlers(context.pipeline)
    }

    /// Once the head is out, the connection only streams: nothing the client sends can be answered any
    /// more, so NIO's request decoder, pipelining and error handlers leave the pipeline. That is about
    /// 1.5 KB of each idle SSE connection (the parser's state and buffers), and reads flow again, so a
    /// client that hangs up is noticed at once.
    private func dropRequestHandlers(_ pipeline: ChannelPipeline) {
        let sync = pipeline.syncOperations
        if let decoder = try? sync.context(handlerType: ByteToMessageHandler<HTTPRequestDecoder>.self) {
            sync.removeHandler(context: decoder, promise: nil)
        }
        if let pipelining = try? sync.handler(type: HTTPServerPipelineHandler.self) {
            sync.removeHandler(pipelining, promise: nil)
        }
        if let errors = try? sync.handler(type: HTTPServerProtocolErrorHandler.self) {
            sync.removeHandler(errors, promise: nil)
        }
        if let upgrade = try? sync.handler(type: HTTPServerUpgradeHandler.self) {
            sync.removeHandler(upgrade, promise: nil)
        }
    }

    private func fail(_ error: any Error) {
        guard state == .starting, let context else { return }
        state = .closed
        let stormError = (error as? StormError) ?? StormError(.internalError, "\(error)")
        gateway.metrics.countClientError(stormError.code)
        HTTPResponder.respond(context: context, error: stormError, keepAlive: false)
        channels.removeAll(session: self)
    }

    package func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // The request's remaining parts, anything pipelined after it, and (once the request handlers
        // left) raw bytes are all ignored: this connection now only streams.
    }

    package func channelWritabilityChanged(context: ChannelHandlerContext) {
        writable = context.channel.isWritable
        context.fireChannelWritabilityChanged()
    }

    package func channelInactive(context: ChannelHandlerContext) {
        tearDown()
        context.fireChannelInactive()
    }

    package func handlerRemoved(context: ChannelHandlerContext) {
        tearDown()
    }

    private func tearDown() {
        guard context != nil else { return }
        if let historyTicket { gateway.historyReader.cancel(historyTicket) }
        historyTicket = nil
        state = .closed
        channels.removeAll(session: self)
        hub.unregister(self)
        if counted { gateway.metrics.sseConnections.decrement() }
        counted = false
        if gateway.logger.logLevel <= .debug { logger.debug("event stream closed") }
        context = nil
        writer = nil
    }

    // MARK: Fan-out

    package func enqueue(_ run: DeliveryRun) -> EnqueueOutcome {
        guard let context, let writer else { return .closed }
        let admitted = recovery.admit(run)
        if admitted?.isEmpty == true { return .skipped }
        switch state {
        case .starting: return .skipped  // the head is not out yet; nothing published before it is owed
        case .closed: return .closed
        case .streaming: break
        }
        guard writable else {
            // As for WebSocket's 4008: nothing more from the fan-out, then the end of the stream after what
            // the socket holds, so a client that reads again reconnects with Last-Event-ID.
            gateway.metrics.slowSSEDisconnects.increment()
            logger.info("disconnecting slow SSE client", metadata: ["storm.remote": "\(context.channel.remoteAddress?.description ?? "?")"])
            closeForShutdown()
            return .closed
        }
        if positions != nil {
            for delivery in admitted ?? run.deliveries { writer.write(NIOAny(chunk(delivery)), promise: nil) }
        } else if let admitted {
            for delivery in admitted { writer.write(NIOAny(delivery.sseChunk), promise: nil) }
        } else {
            writer.write(NIOAny(run.sseChunks), promise: nil)
        }
        let flushDue = !flushPending
        flushPending = true
        return .queued(flushDue: flushDue, messages: admitted?.count ?? run.count)
    }

    package func flush() {
        guard flushPending else { return }
        flushPending = false
        writer?.flush()
    }

    package func tick(now: NIODeadline) {
        if state == .streaming, let user = principal.user, let writer {
            // The stream ends when its token expires or its user is disabled; EventSource then reconnects
            // with whatever token the page gives it, and a stale one gets 401.
            let expired = (principal.expires ?? .infinity) <= Date().timeIntervalSince1970
            if expired || gateway.auth.isDisabled(user) {
                if expired { gateway.auth.countExpiredConnection() }
                writer.write(NIOAny(SSEWire.commentChunk(expired ? "token expired" : "user disabled", allocator: allocator)), promise: nil)
                return closeForShutdown()
            }
        }
        guard state == .streaming, let writer, now - lastHeartbeat >= gateway.limits.sseHeartbeatInterval else { return }
        lastHeartbeat = now
        writer.writeAndFlush(NIOAny(SSEWire.commentChunk("heartbeat", allocator: allocator)), promise: nil)
    }

    package func closeForShutdown() {
        guard let context, let writer else { return }
        guard state == .streaming else {
            state = .closed
            return context.close(promise: nil)
        }
        state = .closed
        let written = context.eventLoop.makePromise(of: Void.self)
        writer.writeAndFlush(NIOAny(SSEWire.terminator(allocator: allocator)), promise: written)
        written.futureResult.assumeIsolated().whenComplete { [context] _ in context.close(promise: nil) }
        // A reader that stopped never lets the end of the stream out: cut the connection anyway.
        context.eventLoop.assumeIsolated().scheduleTask(in: gateway.limits.closeGrace) { [context] in
            context.close(promise: nil)
        }
    }

    /// The chunk to write for `delivery`: the shared one, or one with this stream's positions as its id.
    private func chunk(_ delivery: Delivery) -> ByteBuffer {
        guard var positions else { return delivery.sseChunk }
        let id = ByteBuffer(string: positions.advance(delivery))
        self.positions = positions
        return SSEWire.eventChunk(id: id.readableBytesView, envelope: delivery.envelope, allocator: allocator)
    }

    private var allocator: ByteBufferAllocator { context?.channel.allocator ?? ByteBufferAllocator() }
}
