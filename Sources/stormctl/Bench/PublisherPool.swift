import NIOCore
import NIOPosix
import StormCore

/// What the publishers did.
struct PublishFigures: Sendable, Codable {
    var roundTrip = LatencyHistogram()
    var accepted = 0
    var failed = 0
    /// Messages the schedule had no time left for.
    var skipped = 0
    var firstFailure: String?
    var seconds = 0.0

    mutating func merge(_ other: PublishFigures) {
        roundTrip.merge(other.roundTrip)
        accepted += other.accepted
        failed += other.failed
        skipped += other.skipped
        firstFailure = firstFailure ?? other.firstFailure
    }
}

/// Publishes the bench's messages over a few keep-alive HTTP connections at a steady total rate.
///
/// Each publisher waits for the gateway's 200 before its next message, so its own sequence numbers are
/// accepted in order and any reordering a subscriber sees is the gateway's doing.
struct PublisherPool {
    let endpoint: StormEndpoint
    let channel: ChannelName
    let publishers: Int
    let schedule: RateSchedule
    let payloadSize: Int
    let duration: Duration
    let group: MultiThreadedEventLoopGroup

    /// `{"p":0,"seq":12,"pad":"xxxx"}`, padded to `size` bytes when it is larger than the fields.
    static func payload(publisher: Int, sequence: Int, size: Int) -> [UInt8] {
        var bytes = Array(#"{"p":\#(publisher),"seq":\#(sequence),"pad":""#.utf8)
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
    private var connection: StormHTTPConnection?
    private var figures = PublishFigures()
    private var sequence = 0

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
        sequence += 1
        let now = NIODeadline.now()
        if now > cutoff {
            figures.skipped += 1
            // Skipping is bookkeeping only: go on without deepening the stack.
            return loop.assumeIsolated().execute { self.next() }
        }
        let due = start + .nanoseconds(pool.schedule.dueOffsetNanoseconds(ofMessage: message))
        if due > now {
            loop.assumeIsolated().scheduleTask(deadline: due) { self.send() }
        } else {
            send()
        }
    }

    private func send() {
        let payload = PublisherPool.payload(publisher: index, sequence: sequence, size: pool.payloadSize)
        let sent = NIODeadline.now()
        let channel = pool.channel
        openConnection()
            .flatMap { $0.publish(channel: channel, payload: payload) }
            .assumeIsolated()
            .whenComplete { result in
                switch result {
                case .success(let response) where response.status < 400:
                    self.figures.roundTrip.record(UInt64(max(0, (NIODeadline.now() - sent).nanoseconds / 1_000)))
                    self.figures.accepted += 1
                case .success(let response):
                    self.fail(StormError(httpStatus: response.status, body: response.body))
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
    private func openConnection() -> EventLoopFuture<StormHTTPConnection> {
        if let connection, connection.isActive { return loop.makeSucceededFuture(connection) }
        connection = nil
        return StormHTTPConnection.connect(to: pool.endpoint, on: loop).assumeIsolated().map { connection in
            self.connection = connection
            return connection
        }.nonisolated()
    }

    private func finish() {
        connection?.close().whenComplete { _ in }
        finished.succeed(figures)
    }
}
