import NIOCore
import NIOHTTP1
import NIOPosix

/// A Server-Sent Events subscription: `GET /events?subject=A&subject=B`, read as a `text/event-stream`.
///
/// Events go to a `StormStreamDelegate` on the connection's event loop as they complete; the only state
/// kept is the parser's current line and event.
public final class StormSSEClient: Sendable {
    public let channel: any Channel
    public let endpoint: StormEndpoint

    private init(channel: any Channel, endpoint: StormEndpoint) {
        self.channel = channel
        self.endpoint = endpoint
    }

    /// Connects and returns once the server answered `200` (its subscriptions are then in place).
    ///
    /// - Throws: `StormError(.connection)` when the server cannot be reached; the server's own error for
    ///   an HTTP error answer (an invalid channel name, for instance).
    public static func connect(
        to endpoint: StormEndpoint, channels: [ChannelName], options: StormConnectOptions = .init(),
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        delegate makeDelegate: @escaping StormStreamDelegateFactory
    ) async throws(StormError) -> StormSSEClient {
        let bootstrap = try ClientBootstraps.make(group: group, options: options)
        let address = try endpoint.socketAddress()
        let connected: (any Channel, EventLoopFuture<Void>)
        do {
            connected = try await bootstrap.connect(to: address) { channel in
                channel.eventLoop.makeCompletedFuture {
                    let ready = channel.eventLoop.makePromise(of: Void.self)
                    try ClientBootstraps.addTLS(to: channel, endpoint: endpoint)
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(
                        EventStreamHandler(delegate: makeDelegate(channel.eventLoop), ready: ready))
                    return (channel, ready.futureResult)
                }
            }
        } catch {
            throw StormError.connectionFailure(error, endpoint: endpoint)
        }
        let (channel, ready) = connected
        var headers = HTTPHeaders()
        headers.add(name: "Host", value: endpoint.hostHeader)
        endpoint.addAuthorization(to: &headers)
        headers.add(name: "Accept", value: "text/event-stream")
        let uri = makeRequestURI(path: "/events", query: channels.map { ("subject", $0.rawValue) })
        channel.write(HTTPClientRequestPart.head(HTTPRequestHead(version: .http1_1, method: .GET, uri: uri, headers: headers)), promise: nil)
        channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
        let timeout = channel.eventLoop.scheduleTask(in: options.connectTimeout) { channel.close(promise: nil) }
        defer { timeout.cancel() }
        do {
            try await ready.get()
        } catch {
            channel.close(promise: nil)
            throw StormError.lostConnection(error, endpoint: endpoint)
        }
        return StormSSEClient(channel: channel, endpoint: endpoint)
    }

    /// Ends the stream (SSE has no close handshake: the client just hangs up).
    public func close() async {
        try? await channel.close()
    }

    public func closeImmediately() {
        channel.close(promise: nil)
    }
}

/// Reads the SSE response: an error answer becomes the server's `StormError`; a `200` body is parsed
/// into events.
final class EventStreamHandler: ChannelDuplexHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundIn = HTTPClientRequestPart
    typealias OutboundOut = HTTPClientRequestPart

    private enum State {
        case awaitingHead
        case refused(status: Int, body: [UInt8])
        case streaming
        case finished
    }

    private let delegate: any StormStreamDelegate
    private let ready: EventLoopPromise<Void>
    private var parser = ServerSentEventParser()
    private var state = State.awaitingHead
    private var closeError: StormError?
    private var closingOnPurpose = false

    init(delegate: any StormStreamDelegate, ready: EventLoopPromise<Void>) {
        self.delegate = delegate
        self.ready = ready
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch (Self.unwrapInboundIn(data), state) {
        case (.head(let head), .awaitingHead):
            if head.status == .ok {
                state = .streaming
                ready.succeed()
            } else {
                state = .refused(status: Int(head.status.code), body: [])
            }
        case (.body(let part), .refused(let status, var body)):
            if body.count < 4096 { body.append(contentsOf: part.readableBytesView.prefix(4096 - body.count)) }
            state = .refused(status: status, body: body)
        case (.body(let part), .streaming):
            let delegate = self.delegate
            do {
                try parser.feed(part.readableBytesView) { delegate.streamDidReceive(event: $0) }
            } catch {
                closeError = StormError(.protocolViolation, "the event stream has a line longer than \(parser.maximumLineLength) bytes")
                context.close(promise: nil)
            }
        case (.end, .refused(let status, let body)):
            state = .finished
            let error = StormError(httpStatus: status, body: body)
            closeError = error
            ready.fail(error)
            context.close(promise: nil)
        case (.end, .streaming):
            state = .finished
            closeError = StormError(.connection, "the server ended the event stream")
            context.close(promise: nil)
        default:
            break
        }
    }

    /// Only closes asked for from outside the pipeline pass here: the owner hanging up is a clean end.
    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        closingOnPurpose = true
        context.close(mode: mode, promise: promise)
    }

    func channelInactive(context: ChannelHandlerContext) {
        ready.fail(closeError ?? StormError(.connection, "the connection closed before the event stream started"))
        if case .streaming = state {
            closeError = closeError ?? StormError(.connection, "connection lost")
        }
        // Hanging up ourselves makes the HTTP decoder report a truncated body: that is not a failure.
        delegate.streamDidClose(error: closingOnPurpose ? nil : closeError)
        context.fireChannelInactive()
    }

    /// A connect that fails tears the pipeline down without the channel ever going active.
    func handlerRemoved(context: ChannelHandlerContext) {
        ready.fail(closeError ?? StormError(.connection, "the connection closed before the event stream started"))
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if closeError == nil {
            closeError = (error as? StormError) ?? StormError(.connection, "connection failed: \(error)")
        }
        context.close(promise: nil)
    }
}
