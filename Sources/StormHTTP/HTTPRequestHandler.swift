import Logging
import NIOCore
import NIOHTTP1
import NIOWebSocket
import StormCore
import StormObservability

/// What a role serves over HTTP, asked by the shared `HTTPRequestHandler` at each step of a request.
/// The gateway's table is `GatewayRoutes` (StormGateway); the consumer's is `ConsumerRoutes`
/// (StormConsumer). One instance per connection.
package protocol HTTPRoutes: AnyObject {
    /// A refusal from the request head alone, after the Host/Origin policy and the connection limits
    /// (a WebSocket handshake that breaks RFC 6455, a JSON body without its content type): the error and
    /// extra headers, or nil to go on.
    func refusal(head: HTTPRequestHead, target: RequestTarget) -> (StormError, [(String, String)])?

    /// Whether the request is answered as a stream from its head (an SSE event stream): `.notTaken` to
    /// read the body and route it, `.taken` when the routes put their own handler in the pipeline and
    /// removed `handler`, `.answered` when they answered it with `handler.respond(error:)`.
    func takeOver(context: ChannelHandlerContext, head: HTTPRequestHead, target: RequestTarget, handler: HTTPRequestHandler) -> HTTPTakeOver

    /// Answers a complete request, through `handler.respond` (or `handler.wroteResponse` after writing it
    /// itself).
    func route(context: ChannelHandlerContext, head: HTTPRequestHead, target: RequestTarget, body: ByteBuffer, handler: HTTPRequestHandler)

    /// The most body bytes a route takes, when it is not `HTTPServerSettings.maxBodySize` (the gateway's
    /// batch publish takes many messages in one body); nil for the default.
    func bodyLimit(path: String) -> Int?
}

extension HTTPRoutes {
    package func bodyLimit(path: String) -> Int? { nil }
}

/// See `HTTPRoutes.takeOver`.
package enum HTTPTakeOver {
    case notTaken
    case taken
    case answered
    /// The routes decide later (a hook is asked): what arrives meanwhile is ignored until they answer
    /// with `handler.refusePending` or take the connection.
    case pending
}

/// The settings of one role's HTTP server that every request sees.
///
/// - `requestPolicy`: Host and Origin checks (`--allowed-hosts`, `--allowed-origins`).
/// - `connectionLimits`: `--max-connections`, per address, connect rate, the timeouts (for the refusal
///   messages; the gate and the deadlines apply them).
/// - `maxBodySize`: the largest request body read; past it 413 `message_too_large` (`--max-message-size`).
package struct HTTPServerSettings: Sendable {
    package var requestPolicy: RequestPolicy
    package var connectionLimits: ConnectionLimits
    package var maxBodySize: Int
    package var metrics: any HTTPServerMetrics
    package var connectionIDs: ConnectionIDs
    package var logger: Logger

    package init(requestPolicy: RequestPolicy, connectionLimits: ConnectionLimits, maxBodySize: Int, metrics: any HTTPServerMetrics, connectionIDs: ConnectionIDs, logger: Logger) {
        self.requestPolicy = requestPolicy
        self.connectionLimits = connectionLimits
        self.maxBodySize = maxBodySize
        self.metrics = metrics
        self.connectionIDs = connectionIDs
        self.logger = logger
    }
}

/// The HTTP server's request handling, for every role (docs/protocol.md, "HTTP"): request ids, the
/// connection gate's refusals, the Host/Origin policy, the body-size limit, lingering close after an
/// unread body, the deadlines, one debug line per request; what to answer is the role's `HTTPRoutes`.
/// WebSocket upgrades to `/ws` are taken by NIO's upgrader before a request reaches this handler.
package final class HTTPRequestHandler: ChannelInboundHandler, RemovableChannelHandler {
    package typealias InboundIn = HTTPServerRequestPart
    package typealias OutboundOut = HTTPServerResponsePart

    private enum State {
        case idle
        /// `limit`: the most body bytes the route takes (`HTTPRoutes.bodyLimit`).
        case receiving(HTTPRequestHead, ByteBuffer, limit: Int)
        /// Answered from the head alone (a refused event stream, Host or Origin) with no body to come:
        /// the end of the request is awaited, then the connection serves the next one.
        case answered
        /// Answered before the body was read (over the size limit, or refused with a body pending): the
        /// connection is closing, and what else arrives is dropped (`dropped` bytes so far; past
        /// `HTTPResponder.lingerBytes` the connection is closed outright).
        case closing(dropped: Int)
        case responding
        /// The routes decide from the head later (`HTTPTakeOver.pending`): whatever arrives meanwhile is
        /// ignored.
        case pending
    }

    private let settings: HTTPServerSettings
    private let routes: any HTTPRoutes
    private var state = State.idle
    package let connectionID: ConnectionID
    /// The role's logger with `storm.connection_id`, and `storm.request_id` of the current request.
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

    package init(settings: HTTPServerSettings, routes: any HTTPRoutes, connectionID: ConnectionID? = nil, admission: ConnectionAdmission = .admitted, deadlines: RequestDeadlineHandler? = nil) {
        self.settings = settings
        self.routes = routes
        self.admission = admission
        self.deadlines = deadlines
        let connectionID = connectionID ?? settings.connectionIDs.nextConnection()
        self.connectionID = connectionID
        var logger = settings.logger
        logger[metadataKey: "storm.connection_id"] = "\(connectionID)"
        self.logger = logger
    }

    /// Gives the request its id and puts it in the logger's metadata.
    private func beginRequest(_ head: HTTPRequestHead) {
        let id = ConnectionIDs.acceptedRequestID(head.headers.first(name: "x-request-id")) ?? settings.connectionIDs.nextRequest()
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
            if case .refuse(let error) = settings.requestPolicy.evaluate(head) {
                return refuseFromHead(context: context, head: head, error: error)
            }
            if let (error, headers) = routes.refusal(head: head, target: target) {
                return refuseFromHead(context: context, head: head, error: error, headers: headers)
            }
            switch routes.takeOver(context: context, head: head, target: target, handler: self) {
            case .taken: return
            case .answered:
                state = .answered
                return
            case .pending:
                state = .pending
                return
            case .notTaken: break
            }
            // Over the limit by its own account: answered now, before a byte of the body is read.
            let limit = routes.bodyLimit(path: target.path) ?? settings.maxBodySize
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
            routes.route(context: context, head: head, target: RequestTarget(head.uri), body: body, handler: self)
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
        case (_, .closing), (_, .pending):
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
            settings.metrics.countRefusal(.maxConnections)
            return (Self.refusalError(.maxConnections, limits: settings.connectionLimits), 1)
        case .refused(let reason, let retryAfter):
            return (Self.refusalError(reason, limits: settings.connectionLimits), retryAfter)
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
        let why = limit == settings.maxBodySize ? "(--max-message-size)" : "for this route (docs/protocol.md)"
        respond(context: context, head: head, error: StormError(.messageTooLarge, "request body is over the limit of \(limit) bytes \(why)"), closing: true)
        state = .closing(dropped: 0)
    }

    /// Answers a request the routes held (`HTTPTakeOver.pending`) with `error`, then closes: parts of
    /// the request may have been dropped meanwhile.
    package func refusePending(context: ChannelHandlerContext, head: HTTPRequestHead, error: any Error) {
        respond(context: context, head: head, error: error, closing: true)
        state = .closing(dropped: 0)
    }

    // MARK: Responses

    /// Answers the current request with `body`.
    package func respond(context: ChannelHandlerContext, head: HTTPRequestHead, status: HTTPResponseStatus, contentType: String, body: ByteBuffer) {
        HTTPResponder.respond(context: context, status: status, contentType: contentType, body: head.method == .HEAD ? ByteBuffer() : body, keepAlive: head.isKeepAlive, requestID: requestID)
        logRequest(head, status: status.code)
        wroteResponse(head)
    }

    /// The routes wrote the answer to `head` themselves (the web page): the connection serves the next
    /// request.
    package func wroteResponse(_ head: HTTPRequestHead) {
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

    /// Answers the current request with `error` (counted). `closing`: the body was not read, so the
    /// connection closes after the answer (lingering: see `HTTPResponder`).
    package func respond(context: ChannelHandlerContext, head: HTTPRequestHead, error: any Error, headers: [(String, String)] = [], closing: Bool = false) {
        let stormError = (error as? StormError) ?? StormError(.internalError, "unexpected error: \(error)")
        settings.metrics.countClientError(stormError.code)
        HTTPResponder.respond(
            context: context, error: stormError, after: closing ? .lingeringClose : (head.isKeepAlive ? .keepAlive : .close), requestID: requestID, headers: headers)
        logRequest(head, status: UInt(stormError.code.httpStatus), error: stormError)
        state = .idle
        if head.isKeepAlive, !closing { deadlines?.responseDone() }
    }
}
