import Foundation
import Logging
import NIOCore
import NIOWebSocket
import StormBroker
import StormCore
import StormObservability

/// One WebSocket client: RFC 6455 framing rules, the JSON request protocol of docs/protocol.md, and
/// fan-out writes.
///
/// Frames are decoded by NIO's `WebSocketFrameDecoder`. Everything this handler sends is pre-encoded
/// frame bytes written through the context of NIO's `WebSocketFrameEncoder`, that is, below it: fan-out
/// frames are encoded once per message and shared by every subscriber, which the encoder (one header
/// buffer per frame per connection) would undo.
package final class WebSocketSession: ChannelInboundHandler, FanoutSubscriber {
    package typealias InboundIn = WebSocketFrame

    package let transport = GatewayMetrics.Transport.webSocket

    private let gateway: GatewayContext
    private let hub: LoopHub
    private let channels: SessionChannels
    private var context: ChannelHandlerContext?
    /// Where pre-encoded frames are written: the encoder's context, so they skip the encoder.
    private var writer: ChannelHandlerContext?
    private var closing = false
    private var flushPending = false
    /// Mirrors the channel's writability (outbound bytes under `--client-buffer`), kept up to date by
    /// `channelWritabilityChanged`, so the fan-out loop reads a stored flag instead of asking the channel
    /// for every message.
    private var writable = true
    private var lastInbound = NIODeadline.now()
    private var pingSentAt: NIODeadline?
    private var recovery = RecoveryGate()
    /// The recoveries under way, cancelled when the connection goes.
    private var recoveryTickets: [HistoryReadTicket] = []
    private var publishRate: PublishRateLimiter
    /// Who the upgrade request authenticated as; replaced (same user) by a `refresh` op.
    private var principal: Principal
    /// `storm.connection_id` in this connection's log lines. Only the id is kept (a short string is stored
    /// inline): a `Logger` per connection would cost a few hundred bytes of every idle connection.
    private let connectionID: ConnectionID

    /// The gateway's logger with this connection's id; made only when something is logged.
    private var logger: Logger {
        var logger = gateway.logger
        logger[metadataKey: "storm.connection_id"] = "\(connectionID)"
        return logger
    }

    /// Channels to subscribe to at connect time beyond the token's `storm.channels`: the connect hook's
    /// answer (`ServerSubscriptions`). Emptied once subscribed.
    private var connectChannels: [String]

    /// `connectChannels`: what the connect hook asks to subscribe the connection to, besides the token's
    /// `storm.channels`; both are checked like a subscribe request.
    package init(gateway: GatewayContext, hub: LoopHub, principal: Principal = .anonymous, connectionID: ConnectionID? = nil, connectChannels: [String] = []) {
        self.connectChannels = connectChannels
        self.connectionID = connectionID ?? gateway.connectionIDs.nextConnection()
        self.gateway = gateway
        self.hub = hub
        self.principal = principal
        self.publishRate = PublishRateLimiter(rate: gateway.limits.clientPublishRate)
        self.channels = SessionChannels(hub: hub, router: gateway.router, presence: gateway.presence, user: principal.user)
    }

    // MARK: Lifecycle

    package func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        self.writer = try? context.pipeline.syncOperations.context(handlerType: WebSocketFrameEncoder.self)
        hub.register(self)
        gateway.metrics.webSocketConnections.increment()
        gateway.metrics.webSocketAccepted.increment()
        if gateway.logger.logLevel <= .debug {
            logger.debug("websocket connected", metadata: ["storm.remote": "\(context.channel.remoteAddress?.description ?? "?")"])
        }
        // Known to presence under its user from the start, so disconnecting the user reaches it.
        if principal.user != nil { channels.registerClient(session: self) }
        if !principal.channels.isEmpty || !connectChannels.isEmpty {
            // After the upgrade's own work: the first frames follow the 101 answer.
            context.eventLoop.assumeIsolated().execute { self.subscribeAtConnect() }
        }
    }

    /// Server-side subscriptions (`storm.channels` and the connect hook): refused channels are told as
    /// error frames with `"id":null`; the others are subscribed and confirmed with
    /// `{"type":"subscribed","channels":[…],"epoch":"E"}` once deliveries started.
    private func subscribeAtConnect() {
        guard !closing, context != nil else { return }
        let auth = gateway.auth
        let principal = self.principal
        let plan = ServerSubscriptions.plan(claimed: principal.channels, added: connectChannels, limit: gateway.limits.maxChannelsPerConnection) {
            channel throws(StormError) in try auth.authorize(.subscribe, channel, principal)
        }
        connectChannels = []
        for refusal in plan.refused { replyError(id: nil, refusal.error) }
        guard !plan.allowed.isEmpty else { return }
        channels.subscribe(plan.allowed, session: self).assumeIsolated().whenComplete { [self] outcome in
            switch outcome {
            case .success:
                let list = plan.allowed.map { JSONWriter.quoted($0.rawValue) }.joined(separator: ",")
                let json = ByteBuffer(string: "{\"type\":\"subscribed\",\"channels\":[\(list)],\"epoch\":\(JSONWriter.quoted(self.gateway.broker.epoch))}")
                self.send(WebSocketWire.textFrame(payload: json, allocator: self.allocator))
            case .failure(let error):
                self.replyError(id: nil, error)
            }
        }
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
        guard self.context != nil else { return }
        for ticket in recoveryTickets { gateway.historyReader.cancel(ticket) }
        recoveryTickets = []
        channels.removeAll(session: self)
        hub.unregister(self)
        gateway.metrics.webSocketConnections.decrement()
        if gateway.logger.logLevel <= .debug { logger.debug("websocket closed") }
        self.context = nil
        self.writer = nil
    }

    package func errorCaught(context: ChannelHandlerContext, error: any Error) {
        switch error {
        case let violation as WebSocketViolation:
            close(code: violation.code, reason: violation.reason)
        case let refused as NIOWebSocketFrameAggregator.Error:
            let violation = ClientFrameRules.violation(
                for: refused, maxMessageSize: gateway.limits.maxWebSocketMessageSize, maxFragments: ClientFrameRules.maxFragments)
            close(code: violation.code, reason: violation.reason)
        case NIOWebSocketError.invalidFrameLength:
            close(code: 1009, reason: "frame larger than \(gateway.limits.maxWebSocketMessageSize) bytes")
        case let error as NIOWebSocketError:
            close(code: 1002, reason: "protocol error: \(error)")
        default:
            logger.debug("websocket connection error", metadata: ["error": "\(error)"])
            context.close(promise: nil)
        }
    }

    // MARK: Fan-out

    package func enqueue(_ run: DeliveryRun) -> EnqueueOutcome {
        guard !closing, let context, let writer else { return .closed }
        var admitted = recovery.admit(run)
        if run.hasExclusions { admitted = Self.excluding(connectionID.number, from: admitted, of: run) }
        if admitted?.isEmpty == true { return .skipped }
        guard writable else {
            disconnectSlowClient(context: context)
            return .closed
        }
        if let admitted {
            for delivery in admitted { writer.write(NIOAny(delivery.webSocketFrame), promise: nil) }
        } else {
            writer.write(NIOAny(run.webSocketFrames), promise: nil)
        }
        let flushDue = !flushPending
        flushPending = true
        return .queued(flushDue: flushDue, messages: admitted?.count ?? run.count)
    }

    /// The deliveries of `run` (or of what recovery admitted) without those this connection published
    /// with `exclude_self`; `admitted` as it was when the run holds none of them.
    private static func excluding(_ connection: UInt64, from admitted: [Delivery]?, of run: DeliveryRun) -> [Delivery]? {
        let base = admitted ?? run.deliveries
        guard base.contains(where: { $0.excludedConnection == connection }) else { return admitted }
        return base.filter { $0.excludedConnection != connection }
    }

    package func flush() {
        guard flushPending else { return }
        flushPending = false
        writer?.flush()
    }

    package func tick(now: NIODeadline) {
        guard !closing else { return }
        if let user = principal.user {
            if let expires = principal.expires, expires <= Date().timeIntervalSince1970 {
                gateway.auth.countExpiredConnection()
                return close(code: 4001, reason: "token expired: send {\"op\":\"refresh\",\"token\":…} before it expires")
            }
            if gateway.auth.isDisabled(user) {
                return close(code: 4001, reason: "user '\(user.prefix(64))' is disabled")
            }
        }
        let interval = gateway.limits.webSocketPingInterval
        // Dropped only once a ping went unanswered: the tick runs once a second, so with a short
        // interval (1 s) a late tick could otherwise see twice the interval of silence before it ever
        // pinged, and close a client that answers every ping.
        if now - lastInbound > interval * 2, pingSentAt != nil {
            close(code: 1001, reason: "no traffic for \(interval.nanoseconds * 2 / 1_000_000_000) s")
        } else if now - lastInbound > interval, pingSentAt == nil {
            pingSentAt = now
            send(WebSocketWire.frame(opcode: 0x9, payload: ByteBuffer(), allocator: allocator))
        }
    }

    package func closeForShutdown() {
        // Presence's disconnect requests arrive here too: a disabled user hears why (4001), not 1001.
        if let user = principal.user, gateway.auth.isDisabled(user) {
            return close(code: 4001, reason: "user '\(user.prefix(64))' is disabled")
        }
        close(code: 1001, reason: "gateway shutting down")
    }

    /// A disconnect request (`stormctl disconnect --reason`): 1001 with the request's reason, so the
    /// client learns why; a disabled user still hears 4001.
    package func closeOnRequest(reason: String?) {
        if let user = principal.user, gateway.auth.isDisabled(user) {
            return close(code: 4001, reason: "user '\(user.prefix(64))' is disabled")
        }
        close(code: 1001, reason: reason ?? "disconnected on request")
    }

    /// Ends a client that let `--client-buffer` bytes pile up (docs/protocol.md, `slow_client`): it gets
    /// nothing more from the fan-out (the hub forgets it at `.closed`), then a 4008 close frame after
    /// what the socket already holds, and the TCP connection is cut once that frame is out or after the
    /// close grace, whichever comes first. A client that reads again therefore learns why (4008) and
    /// reconnects with its offset; one that never reads costs its buffer for the grace at most.
    private func disconnectSlowClient(context: ChannelHandlerContext) {
        gateway.metrics.slowWebSocketDisconnects.increment()
        logger.info(
            "disconnecting slow websocket client",
            metadata: ["storm.remote": "\(context.channel.remoteAddress?.description ?? "?")", "storm.client_buffer": "\(gateway.limits.clientBufferBytes)"])
        close(code: 4008, reason: "slow client: more than \(gateway.limits.clientBufferBytes) bytes were waiting; reconnect with your offset")
    }

    // MARK: Inbound frames

    package func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = Self.unwrapInboundIn(data)
        lastInbound = .now()
        pingSentAt = nil
        if closing {
            // After our close frame only the peer's close matters (RFC 6455 section 5.5.1).
            if frame.opcode == .connectionClose { context.close(promise: nil) }
            return
        }
        // Masks, reserved bits, opcodes and fragments were checked and joined below this handler
        // (`ClientFrameCheck`, NIO's `NIOWebSocketFrameAggregator`): here every frame is a whole message
        // or a control frame.
        switch frame.opcode {
        case .ping:
            send(WebSocketWire.frame(opcode: 0xA, payload: frame.unmaskedData, allocator: allocator))
        case .pong:
            break
        case .connectionClose:
            answerClose(frame.unmaskedData)
        case .text:
            handleMessage(frame.unmaskedData)
        default:
            close(code: 1002, reason: "unexpected opcode \(frame.opcode)")
        }
    }

    private func answerClose(_ payload: ByteBuffer) {
        var payload = payload
        guard payload.readableBytes != 0 else {
            return close(code: 1000, reason: "")
        }
        guard let code = payload.readInteger(as: UInt16.self) else {
            return close(code: 1002, reason: "close frame with a 1-byte payload")
        }
        guard Self.isValidReceivedCloseCode(code) else {
            return close(code: 1002, reason: "invalid close code \(code)")
        }
        guard String(validating: payload.readableBytesView, as: UTF8.self) != nil else {
            return close(code: 1007, reason: "close reason is not valid UTF-8")
        }
        close(code: code, reason: "")
    }

    /// Codes a peer may send (RFC 6455 section 7.4.1 and the IANA registry); 1005, 1006 and 1015 are
    /// reserved for reporting and must never appear on the wire.
    package static func isValidReceivedCloseCode(_ code: UInt16) -> Bool {
        switch code {
        case 1000...1003, 1007...1014, 3000...4999: return true
        default: return false
        }
    }

    // MARK: Requests

    private func handleMessage(_ message: ByteBuffer) {
        let bytes = Array(message.readableBytesView)
        guard String(validating: bytes, as: UTF8.self) != nil else {
            return close(code: 1007, reason: "text message is not valid UTF-8")
        }
        let members: [String: [UInt8]]
        do {
            members = try JSONScanner.objectMembers(bytes)
        } catch {
            return replyError(id: nil, StormError(.badRequest, "request is not a JSON object: \(error)"))
        }
        let id = Self.requestID(members["id"])
        guard let rawOp = members["op"], let op = try? JSONScanner.string(rawOp) else {
            return replyError(id: id, StormError(.badRequest, "request has no 'op' string (expected subscribe, unsubscribe, publish or ping)"))
        }
        do {
            switch op {
            case "subscribe": try subscribe(id: id, members: members)
            case "unsubscribe": try unsubscribe(id: id, members: members)
            case "publish": try publish(id: id, members: members)
            case "ping": reply(id: id, result: #"{"pong":true}"#)
            case "refresh": try refresh(id: id, members: members)
            default:
                throw StormError(.badRequest, "unknown op '\(op.prefix(32))' (expected subscribe, unsubscribe, publish, refresh or ping)")
            }
        } catch {
            replyError(id: id, error)
        }
    }

    /// A request id is echoed as sent when it is a number or a string, else as `null`.
    private static func requestID(_ raw: [UInt8]?) -> [UInt8]? {
        guard let raw, let first = raw.first, raw.count <= 128 else { return nil }
        if first == UInt8(ascii: "\"") || first == UInt8(ascii: "-") || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(first) {
            return raw
        }
        return nil
    }

    private func channelNames(_ members: [String: [UInt8]]) throws(StormError) -> [ChannelName] {
        var names: [String] = []
        if let raw = members["channel"] {
            guard let name = try? JSONScanner.string(raw) else { throw StormError(.badRequest, "'channel' must be a string") }
            names.append(name)
        }
        if let raw = members["channels"] {
            guard let list = try? JSONScanner.stringArray(raw) else {
                throw StormError(.badRequest, "'channels' must be an array of strings")
            }
            names += list
        }
        guard !names.isEmpty else { throw StormError(.badRequest, "request names no 'channel' or 'channels'") }
        return try gateway.channels(from: names)
    }

    /// `{"op":"refresh","token":"…"}`: a new token for the same user, so the connection outlives the old
    /// token's `exp`. A refused token leaves the connection as it was (it still closes at the old `exp`).
    private func refresh(id: [UInt8]?, members: [String: [UInt8]]) throws(StormError) {
        guard let raw = members["token"], let token = try? JSONScanner.string(raw) else {
            throw StormError(.badRequest, "refresh needs a 'token' string")
        }
        guard principal.user != nil else {
            throw StormError(.badRequest, "this connection is anonymous: there is no token to refresh; connect with one")
        }
        switch gateway.auth.refresh(principal, with: token) {
        case .success(let next):
            principal = next
            reply(id: id, result: "{\"user\":\(JSONWriter.quoted(next.user ?? "")),\"exp\":\(TokenClaims.wholeSeconds(next.expires ?? 0))}")
        case .failure(let error):
            throw error
        }
    }

    private func subscribe(id: [UInt8]?, members: [String: [UInt8]]) throws(StormError) {
        let requested = try channelNames(members)
        for channel in requested { try gateway.auth.authorize(.subscribe, channel, principal) }
        let newCount = requested.filter { !channels.contains($0) }.count
        guard channels.count + newCount <= gateway.limits.maxChannelsPerConnection else {
            throw StormError(.tooManyChannels, "this connection holds \(channels.count) channels; \(newCount) more would pass the limit of \(gateway.limits.maxChannelsPerConnection) (--max-channels-per-connection)")
        }
        // `"since":"latest"`: the newest stored message first, then live (`Recovery.fetchLatest`).
        let latest = members["since"] == Recovery.latestToken
        let resume = latest ? nil : try members["since"].map { raw throws(StormError) in try ResumePoint.parseWebSocket(raw, channels: requested) }
        guard gateway.hooks.isEnabled(.subscribe), let context else {
            return startSubscription(id: id, requested: requested, latest: latest, resume: resume)
        }
        // The subscribe hook is asked about each new channel, off the loop; one refusal refuses the request.
        let client = "\(connectionID)"
        let asks = requested.filter { !channels.contains($0) }.map { channel in
            gateway.hooks.ask(
                .subscribe, HookRequest(kind: .subscribe, client: client, transport: .webSocket, principal: principal, channel: channel), eventLoop: context.eventLoop)
        }
        EventLoopFuture.whenAllSucceed(asks, on: context.eventLoop).assumeIsolated().whenComplete { [self] outcome in
            guard !self.closing, self.context != nil else { return }
            switch outcome {
            case .success: self.startSubscription(id: id, requested: requested, latest: latest, resume: resume)
            case .failure(let error): self.replyError(id: id, error)
            }
        }
    }

    /// Subscribes to `requested` once every check passed; replies when deliveries started (after the
    /// replay with `resume` or `latest`).
    private func startSubscription(id: [UInt8]?, requested: [ChannelName], latest: Bool, resume: ResumePoint?) {
        let fresh = requested.filter { !channels.contains($0) }
        guard channels.count + fresh.count <= gateway.limits.maxChannelsPerConnection else {
            return replyError(
                id: id,
                StormError(.tooManyChannels, "this connection holds \(channels.count) channels; \(fresh.count) more would pass the limit of \(gateway.limits.maxChannelsPerConnection) (--max-channels-per-connection)"))
        }
        if resume != nil || latest { recovery.begin(fresh) }
        channels.subscribe(requested, session: self).assumeIsolated().whenComplete { [self] outcome in
            switch outcome {
            case .success:
                if latest { return self.recoverLatest(fresh, requested: requested, requestID: id) }
                guard let resume else {
                    return self.reply(id: id, result: Self.subscribeResult(requested, epoch: self.gateway.broker.epoch, recovered: nil))
                }
                self.recover(fresh, requested: requested, from: resume, requestID: id)
            case .failure(let error):
                for channel in fresh { self.recovery.abandon(channel) }
                self.replyError(id: id, error)
            }
        }
    }

    /// Replays what the client missed on `fresh` channels, then lets live messages through.
    private func recover(_ fresh: [ChannelName], requested: [ChannelName], from resume: ResumePoint, requestID id: [UInt8]?) {
        guard let context else { return }
        let session = NIOLoopBound(self, eventLoop: context.eventLoop)
        let reader = gateway.historyReader
        let ticket = reader.makeTicket()
        recoveryTickets.append(ticket)
        let allocator = context.channel.allocator
        Task {
            let results = await Recovery.fetch(fresh, after: resume, reader: reader, ticket: ticket, allocator: allocator)
            session.eventLoop.execute {
                session.value.finishRecovery(results, requested: requested, from: resume, requestID: id, ticket: ticket)
            }
        }
    }

    /// Writes each `fresh` channel's newest stored message, then lets live messages through.
    private func recoverLatest(_ fresh: [ChannelName], requested: [ChannelName], requestID id: [UInt8]?) {
        guard let context else { return }
        let session = NIOLoopBound(self, eventLoop: context.eventLoop)
        let reader = gateway.historyReader
        let ticket = reader.makeTicket()
        recoveryTickets.append(ticket)
        let allocator = context.channel.allocator
        Task {
            let (results, resume) = await Recovery.fetchLatest(fresh, reader: reader, ticket: ticket, allocator: allocator)
            session.eventLoop.execute {
                session.value.finishRecovery(results, requested: requested, from: resume, requestID: id, ticket: ticket)
            }
        }
    }

    private func finishRecovery(_ results: [RecoveredChannel], requested: [ChannelName], from resume: ResumePoint, requestID id: [UInt8]?, ticket: HistoryReadTicket) {
        recoveryTickets.removeAll { $0 === ticket }
        let recovered = results.allSatisfy(\.recovered)
        let failure = results.lazy.compactMap(\.failure).first
        reply(id: id, result: Self.subscribeResult(requested, epoch: gateway.broker.epoch, recovered: recovered, failure: failure))
        guard !closing, let writer else { return }
        for result in results {
            let messages = recovery.finish(result, resumeFrom: resume.offset(for: result.channel))
            guard channels.contains(result.channel) else { continue }  // unsubscribed meanwhile
            for message in messages where message.excludedConnection != connectionID.number {
                writer.write(NIOAny(message.webSocketFrame), promise: nil)
            }
        }
        flushPending = false
        writer.flush()
    }

    /// `failure`: why the history could not be read, as `"recovery_error":{"code":…,"message":…}`
    /// beside `"recovered":false`.
    private static func subscribeResult(_ channels: [ChannelName], epoch: String, recovered: Bool?, failure: StormError? = nil) -> String {
        var result = "{\"channels\":[" + channels.map { JSONWriter.quoted($0.rawValue) }.joined(separator: ",") + "],\"epoch\":" + JSONWriter.quoted(epoch)
        if let recovered { result += ",\"recovered\":\(recovered)" }
        if let failure {
            result += ",\"recovery_error\":{\"code\":" + JSONWriter.quoted(failure.code.rawValue) + ",\"message\":" + JSONWriter.quoted(failure.message) + "}"
        }
        return result + "}"
    }

    private func unsubscribe(id: [UInt8]?, members: [String: [UInt8]]) throws(StormError) {
        let requested = try channelNames(members)
        for channel in requested {
            channels.unsubscribe(channel, session: self)
            recovery.abandon(channel)
        }
        reply(id: id, result: Self.channelList(requested))
    }

    private func publish(id: [UInt8]?, members: [String: [UInt8]]) throws(StormError) {
        guard let rawChannel = members["channel"], let name = try? JSONScanner.string(rawChannel) else {
            throw StormError(.badRequest, "publish needs a 'channel' string")
        }
        let channel = try ChannelName(validating: name)
        try gateway.auth.authorize(.publish, channel, principal)
        guard publishRate.admit() else {
            gateway.metrics.rateLimitedWebSocket.increment()
            throw StormError(.rateLimited, "this connection publishes faster than \(publishRate.rate) messages a second (--client-publish-rate): this publish was refused; slow down and retry")
        }
        let (payload, encoding) = try PublishFields.payload(members)
        try gateway.publisher.checkSize(payload.count)
        let key = try PublishFields.idempotencyKey(members)
        // Optional W3C trace context, like POST /publish's traceparent header: read only when tracing, and
        // ignored when malformed (as W3C Trace Context asks of an invalid traceparent).
        var trace: TraceHeaders?
        if gateway.publisher.tracing != nil, let rawParent = members["traceparent"] {
            trace = TraceHeaders(
                traceparent: try? JSONScanner.string(rawParent), tracestate: members["tracestate"].flatMap { try? JSONScanner.string($0) })
        }
        // `exclude_self`: not delivered back to this connection (only worth recording when it is
        // subscribed to the channel: otherwise nothing would come back to match the entry).
        var excluded: UInt64 = 0
        if let rawExclude = members["exclude_self"] {
            guard rawExclude == Array("true".utf8) || rawExclude == Array("false".utf8) else {
                throw StormError(.badRequest, "'exclude_self' must be true or false")
            }
            if rawExclude.first == UInt8(ascii: "t"), channels.contains(channel) { excluded = connectionID.number }
        }
        guard let context else { return }
        gateway.publish(
            payload, encoding: encoding, on: channel, idempotencyKey: key, via: .webSocket, trace: trace,
            traceparent: members["traceparent"].flatMap { try? JSONScanner.string($0) }, excluding: excluded, principal: principal, client: "\(connectionID)",
            eventLoop: context.eventLoop)
            .assumeIsolated().whenComplete { [self] outcome in
                switch outcome {
                case .success(let (envelope, receipt)): self.reply(id: id, result: Self.publishResult(envelope, receipt))
                case .failure(let error): self.replyError(id: id, error)
                }
            }
    }

    package static func publishResult(_ envelope: Envelope, _ receipt: PublishReceipt) -> String {
        var result = "{\"id\":\(JSONWriter.quoted(envelope.id)),\"channel\":\(JSONWriter.quoted(envelope.channel.rawValue)),\"ts\":\(Envelope.formatTimestamp(envelope.timestampMicros))"
        if receipt.offset > 0 { result += ",\"offset\":\(receipt.offset)" }
        if receipt.duplicate { result += ",\"duplicate\":true" }
        return result + "}"
    }

    private static func channelList(_ channels: [ChannelName]) -> String {
        "{\"channels\":[" + channels.map { JSONWriter.quoted($0.rawValue) }.joined(separator: ",") + "]}"
    }

    // MARK: Writing

    private var allocator: ByteBufferAllocator { context?.channel.allocator ?? ByteBufferAllocator() }

    private func reply(id: [UInt8]?, result: String) {
        var json = ByteBuffer(string: "{\"type\":\"reply\",\"id\":")
        json.writeBytes(id ?? Array("null".utf8))
        json.writeString(",\"result\":\(result)}")
        send(WebSocketWire.textFrame(payload: json, allocator: allocator))
    }

    private func replyError(id: [UInt8]?, _ error: any Error) {
        let stormError = (error as? StormError) ?? StormError(.internalError, "unexpected error: \(error)")
        gateway.metrics.countClientError(stormError.code)
        var json = ByteBuffer(string: "{\"type\":\"error\",\"id\":")
        json.writeBytes(id ?? Array("null".utf8))
        json.writeString(",\(stormError.jsonBody.dropFirst())")
        send(WebSocketWire.textFrame(payload: json, allocator: allocator))
    }

    /// Writes and flushes a frame now (replies and control frames do not wait for the fan-out batch).
    private func send(_ frame: ByteBuffer) {
        guard !closing, let writer else { return }
        writer.write(NIOAny(frame), promise: nil)
        flushPending = false
        writer.flush()
    }

    /// Sends a close frame and closes the connection once it is written.
    private func close(code: UInt16, reason: String) {
        guard !closing, let context, let writer else { return }
        closing = true
        if code == 1002 || code == 1007 || code == 1009 || code == 1003 {
            gateway.metrics.countClientError(.protocolViolation)
        }
        let promise = context.eventLoop.makePromise(of: Void.self)
        writer.writeAndFlush(NIOAny(WebSocketWire.closeFrame(code: code, reason: reason, allocator: allocator)), promise: promise)
        promise.futureResult.assumeIsolated().whenComplete { [context] _ in
            context.close(promise: nil)
        }
        // A peer that stopped reading never lets the close frame out: cut the connection anyway.
        context.eventLoop.assumeIsolated().scheduleTask(in: gateway.limits.closeGrace) { [context] in
            context.close(promise: nil)
        }
    }
}
