import ArgumentParser
import NIOCore
import NIOPosix
import StormCore

/// What the publishers did.
struct PublishFigures: Sendable, Codable {
    var roundTrip = LatencyHistogram()
    var accepted = 0
    /// Accepted messages by channel index.
    var acceptedPerChannel: [Int] = []
    var failed = 0
    /// Messages the schedule had no time left for.
    var skipped = 0
    var firstFailure: String?
    var seconds = 0.0

    mutating func merge(_ other: PublishFigures) {
        roundTrip.merge(other.roundTrip)
        accepted += other.accepted
        mergeCounts(other.acceptedPerChannel, into: &acceptedPerChannel)
        failed += other.failed
        skipped += other.skipped
        firstFailure = firstFailure ?? other.firstFailure
    }
}

/// How the publishers reach the gateway (`--publish-over`).
enum PublishTransport: String, CaseIterable, Sendable, Codable {
    /// `POST /publish` on a kept-alive HTTP/1.1 connection.
    case http
    /// The WebSocket `publish` op on `/ws` (docs/protocol.md), one connection per publisher.
    case ws
}

/// Publishes the bench's messages over a few kept-alive connections (HTTP or WebSocket) at a steady
/// total rate, message `m` of the schedule to channel `m % channels.count`.
///
/// Each publisher waits for the gateway's answer (HTTP 200, or the WebSocket reply) before its next
/// message, so its own sequence numbers are accepted in order and any reordering a subscriber sees is the
/// gateway's doing. A publisher numbers its messages per channel from 1, so a subscriber of one channel
/// sees each publisher's numbers consecutively.
struct PublisherPool {
    let endpoint: StormEndpoint
    let channels: BenchChannels
    let transport: PublishTransport
    let publishers: Int
    let schedule: RateSchedule
    let payloadSize: Int
    let duration: Duration
    let group: MultiThreadedEventLoopGroup

    /// `{"p":0,"c":3,"seq":12,"pad":"xxxx"}`, padded to `size` bytes when it is larger than the fields.
    static func payload(publisher: Int, channel: Int, sequence: Int, size: Int) -> [UInt8] {
        var bytes = Array(#"{"p":\#(publisher),"c":\#(channel),"seq":\#(sequence),"pad":""#.utf8)
        let padding = max(0, size - bytes.count - 2)
        bytes.append(contentsOf: repeatElement(UInt8(ascii: "x"), count: padding))
        bytes.append(contentsOf: Array(#""}"#.utf8))
        return bytes
    }

    func run() async -> PublishFigures {
        let start = NIODeadline.now()
        // Anything not sent by the end of the run plus a second of grace is skipped, not sent late.
        let cutoff = start + .nanoseconds(Int64(duration.components.seconds) * 1_000_000_000 + duration.components.attoseconds / 1_000_000_000) + .seconds(1)
        var finished: [EventLoopFuture<PublishFigures>] = []
        for publisher in 0..<publishers {
            let loop = group.next()
            let promise = loop.makePromise(of: PublishFigures.self)
            let messages = schedule.messages(forSender: publisher, of: publishers)
            loop.execute {
                Publisher(
                    pool: self, index: publisher, messages: messages, start: start, cutoff: cutoff, loop: loop,
                    finished: promise
                ).next()
            }
            finished.append(promise.futureResult)
        }
        var total = PublishFigures()
        for future in finished {
            if let figures = try? await future.get() { total.merge(figures) }
        }
        let elapsed = NIODeadline.now() - start
        total.seconds = Double(elapsed.nanoseconds) / 1e9
        return total
    }
}

/// One publisher: sends a message when it is due, waits for the gateway's answer, then goes on to the
/// next, all on its event loop (no task, timer thread or actor per message: at 20,000 publishes/s the
/// hops of an async loop cost the bench a tenth of the machine). Used only on `loop`.
private final class Publisher {
    private let pool: PublisherPool
    private let index: Int
    private var messages: StrideTo<Int>.Iterator
    private let start: NIODeadline
    private let cutoff: NIODeadline
    private let loop: any EventLoop
    private let finished: EventLoopPromise<PublishFigures>
    private var connection: PublishLink?
    private var figures = PublishFigures()
    /// Last sequence number sent on each channel.
    private var sequences: [Int] = []

    init(
        pool: PublisherPool, index: Int, messages: StrideTo<Int>, start: NIODeadline, cutoff: NIODeadline,
        loop: any EventLoop, finished: EventLoopPromise<PublishFigures>
    ) {
        self.pool = pool
        self.index = index
        self.messages = messages.makeIterator()
        self.start = start
        self.cutoff = cutoff
        self.loop = loop
        self.finished = finished
    }

    /// Sends the next message now or when it falls due; completes `finished` after the last.
    func next() {
        guard let message = messages.next() else { return finish() }
        let channel = pool.channels.channel(ofMessage: message)
        let now = NIODeadline.now()
        if now > cutoff {
            figures.skipped += 1
            // Skipping is bookkeeping only: go on without deepening the stack.
            return loop.assumeIsolated().execute { self.next() }
        }
        let due = start + .nanoseconds(pool.schedule.dueOffsetNanoseconds(ofMessage: message))
        if due > now {
            loop.assumeIsolated().scheduleTask(deadline: due) { self.send(channel: channel) }
        } else {
            send(channel: channel)
        }
    }

    private func send(channel: Int) {
        addCount(1, at: channel, to: &sequences)
        let payload = PublisherPool.payload(
            publisher: index, channel: channel, sequence: sequences[channel], size: pool.payloadSize)
        let sent = NIODeadline.now()
        let name = pool.channels.names[channel]
        openConnection()
            .flatMap { $0.publish(channel: name, payload: payload) }
            .assumeIsolated()
            .whenComplete { result in
                switch result {
                case .success:
                    self.figures.roundTrip.record(UInt64(max(0, (NIODeadline.now() - sent).nanoseconds / 1_000)))
                    self.figures.accepted += 1
                    addCount(1, at: channel, to: &self.figures.acceptedPerChannel)
                case .failure(let error):
                    self.fail((error as? StormError) ?? StormError(.connection, "\(error)"))
                }
                // An answer arrives from the socket, so this does not nest; a failure may not have.
                self.loop.assumeIsolated().execute { self.next() }
            }
    }

    private func fail(_ error: StormError) {
        figures.failed += 1
        if figures.firstFailure == nil { figures.firstFailure = error.message }
    }

    /// The kept-alive connection, reopened if the gateway closed it.
    private func openConnection() -> EventLoopFuture<PublishLink> {
        if let connection, connection.isActive { return loop.makeSucceededFuture(connection) }
        connection = nil
        return PublishLink.connect(over: pool.transport, to: pool.endpoint, on: loop).assumeIsolated().map { connection in
            self.connection = connection
            return connection
        }.nonisolated()
    }

    private func finish() {
        connection?.close()
        finished.succeed(figures)
    }
}

/// One publisher's connection: HTTP or WebSocket, one request in flight at a time.
enum PublishLink: Sendable {
    case http(StormHTTPConnection)
    case webSocket(StormWebSocketClient, NIOLoopBound<WebSocketPublishReplies>)

    static func connect(
        over transport: PublishTransport, to endpoint: StormEndpoint, on loop: any EventLoop
    ) -> EventLoopFuture<PublishLink> {
        switch transport {
        case .http:
            return StormHTTPConnection.connect(to: endpoint, on: loop).map { .http($0) }
        case .ws:
            // Made on `loop`, where the delegate factory runs and where the publisher uses it.
            let replies = NIOLoopBound(WebSocketPublishReplies(), eventLoop: loop)
            return StormWebSocketClient.connecting(to: endpoint, on: loop) { _ in replies.value }
                .map { .webSocket($0, replies) }
        }
    }

    var isActive: Bool {
        switch self {
        case .http(let connection): connection.isActive
        case .webSocket(let client, _): client.channel.isActive
        }
    }

    /// Succeeds once the gateway accepted the message (HTTP 2xx or 3xx, or the WebSocket reply), fails
    /// with the gateway's error otherwise. Call on the connection's loop.
    func publish(channel: ChannelName, payload: [UInt8]) -> EventLoopFuture<Void> {
        switch self {
        case .http(let connection):
            return connection.publish(channel: channel, payload: payload).flatMapThrowing { response in
                guard response.status < 400 else { throw StormError(httpStatus: response.status, body: response.body) }
            }
        case .webSocket(let client, let replies):
            return replies.value.publish(channel: channel, payload: payload, on: client)
        }
    }

    func close() {
        switch self {
        case .http(let connection): connection.close().whenComplete { _ in }
        case .webSocket(let client, _): client.closeImmediately()
        }
    }
}

/// The WebSocket publisher's side of the protocol: sends `{"id":N,"op":"publish",…}` and completes the
/// request when the reply (or error) with its id arrives. Used only on its connection's loop.
final class WebSocketPublishReplies: StormStreamDelegate {
    private var nextID: UInt64 = 0
    private var pending: (id: UInt64, promise: EventLoopPromise<Void>)?
    private var closed: StormError?

    /// `payload` must be JSON (the bench's payloads are): it is sent as `data` and delivered as is.
    func publish(channel: ChannelName, payload: [UInt8], on client: StormWebSocketClient) -> EventLoopFuture<Void> {
        let loop = client.channel.eventLoop
        if let closed { return loop.makeFailedFuture(closed) }
        guard pending == nil else {
            return loop.makeFailedFuture(StormError(.internalError, "a WebSocket publisher sent a second request before the first was answered"))
        }
        nextID += 1
        let promise = loop.makePromise(of: Void.self)
        pending = (nextID, promise)
        var request = Array(#"{"id":\#(nextID),"op":"publish","channel":"\#(channel.rawValue)","data":"#.utf8)
        request.append(contentsOf: payload)
        request.append(UInt8(ascii: "}"))
        client.sendWithoutWaiting(text: String(decoding: request, as: UTF8.self))
        return promise.futureResult
    }

    func streamDidReceive(text: ByteBuffer) {
        text.withUnsafeReadableBytes { bytes in
            switch EnvelopeProbe.kind(bytes) {
            case .reply:
                guard let pending, Self.id(in: bytes) == pending.id else { return }
                self.pending = nil
                pending.promise.succeed()
            case .error:
                guard let pending else { return }
                let id = Self.id(in: bytes)
                // An error without an id (the request could not be read) answers the one request in flight.
                guard id == nil || id == pending.id else { return }
                self.pending = nil
                pending.promise.fail(MessagePrinter.serverError(Array(bytes)))
            case .message, .other:
                break
            }
        }
    }

    func streamDidClose(error: StormError?) {
        let reason = error ?? StormError(.connection, "the WebSocket closed before the publish was answered")
        closed = reason
        if let pending {
            self.pending = nil
            pending.promise.fail(reason)
        }
    }

    /// The numeric `id` of a reply or error frame.
    private static func id(in bytes: UnsafeRawBufferPointer) -> UInt64? {
        EnvelopeProbe.requestID(bytes)
    }
}

extension PublishTransport: ExpressibleByArgument {}
