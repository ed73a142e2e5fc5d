import Logging
import NIOCore
import NIOHTTP1
import NIOWebSocket
import StormCore
import StormObservability

/// The HTTP routes of a gateway (docs/protocol.md, "HTTP"). WebSocket upgrades to `/ws` are taken by
/// NIO's upgrader before a request reaches this handler; `GET /events` hands the connection to an
/// `SSESession`.
package final class HTTPRequestHandler: ChannelInboundHandler, RemovableChannelHandler {
    package typealias InboundIn = HTTPServerRequestPart
    package typealias OutboundOut = HTTPServerResponsePart

    private enum State {
        case idle
        /// `limit`: the most body bytes the route takes (`PublishRoutes.bodyLimit`).
        case receiving(HTTPRequestHead, ByteBuffer, limit: Int)
        /// Answered from the head alone (a refused event stream, Host or Origin) with no body to come:
        /// the end of the request is awaited, then the connection serves the next one.
        case answered
        /// Answered before the body was read (over the size limit, or refused with a body pending): the
        /// connection is closing, and what else arrives is dropped (`dropped` bytes so far; past
        /// `HTTPResponder.lingerBytes` the connection is closed outright).
        case closing(dropped: Int)
        case responding
        /// An event stream waits for the subscribe hook: whatever arrives meanwhile is ignored, as the
        /// stream ignores it once open.
        case streamPending
    }

    private let gateway: GatewayContext
    private let hub: LoopHub
    private var state = State.idle
    private let connectionID: ConnectionID
    /// The gateway's logger with `storm.connection_id`, and `storm.request_id` of the current request.
    private var logger: Logger
    /// The current request's id: the client's `X-Request-Id` when it is a sane token, else a new one.
    /// Answered as `X-Request-Id`.
    private var requestID: String?
    /// What the connection gate decided at accept: a refused connection has its first request answered
    /// with the refusal; a probe-only one gets only `/healthz`, `/readyz` and `/metrics`.
    private let admission: ConnectionAdmission
    /// `--header-timeout` and `--idle-timeout`, told about heads and responses.
    private let deadlines: RequestDeadlineHandler?

    /// The paths a probe-only connection (past `--max-connections`) may ask.
    package static let probePaths: Set<String> = ["/healthz", "/readyz", "/metrics"]

    /// Why the connect hook refused this connection's WebSocket upgrade, answered by the `/ws` route.
    private let upgradeRefusal: NIOLoopBoundBox<StormError?>?

    package init(
        gateway: GatewayContext, hub: LoopHub, connectionID: ConnectionID? = nil, admission: ConnectionAdmission = .admitted, deadlines: RequestDeadlineHandler? = nil,
        upgradeRefusal: NIOLoopBoundBox<StormError?>? = nil
    ) {
        self.upgradeRefusal = upgradeRefusal
        self.gateway = gateway
        self.hub = hub
        self.admission = admission
        self.deadlines = deadlines
        let connectionID = connectionID ?? gateway.connectionIDs.nextConnection()
        self.connectionID = connectionID
        var logger = gateway.logger
        logger[metadataKey: "storm.connection_id"] = "\(connectionID)"
        self.logger = logger
    }

    /// Gives the request its id and puts it in the logger's metadata.
    private func beginRequest(_ head: HTTPRequestHead) {
        let id = ConnectionIDs.acceptedRequestID(head.headers.first(name: "x-request-id")) ?? gateway.connectionIDs.nextRequest()
        requestID = id
        logger[metadataKey: "storm.request_id"] = "\(id)"
    }

    package func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch (Self.unwrapInboundIn(data), state) {
        case (.head(let head), .idle):
            beginRequest(head)
            deadlines?.headReceived()
            let target = RequestTarget(head.uri)
            if let (error, retryAfter) = refusal(path: target.path) {
                respond(context: context, head: head, error: error, headers: [("Retry-After", String(retryAfter))], closing: true)
                state = .closing(dropped: 0)
                return
            }
            if case .refuse(let error) = gateway.requestPolicy.evaluate(head) {
                return refuseFromHead(context: context, head: head, error: error)
            }
            if target.path == "/ws", case .refused(let error, let headers) = WebSocketHandshakeCheck.evaluate(head) {
                return refuseFromHead(context: context, head: head, error: error, headers: headers)
            }
            if case .refuse(let error) = RequestPolicy.checkJSONBody(path: target.path, head: head) {
                return refuseFromHead(context: context, head: head, error: error)
            }
            if head.method == .GET, target.path == "/events" {
                return startEventStream(context: context, head: head, target: target)
            }
            // Over the limit by its own account: answered now, before a byte of the body is read.
            let limit = PublishRoutes.bodyLimit(path: target.path, maxMessageSize: gateway.limits.maxMessageSize)
            if let length = head.headers.first(name: "content-length").flatMap(Int.init), length > limit {
                return refuseTooLarge(context: context, head: head, limit: limit)
            }
            state = .receiving(head, context.channel.allocator.buffer(capacity: 0), limit: limit)
        case (.body(var chunk), .receiving(let head, var body, let limit)):
            if body.readableBytes + chunk.readableBytes > limit {
                // A chunked body (or one longer than announced) passed the limit: answered at once.
                refuseTooLarge(context: context, head: head, limit: limit)
            } else {
                state = .idle  // drop our reference so the append does not copy
                body.writeBuffer(&chunk)
                state = .receiving(head, body, limit: limit)
            }
        case (.end, .receiving(let head, let body, _)):
            state = .responding
            route(context: context, head: head, body: body)
        case (.body, .answered):
            break
        case (.end, .answered):
            state = .idle
            deadlines?.responseDone()
        case (.body(let chunk), .closing(let dropped)):
            // Lingering only lets the client read the answer: a client that keeps sending after it is
            // cut off rather than read, whatever the body's size.
            let total = dropped + chunk.readableBytes
            state = .closing(dropped: total)
            if total > HTTPResponder.lingerBytes { context.close(promise: nil) }
        case (_, .closing), (_, .streamPending):
            break
        default:
            // HTTPServerPipelineHandler delivers one request at a time; anything else is a bug upstream.
            context.close(promise: nil)
        }
    }

    package func errorCaught(context: ChannelHandlerContext, error: any Error) {
        switch error {
        case is HTTPParserError, is ByteToMessageDecoderError:
            // Bytes the HTTP parser cannot read (an HTTP/0.9 request line, garbage):
            // HTTPServerProtocolErrorHandler has answered 400, once. Nothing after them can be parsed,
            // so the connection ends here rather than answer again.
            context.close(promise: nil)
        case is NIOWebSocketUpgradeError:
            // NIO's upgrader refused the handshake (a version other than 13); the request itself comes
            // next, and the routes answer it with the reason.
            break
        default:
            context.fireErrorCaught(error)
        }
    }

    package func handlerRemoved(context: ChannelHandlerContext) {
        // Upgraded to a WebSocket or handed to an event stream: their ping and heartbeat take over.
        deadlines?.stop()
    }

    /// The refusal (and its `Retry-After` seconds) the gate's decision means for a request to `path`.
    private func refusal(path: String) -> (StormError, Int)? {
        switch admission {
        case .admitted, .closeNow:
            return nil
        case .probesOnly:
            guard !Self.probePaths.contains(path) else { return nil }
            gateway.metrics.countRefusal(.maxConnections)
            return (Self.refusalError(.maxConnections, limits: gateway.connectionLimits), 1)
        case .refused(let reason, let retryAfter):
            return (Self.refusalError(reason, limits: gateway.connectionLimits), retryAfter)
        }
    }

    /// The error a refused connection is answered with; the message names the limit and its flag.
    package static func refusalError(_ reason: ConnectionAdmission.ConnectionRefusal, limits: ConnectionLimits) -> StormError {
        switch reason {
        case .maxConnections:
            return StormError(
                .tooManyConnections,
                "the gateway holds as many connections as it takes (--max-connections); only /healthz, /readyz and /metrics are answered until some close: retry later, or on another gateway")
        case .maxConnectionsPerIP:
            return StormError(
                .tooManyConnections,
                "this address holds \(limits.maxConnectionsPerIP) connections already, the limit per source address (--max-connections-per-ip): close some, or raise the limit")
        case .connectRate:
            return StormError(
                .connectRateLimited,
                "this address opens connections faster than \(limits.connectRatePerIP) per second (--connect-rate-per-ip): back off for Retry-After seconds, then reconnect")
        }
    }

    /// Whether the request announced a body (a non-zero `Content-Length`, or chunked).
    private static func hasBody(_ head: HTTPRequestHead) -> Bool {
        head.headers.contains(name: "transfer-encoding") || head.headers["content-length"].contains { $0 != "0" }
    }

    /// Answers a request refused from its head. Without a body the connection carries on; with one, it
    /// is closed rather than read (the body could be any size).
    private func refuseFromHead(context: ChannelHandlerContext, head: HTTPRequestHead, error: StormError, headers: [(String, String)] = []) {
        let pendingBody = Self.hasBody(head)
        respond(context: context, head: head, error: error, headers: headers, closing: pendingBody)
        state = pendingBody ? .closing(dropped: 0) : .answered
    }

    private func refuseTooLarge(context: ChannelHandlerContext, head: HTTPRequestHead, limit: Int) {
        let why = limit == gateway.limits.maxMessageSize ? "(--max-message-size)" : "for this route (docs/protocol.md)"
        respond(context: context, head: head, error: StormError(.messageTooLarge, "request body is over the limit of \(limit) bytes \(why)"), closing: true)
        state = .closing(dropped: 0)
    }

    // MARK: Routes

    private func route(context: ChannelHandlerContext, head: HTTPRequestHead, body: ByteBuffer) {
        let target = RequestTarget(head.uri)
        if gateway.limits.webUI, let page = WebUI.response(for: head, path: target.path) {
            if page.status == .methodNotAllowed { gateway.metrics.countClientError(.methodNotAllowed) }
            WebUI.write(page, to: context, keepAlive: head.isKeepAlive)
            state = .idle
            if head.isKeepAlive { deadlines?.responseDone() }
            return
        }
        // Everything but the probes, metrics and the page needs a principal: a valid token, or no token
        // where anonymous access is allowed.
        var principal = Principal.anonymous
        if !["/healthz", "/readyz", "/metrics"].contains(target.path) {
            switch gateway.auth.authenticate(Authenticator.token(from: head)) {
            case .success(let who): principal = who
            case .failure(let error): return respond(context: context, head: head, error: error)
            }
            do {
                try Self.authorizeAPI(path: target.path, method: head.method, principal: principal, auth: gateway.auth)
            } catch {
                return respond(context: context, head: head, error: error)
            }
        }
        // A channel's history and presence read what a subscriber would: the subscribe hook decides too.
        if gateway.hooks.isEnabled(.subscribe), let channel = Self.apiChannel(target.path) {
            let request = HookRequest(kind: .subscribe, client: "\(connectionID)", transport: .http, principal: principal, channel: channel, traceparent: head.headers.first(name: "traceparent"))
            gateway.hooks.ask(.subscribe, request, eventLoop: context.eventLoop).assumeIsolated().whenComplete { [self] outcome in
                switch outcome {
                case .success: self.dispatch(context: context, head: head, target: target, body: body, principal: principal)
                case .failure(let error): self.respond(context: context, head: head, error: error)
                }
            }
            return
        }
        dispatch(context: context, head: head, target: target, body: body, principal: principal)
    }

    /// The channel a `/api/v1/channels/{channel}/…` path names, if valid.
    private static func apiChannel(_ path: String) -> ChannelName? {
        guard path.hasPrefix("/api/v1/channels/") else { return nil }
        let name = path.dropFirst("/api/v1/channels/".count).split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
        return try? ChannelName(validating: RequestTarget.percentDecode(name))
    }

    /// Answers an authenticated, authorized request by its route.
    private func dispatch(context: ChannelHandlerContext, head: HTTPRequestHead, target: RequestTarget, body: ByteBuffer, principal: Principal) {
        switch (target.path, head.method) {
        case ("/publish", .POST):
            publish(context: context, head: head, target: target, body: body, principal: principal)
        case (let path, let method) where PublishRoutes.handles(path):
            PublishRoutes.route(
                method: method, path: path, head: head, body: body, principal: principal, client: "\(connectionID)", gateway: gateway, eventLoop: context.eventLoop)
                .assumeIsolated().whenComplete { [self] result in
                    switch result {
                    case .success(let answer): self.respond(context: context, head: head, status: answer.status, contentType: answer.contentType, body: answer.body)
                    case .failure(let error): self.respond(context: context, head: head, error: error)
                    }
                }
        case (let path, let method) where AdminRoutes.handles(path):
            AdminRoutes.route(method: method, target: target, body: body, gateway: gateway, eventLoop: context.eventLoop).assumeIsolated().whenComplete { [self] result in
                switch result {
                case .success(let answer): self.respond(context: context, head: head, status: answer.status, contentType: "application/json", body: answer.body)
                case .failure(let error): self.respond(context: context, head: head, error: error)
                }
            }
        case ("/healthz", .GET), ("/healthz", .HEAD):
            respond(context: context, head: head, status: .ok, contentType: "text/plain; charset=utf-8", body: ByteBuffer(string: "ok\n"))
        case ("/readyz", .GET), ("/readyz", .HEAD):
            readiness(context: context, head: head)
        case ("/metrics", .GET):
            let text = gateway.metrics.exposition(brokerConnected: gateway.broker.isConnected, brokerSubscriptions: gateway.router.activeChannelCount)
            respond(context: context, head: head, status: .ok, contentType: "text/plain; version=0.0.4; charset=utf-8", body: ByteBuffer(bytes: text))
        case ("/ws", .GET) where gateway.state.isDraining:
            respond(context: context, head: head, error: StormError(.shuttingDown, "the gateway is shutting down"))
        case ("/ws", .GET) where upgradeRefusal?.value != nil:
            let refusal = upgradeRefusal?.value ?? StormError(.forbidden, "refused by the connect hook")
            upgradeRefusal?.value = nil
            respond(context: context, head: head, error: refusal)
        case ("/ws", .GET):
            respond(context: context, head: head, error: StormError(.badRequest, "/ws takes WebSocket upgrades only (Connection: Upgrade, Upgrade: websocket, Sec-WebSocket-Version: 13, Sec-WebSocket-Key)"))
        case (let path, let method) where ChannelsRoutes.handles(path):
            do {
                respond(context: context, head: head, status: .ok, contentType: "application/json", body: try ChannelsRoutes.route(method: method, target: target, gateway: gateway))
            } catch {
                respond(context: context, head: head, error: error)
            }
        case (let path, let method) where HistoryRoutes.handles(path):
            HistoryRoutes.route(method: method, target: target, gateway: gateway, eventLoop: context.eventLoop).assumeIsolated().whenComplete { [self] result in
                switch result {
                case .success(let body): self.respond(context: context, head: head, status: .ok, contentType: "application/json", body: body)
                case .failure(let error): self.respond(context: context, head: head, error: error)
                }
            }
        case (let path, let method) where PresenceRoutes.handles(path):
            PresenceRoutes.route(method: method, target: target, gateway: gateway, eventLoop: context.eventLoop).assumeIsolated().whenComplete { [self] result in
                switch result {
                case .success(let answer): self.respond(context: context, head: head, status: answer.status, contentType: "application/json", body: answer.body)
                case .failure(let error): self.respond(context: context, head: head, error: error)
                }
            }
        case ("/publish", _), ("/healthz", _), ("/readyz", _), ("/metrics", _), ("/ws", _), ("/events", _):
            respond(context: context, head: head, error: StormError(.methodNotAllowed, "\(head.method) is not allowed on \(target.path)"))
        default:
            respond(context: context, head: head, error: StormError(.notFound, "no route for \(target.path) (see docs/protocol.md)"))
        }
    }

    private func readiness(context: ChannelHandlerContext, head: HTTPRequestHead) {
        if gateway.state.isDraining {
            respond(context: context, head: head, error: StormError(.shuttingDown, "the gateway is shutting down"))
        } else if let reason = gateway.broker.unavailableReason ?? gateway.historyReader.unavailableReason {
            respond(context: context, head: head, error: StormError(.brokerUnavailable, reason))
        } else {
            // The gateway serves whatever its helpers' state: presence and the history consumer are
            // reported (a degraded one needs attention) without taking the gateway out of rotation.
            var body = "{\"status\":\"ready\",\"broker\":\(JSONWriter.quoted(gateway.broker.endpointDescription)),\"presence\":\"\(gateway.presence.health)\""
            if let consumer = gateway.consumer.withLockedValue({ $0 }) {
                switch consumer.health {
                case .ready: body += ",\"consumer\":\"ready\""
                case .starting: body += ",\"consumer\":\"starting\""
                case .stopped: body += ",\"consumer\":\"stopped\""
                case .degraded(let why): body += ",\"consumer\":\"degraded\",\"consumer_error\":\(JSONWriter.quoted(why))"
                }
            }
            let limits = gateway.limits
            body += ",\"limits\":{\"max_message_size\":\(limits.maxMessageSize),\"client_buffer\":\(limits.clientBufferBytes),\"max_channels\":\(limits.maxChannels),\"max_channels_per_connection\":\(limits.maxChannelsPerConnection),\"client_publish_rate\":\(limits.clientPublishRate)}"
            body += "}\n"
            respond(context: context, head: head, status: .ok, contentType: "application/json", body: ByteBuffer(string: body))
        }
    }

    /// The API's permissions beyond authentication: the admin API and disconnects need the admin
    /// capability; a channel's history and presence need permission to subscribe to it.
    package static func authorizeAPI(path: String, method: HTTPMethod, principal: Principal, auth: Authenticator) throws(StormError) {
        if AdminRoutes.handles(path) || (path.hasPrefix("/api/v1/") && path.hasSuffix("/disconnect")) {
            try auth.requireAdmin(principal)
        } else if path.hasPrefix("/api/v1/channels/") {
            let name = path.dropFirst("/api/v1/channels/".count).split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
            if let channel = try? ChannelName(validating: RequestTarget.percentDecode(name)) {
                try auth.authorize(.subscribe, channel, principal)
            }
        }
    }

    private func publish(context: ChannelHandlerContext, head: HTTPRequestHead, target: RequestTarget, body: ByteBuffer, principal: Principal) {
        let channel: ChannelName
        do {
            let names = target.values(of: "subject")
            guard names.count == 1, let name = names.first else {
                throw StormError(.badRequest, "POST /publish needs exactly one 'subject' query parameter naming the channel")
            }
            channel = try ChannelName(validating: name)
            try gateway.auth.authorize(.publish, channel, principal)
        } catch {
            return respond(context: context, head: head, error: error)
        }
        let payload = Array(body.readableBytesView)
        let key = head.headers.first(name: "idempotency-key") ?? target.values(of: "id").first
        // W3C trace context; only read when the gateway traces (an invalid traceparent is ignored).
        let trace = gateway.publisher.tracing == nil ? nil : TraceHeaders(head.headers)
        gateway.publish(
            payload, encoding: nil, on: channel, idempotencyKey: key, via: .http, trace: trace, traceparent: head.headers.first(name: "traceparent"),
            principal: principal, client: "\(connectionID)", eventLoop: context.eventLoop)
            .assumeIsolated().whenComplete { [self] outcome in
                switch outcome {
                case .success(let (envelope, receipt)):
                    self.respond(context: context, head: head, status: .ok, contentType: "application/json", body: ByteBuffer(string: WebSocketSession.publishResult(envelope, receipt) + "\n"))
                case .failure(let error):
                    self.respond(context: context, head: head, error: error)
                }
            }
    }

    private func startEventStream(context: ChannelHandlerContext, head: HTTPRequestHead, target: RequestTarget) {
        let channels: [ChannelName]
        var resume: ResumePoint?
        var principal = Principal.anonymous
        do {
            guard !gateway.state.isDraining else { throw StormError(.shuttingDown, "the gateway is shutting down") }
            let names = target.values(of: "subject") + target.values(of: "channel")
            principal = try gateway.auth.authenticate(Authenticator.token(from: head)).get()
            // The token's storm.channels join the stream (server-side subscriptions); those it may not
            // subscribe to are left out, as a stream has no error frame to report them on.
            let auth = gateway.auth
            let who = principal
            let claimed = ServerSubscriptions.plan(claimed: principal.channels, limit: gateway.limits.maxChannelsPerConnection) { channel throws(StormError) in
                try auth.authorize(.subscribe, channel, who)
            }.allowed.map(\.rawValue).filter { !names.contains($0) }
            guard !names.isEmpty || !claimed.isEmpty else {
                throw StormError(.badRequest, "GET /events needs at least one 'subject' query parameter (or a token with storm.channels)")
            }
            channels = try gateway.channels(from: names + claimed)
            for channel in channels { try gateway.auth.authorize(.subscribe, channel, principal) }
            // EventSource sends the last `id:` it saw as Last-Event-ID when it reconnects.
            if let since = head.headers.first(name: "last-event-id") ?? target.values(of: "since").first {
                resume = try ResumePoint.parseSSE(since, channels: channels, epoch: target.values(of: "epoch").first)
            }
        } catch {
            respond(context: context, head: head, error: error)
            state = .answered
            return
        }
        guard gateway.hooks.isEnabled(.subscribe) else {
            return openEventStream(context: context, head: head, channels: channels, resume: resume, principal: principal)
        }
        // The subscribe hook is asked about every channel of the stream; one refusal refuses the stream
        // (answered, then the connection closed: parts of the request may have been dropped meanwhile).
        state = .streamPending
        let client = "\(connectionID)"
        let asks = channels.map { channel in
            gateway.hooks.ask(
                .subscribe, HookRequest(kind: .subscribe, client: client, transport: .sse, principal: principal, channel: channel, traceparent: head.headers.first(name: "traceparent")),
                eventLoop: context.eventLoop)
        }
        EventLoopFuture.whenAllSucceed(asks, on: context.eventLoop).assumeIsolated().whenComplete { [self] outcome in
            switch outcome {
            case .success:
                self.openEventStream(context: context, head: head, channels: channels, resume: resume, principal: principal)
            case .failure(let error):
                let stormError = (error as? StormError) ?? StormError(.internalError, "unexpected error: \(error)")
                self.gateway.metrics.countClientError(stormError.code)
                HTTPResponder.respond(context: context, error: stormError, after: .close, requestID: self.requestID)
                self.logRequest(head, status: UInt(stormError.code.httpStatus), error: stormError)
                self.state = .closing(dropped: 0)
            }
        }
    }

    /// Hands the connection to an `SSESession` streaming `channels`.
    private func openEventStream(context: ChannelHandlerContext, head: HTTPRequestHead, channels: [ChannelName], resume: ResumePoint?, principal: Principal) {
        let session = SSESession(gateway: gateway, hub: hub, channels: channels, keepAlive: head.isKeepAlive, resume: resume, principal: principal, connectionID: connectionID)
        do {
            try context.pipeline.syncOperations.addHandler(session, position: .after(self))
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        } catch {
            context.close(promise: nil)
        }
    }

    // MARK: Responses

    private func respond(context: ChannelHandlerContext, head: HTTPRequestHead, status: HTTPResponseStatus, contentType: String, body: ByteBuffer) {
        HTTPResponder.respond(context: context, status: status, contentType: contentType, body: head.method == .HEAD ? ByteBuffer() : body, keepAlive: head.isKeepAlive, requestID: requestID)
        logRequest(head, status: status.code)
        state = .idle
        if head.isKeepAlive { deadlines?.responseDone() }
    }

    /// One debug line per request: method, path (never the query, which may hold `?token=`) and status.
    private func logRequest(_ head: HTTPRequestHead, status: UInt, error: StormError? = nil) {
        guard logger.logLevel <= .debug else { return }
        var metadata: Logger.Metadata = ["http.method": "\(head.method.rawValue)", "http.path": "\(RequestTarget(head.uri).path)", "http.status": "\(status)"]
        if let error { metadata["storm.error"] = "\(error.code)" }
        logger.debug("http request", metadata: metadata)
    }

    /// `closing`: the body was not read, so the connection closes after the answer (lingering: see
    /// `HTTPResponder`).
    private func respond(context: ChannelHandlerContext, head: HTTPRequestHead, error: any Error, headers: [(String, String)] = [], closing: Bool = false) {
        let stormError = (error as? StormError) ?? StormError(.internalError, "unexpected error: \(error)")
        gateway.metrics.countClientError(stormError.code)
        HTTPResponder.respond(
            context: context, error: stormError, after: closing ? .lingeringClose : (head.isKeepAlive ? .keepAlive : .close), requestID: requestID, headers: headers)
        logRequest(head, status: UInt(stormError.code.httpStatus), error: stormError)
        state = .idle
        if head.isKeepAlive, !closing { deadlines?.responseDone() }
    }
}

/// Writes complete HTTP responses; shared by the request handler and SSE sessions that fail to start.
package enum HTTPResponder {
    /// What becomes of the connection once the answer is written.
    package enum After {
        case keepAlive
        case close
        /// The request's body was not read: stop writing (FIN), drop what the client still sends for
        /// up to `lingerTime` and `lingerBytes`, then close. Closing at once with unread bytes would make the kernel send
        /// a reset, and a reset can destroy the answer before the client reads it.
        case lingeringClose
    }

    package static let lingerTime = TimeAmount.seconds(2)
    /// Most bytes of an unread body dropped while lingering.
    package static let lingerBytes = 256 * 1024

    package static func respond(context: ChannelHandlerContext, status: HTTPResponseStatus, contentType: String, body: ByteBuffer, keepAlive: Bool, requestID: String? = nil) {
        respond(context: context, status: status, contentType: contentType, body: body, after: keepAlive ? .keepAlive : .close, requestID: requestID)
    }

    package static func respond(
        context: ChannelHandlerContext, status: HTTPResponseStatus, contentType: String, body: ByteBuffer, after: After, requestID: String? = nil, headers extra: [(String, String)] = []
    ) {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: contentType)
        headers.add(name: "Content-Length", value: String(body.readableBytes))
        if let requestID { headers.add(name: "X-Request-Id", value: requestID) }
        for (name, value) in extra { headers.add(name: name, value: value) }
        if after != .keepAlive { headers.add(name: "Connection", value: "close") }
        context.write(NIOAny(HTTPServerResponsePart.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
        if body.readableBytes > 0 {
            context.write(NIOAny(HTTPServerResponsePart.body(.byteBuffer(body))), promise: nil)
        }
        let done = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(NIOAny(HTTPServerResponsePart.end(nil)), promise: done)
        switch after {
        case .keepAlive:
            break
        case .close:
            done.futureResult.assumeIsolated().whenComplete { [context] _ in context.close(promise: nil) }
        case .lingeringClose:
            let channel = context.channel
            done.futureResult.assumeIsolated().whenComplete { [context] _ in
                let halfClosed = context.eventLoop.makePromise(of: Void.self)
                context.close(mode: .output, promise: halfClosed)
                // The client closing its side ends the connection at once (no half-closure is allowed).
                halfClosed.futureResult.whenFailure { _ in channel.close(promise: nil) }
                channel.eventLoop.scheduleTask(in: lingerTime) { channel.close(promise: nil) }
            }
        }
    }

    package static func respond(context: ChannelHandlerContext, error: StormError, keepAlive: Bool, requestID: String? = nil) {
        respond(context: context, error: error, after: keepAlive ? .keepAlive : .close, requestID: requestID)
    }

    package static func respond(context: ChannelHandlerContext, error: StormError, after: After, requestID: String? = nil, headers: [(String, String)] = []) {
        respond(
            context: context, status: HTTPResponseStatus(statusCode: error.code.httpStatus), contentType: "application/json",
            body: ByteBuffer(string: error.jsonBody + "\n"), after: after, requestID: requestID, headers: headers)
    }
}

/// A request target split into its path and decoded query parameters.
package struct RequestTarget {
    package let path: String
    package let query: [(name: String, value: String)]

    /// Splits on bytes, not `Character`s: a `String.split` walks grapheme clusters, and on the publish
    /// path that was a tenth of the gateway's time per request.
    package init(_ uri: String) {
        let bytes = uri.utf8
        guard let mark = bytes.firstIndex(of: UInt8(ascii: "?")) else {
            path = uri
            query = []
            return
        }
        path = String(uri[..<mark])
        var query: [(String, String)] = []
        for pair in bytes[bytes.index(after: mark)...].split(separator: UInt8(ascii: "&")) {
            if let equals = pair.firstIndex(of: UInt8(ascii: "=")) {
                query.append((Self.percentDecode(pair[..<equals]), Self.percentDecode(pair[pair.index(after: equals)...])))
            } else {
                query.append((Self.percentDecode(pair), ""))
            }
        }
        self.query = query
    }

    package func values(of name: String) -> [String] {
        query.filter { $0.name == name }.map(\.value)
    }

    /// Decodes `%XX` and `+`; a malformed escape is kept literally (channel validation then refuses it).
    package static func percentDecode(_ text: Substring) -> String {
        percentDecode(text.utf8)
    }

    package static func percentDecode<Bytes: Collection<UInt8>>(_ text: Bytes) -> String {
        guard text.contains(where: { $0 == UInt8(ascii: "%") || $0 == UInt8(ascii: "+") }) else {
            return String(decoding: text, as: UTF8.self)
        }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(text.count)
        var index = text.startIndex
        while index != text.endIndex {
            let byte = text[index]
            let next = text.index(after: index)
            if byte == UInt8(ascii: "+") {
                bytes.append(UInt8(ascii: " "))
            } else if byte == UInt8(ascii: "%"), next != text.endIndex, text.index(after: next) != text.endIndex,
                let high = hexValue(text[next]), let low = hexValue(text[text.index(after: next)])
            {
                bytes.append(high << 4 | low)
                index = text.index(next, offsetBy: 2)
                continue
            } else {
                bytes.append(byte)
            }
            index = next
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return byte - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}
