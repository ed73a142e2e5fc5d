import Logging
import NIOCore
import NIOHTTP1
import NIOWebSocket
import StormCore
import StormObservability

/// The HTTP routes of a gateway (docs/protocol.md, "HTTP"), served by the shared `HTTPRequestHandler`
/// (StormHTTP) that applies the Host/Origin policy, the limits and the deadlines to every role. WebSocket
/// upgrades to `/ws` are taken by NIO's upgrader before a request reaches the handler; `GET /events`
/// hands the connection to an `SSESession`.
package final class GatewayRoutes: HTTPRoutes {
    private let gateway: GatewayContext
    private let hub: LoopHub
    private let connectionID: ConnectionID
    /// The connection's handler, for the answers (set by each call from it).
    private weak var http: HTTPRequestHandler?
    /// Why the connect hook refused this connection's WebSocket upgrade, answered by the `/ws` route.
    private let upgradeRefusal: NIOLoopBoundBox<StormError?>?

    package init(gateway: GatewayContext, hub: LoopHub, connectionID: ConnectionID, upgradeRefusal: NIOLoopBoundBox<StormError?>? = nil) {
        self.upgradeRefusal = upgradeRefusal
        self.gateway = gateway
        self.hub = hub
        self.connectionID = connectionID
    }

    /// The settings of the gateway's HTTP server.
    package static func settings(_ gateway: GatewayContext) -> HTTPServerSettings {
        HTTPServerSettings(
            requestPolicy: gateway.requestPolicy, connectionLimits: gateway.connectionLimits, maxBodySize: gateway.limits.maxMessageSize, metrics: gateway.metrics,
            connectionIDs: gateway.connectionIDs, logger: gateway.logger)
    }

    package func refusal(head: HTTPRequestHead, target: RequestTarget) -> (StormError, [(String, String)])? {
        if target.path == "/ws", case .refused(let error, let headers) = WebSocketHandshakeCheck.evaluate(head) {
            return (error, headers)
        }
        if case .refuse(let error) = RequestPolicy.checkJSONBody(path: target.path, head: head) {
            return (error, [])
        }
        return nil
    }

    /// Broadcast and batch publish take bodies larger than one message (`PublishRoutes.bodyLimit`).
    package func bodyLimit(path: String) -> Int? {
        PublishRoutes.bodyLimit(path: path, maxMessageSize: gateway.limits.maxMessageSize)
    }

    package func takeOver(context: ChannelHandlerContext, head: HTTPRequestHead, target: RequestTarget, handler: HTTPRequestHandler) -> HTTPTakeOver {
        guard head.method == .GET, target.path == "/events" else { return .notTaken }
        http = handler
        return startEventStream(context: context, head: head, target: target)
    }

    package func route(context: ChannelHandlerContext, head: HTTPRequestHead, target: RequestTarget, body: ByteBuffer, handler: HTTPRequestHandler) {
        http = handler
        route(context: context, head: head, body: body)
    }

    // MARK: Routes

    private func route(context: ChannelHandlerContext, head: HTTPRequestHead, body: ByteBuffer) {
        let target = RequestTarget(head.uri)
        if gateway.limits.webUI, let page = WebUI.response(for: head, path: target.path) {
            if page.status == .methodNotAllowed { gateway.metrics.countClientError(.methodNotAllowed) }
            WebUI.write(page, to: context, keepAlive: head.isKeepAlive)
            http?.wroteResponse(head)
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
            let text = gateway.metrics.exposition(brokerConnected: gateway.broker.isConnected, brokerSubscriptions: gateway.router.activeChannelCount, stream: gateway.broker.streamStatus)
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
            PresenceRoutes.route(method: method, target: target, body: body, gateway: gateway, eventLoop: context.eventLoop).assumeIsolated().whenComplete { [self] result in
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
            var body = "{\"status\":\"ready\",\"role\":\(JSONWriter.quoted(gateway.role)),\"broker\":\(JSONWriter.quoted(gateway.broker.endpointDescription)),\"presence\":\"\(gateway.presence.health)\""
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

    private func startEventStream(context: ChannelHandlerContext, head: HTTPRequestHead, target: RequestTarget) -> HTTPTakeOver {
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
            return .answered
        }
        guard gateway.hooks.isEnabled(.subscribe) else {
            openEventStream(context: context, head: head, channels: channels, resume: resume, principal: principal)
            return .taken
        }
        // The subscribe hook is asked about every channel of the stream; one refusal refuses the stream
        // (answered, then the connection closed: parts of the request may have been dropped meanwhile).
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
                self.http?.refusePending(context: context, head: head, error: error)
            }
        }
        return .pending
    }

    /// Hands the connection to an `SSESession` streaming `channels`.
    private func openEventStream(context: ChannelHandlerContext, head: HTTPRequestHead, channels: [ChannelName], resume: ResumePoint?, principal: Principal) {
        let session = SSESession(gateway: gateway, hub: hub, channels: channels, keepAlive: head.isKeepAlive, resume: resume, principal: principal, connectionID: connectionID)
        do {
            try context.pipeline.syncOperations.addHandler(session, position: .after(context.handler))
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        } catch {
            context.close(promise: nil)
        }
    }

    // MARK: Responses

    private func respond(context: ChannelHandlerContext, head: HTTPRequestHead, status: HTTPResponseStatus, contentType: String, body: ByteBuffer) {
        http?.respond(context: context, head: head, status: status, contentType: contentType, body: body)
    }

    private func respond(context: ChannelHandlerContext, head: HTTPRequestHead, error: any Error) {
        http?.respond(context: context, head: head, error: error)
    }
}
