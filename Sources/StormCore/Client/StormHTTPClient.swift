import NIOCore
import NIOHTTP1
import NIOPosix

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One HTTP answer, body fully read.
public struct StormHTTPResponse: Sendable {
    public var status: Int
    public var headers: HTTPHeaders
    public var body: [UInt8]
}

/// A small HTTP/1.1 keep-alive client for the gateway's API (`POST /publish`, `/readyz`, `/metrics`).
///
/// One TCP connection (`StormHTTPConnection`), reused across requests and reopened when the server
/// closed it. Requests may be issued concurrently: they are pipelined on the connection and answered in
/// order, which is what lets the bench keep a steady publish rate over a handful of connections.
public actor StormHTTPClient {
    public let endpoint: StormEndpoint
    private let options: StormConnectOptions
    private let group: any EventLoopGroup
    private var connection: EventLoopFuture<StormHTTPConnection>?
    /// Longest accepted answer body: the API's answers are small, so anything bigger is a wrong server.
    public static let maximumResponseBody = 16 << 20

    public init(
        endpoint: StormEndpoint, options: StormConnectOptions = .init(),
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) {
        self.endpoint = endpoint
        self.options = options
        self.group = group
    }

    /// Sends one request and reads the whole answer.
    ///
    /// - Throws: `StormError(.connection)` when the server cannot be reached or the connection drops
    ///   mid-request; when `throwingOnErrorStatus` is set (the default), a `StormError` carrying the
    ///   server's own code and message for any status of 400 and above.
    public func request(
        method: HTTPMethod = .GET, path: String, query: [(String, String)] = [], body: [UInt8]? = nil,
        headers extraHeaders: HTTPHeaders = [:], timeout: TimeAmount = .seconds(30),
        throwingOnErrorStatus: Bool = true
    ) async throws(StormError) -> StormHTTPResponse {
        let connection = try await openConnection()
        let response: StormHTTPResponse
        do {
            response = try await connection.send(
                method: method, path: path, query: query, body: body, headers: extraHeaders, timeout: timeout
            ).get()
        } catch {
            throw StormError.lostConnection(error, endpoint: endpoint)
        }
        if throwingOnErrorStatus, response.status >= 400 {
            throw StormError(httpStatus: response.status, body: response.body)
        }
        return response
    }

    /// `POST /publish?subject=CHANNEL`; returns the gateway's JSON reply (`{"id":…,"channel":…,"ts":…}`).
    public func publish(channel: ChannelName, payload: [UInt8]) async throws(StormError) -> [UInt8] {
        try await request(method: .POST, path: "/publish", query: [("subject", channel.rawValue)], body: payload).body
    }

    /// Closes the kept-alive connection, if any.
    public func close() async {
        guard let connection else { return }
        self.connection = nil
        if let open = try? await connection.get() {
            try? await open.close().get()
        }
    }

    private func openConnection() async throws(StormError) -> StormHTTPConnection {
        if let connection {
            do {
                let open = try await connection.get()
                if open.isActive { return open }
            } catch {
                // A failed attempt is not cached: try again below.
            }
            // Another request may have replaced the connection while we waited.
            if let current = self.connection, current !== connection {
                return try await openConnection()
            }
        }
        let attempt = StormHTTPConnection.connect(to: endpoint, options: options, on: group.next())
        self.connection = attempt
        do {
            return try await attempt.get()
        } catch {
            if self.connection === attempt { self.connection = nil }
            throw (error as? StormError) ?? StormError.connectionFailure(error, endpoint: endpoint)
        }
    }
}

/// One kept-alive HTTP/1.1 connection to the gateway, driven by futures on its event loop.
///
/// `StormHTTPClient` wraps it for async callers. The bench drives it directly from its event loop: a
/// publisher that sends, waits for the answer and schedules its next message all on the connection's
/// loop costs no thread hop per request (through the actor, each publish took four: about a tenth of
/// the machine at 20,000 publishes/s).
public final class StormHTTPConnection: Sendable {
    public let endpoint: StormEndpoint
    private let channel: any Channel

    private init(endpoint: StormEndpoint, channel: any Channel) {
        self.endpoint = endpoint
        self.channel = channel
    }

    /// Opens a connection on `eventLoop`; fails with a `StormError` an operator can act on.
    public static func connect(
        to endpoint: StormEndpoint, options: StormConnectOptions = .init(), on eventLoop: any EventLoop
    ) -> EventLoopFuture<StormHTTPConnection> {
        ClientBootstraps.connect(to: endpoint, options: options, on: eventLoop) { channel in
            channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.addHTTPClientHandlers()
                try channel.pipeline.syncOperations.addHandler(HTTPExchangeHandler())
            }
        }
        .map { StormHTTPConnection(endpoint: endpoint, channel: $0) }
    }

    public var eventLoop: any EventLoop { channel.eventLoop }
    public var isActive: Bool { channel.isActive }

    /// Sends one request; the answer, whole, arrives on the connection's loop. Past `timeout` the
    /// request fails and the connection is closed (a later answer could not be told apart). Failures
    /// are `StormError`s.
    public func send(
        method: HTTPMethod = .GET, path: String, query: [(String, String)] = [], body: [UInt8]? = nil,
        headers extraHeaders: HTTPHeaders = [:], timeout: TimeAmount = .seconds(30)
    ) -> EventLoopFuture<StormHTTPResponse> {
        var headers = HTTPHeaders()
        headers.add(name: "Host", value: endpoint.hostHeader)
        endpoint.addAuthorization(to: &headers)
        headers.add(name: "User-Agent", value: "stormctl/\(StormVersion.current)")
        if let body {
            headers.add(name: "Content-Length", value: String(body.count))
            if !extraHeaders.contains(name: "Content-Type") {
                headers.add(name: "Content-Type", value: "application/octet-stream")
            }
        } else if method == .POST || method == .PUT {
            headers.add(name: "Content-Length", value: "0")
        }
        headers.add(contentsOf: extraHeaders)
        let head = HTTPRequestHead(
            version: .http1_1, method: method, uri: makeRequestURI(path: path, query: query), headers: headers)
        let channel = self.channel
        let promise = channel.eventLoop.makePromise(of: StormHTTPResponse.self)
        let exchange = HTTPExchange(head: head, body: body.map { ByteBuffer(bytes: $0) }, response: promise)
        let timeoutTask = channel.eventLoop.scheduleTask(in: timeout) { [endpoint] in
            promise.fail(StormError(.connection, "\(endpoint) did not answer \(method) \(path) within \(timeout.nanoseconds / 1_000_000_000) s"))
            channel.close(promise: nil)
        }
        channel.writeAndFlush(exchange).whenFailure { promise.fail($0) }
        let endpoint = self.endpoint
        return promise.futureResult
            .always { _ in timeoutTask.cancel() }
            .flatMapErrorThrowing { error in throw StormError.lostConnection(error, endpoint: endpoint) }
    }

    /// `POST /publish?subject=CHANNEL`.
    public func publish(channel: ChannelName, payload: [UInt8]) -> EventLoopFuture<StormHTTPResponse> {
        send(method: .POST, path: "/publish", query: [("subject", channel.rawValue)], body: payload)
    }

    public func close() -> EventLoopFuture<Void> {
        channel.close()
    }
}

extension StormError {
    /// A request that was sent but never answered: either the connect failed or the server went away.
    static func lostConnection(_ error: any Error, endpoint: StormEndpoint) -> StormError {
        if let storm = error as? StormError { return storm }
        if errnoCode(of: error) == ECONNREFUSED { return connectionFailure(error, endpoint: endpoint) }
        if let tls = tlsFailure(error, endpoint: endpoint) { return tls }
        return StormError(.connection, "connection to \(endpoint) lost: \(error)")
    }
}

/// A request and the promise its answer fulfils.
struct HTTPExchange: Sendable {
    var head: HTTPRequestHead
    var body: ByteBuffer?
    var response: EventLoopPromise<StormHTTPResponse>
}

/// Pairs pipelined requests with their answers, in order (HTTP/1.1 answers arrive in request order).
final class HTTPExchangeHandler: ChannelDuplexHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundIn = HTTPExchange
    typealias OutboundOut = HTTPClientRequestPart

    private var waiting = CircularBuffer<EventLoopPromise<StormHTTPResponse>>(initialCapacity: 4)
    private var head: HTTPResponseHead?
    private var body: ByteBuffer?

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let exchange = Self.unwrapOutboundIn(data)
        waiting.append(exchange.response)
        context.write(Self.wrapOutboundOut(.head(exchange.head)), promise: nil)
        if let body = exchange.body, body.readableBytes > 0 {
            context.write(Self.wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        }
        context.write(Self.wrapOutboundOut(.end(nil)), promise: promise)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch Self.unwrapInboundIn(data) {
        case .head(let responseHead):
            head = responseHead
            body = nil
        case .body(var part):
            if (body?.readableBytes ?? 0) + part.readableBytes > StormHTTPClient.maximumResponseBody {
                failAll(StormError(.protocolViolation, "the server's answer is larger than \(StormHTTPClient.maximumResponseBody) bytes"))
                context.close(promise: nil)
                return
            }
            if body == nil {
                body = part
            } else {
                body?.writeBuffer(&part)
            }
        case .end:
            guard let responseHead = head else { return }
            head = nil
            let bytes = body.map { Array($0.readableBytesView) } ?? []
            body = nil
            let response = StormHTTPResponse(status: Int(responseHead.status.code), headers: responseHead.headers, body: bytes)
            waiting.popFirst()?.succeed(response)
            if !responseHead.isKeepAlive {
                context.close(promise: nil)
            }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        failAll(StormError(.connection, "the server closed the connection before answering"))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        failAll(error)
        context.close(promise: nil)
    }

    private func failAll(_ error: any Error) {
        while let promise = waiting.popFirst() {
            promise.fail(error)
        }
    }
}
