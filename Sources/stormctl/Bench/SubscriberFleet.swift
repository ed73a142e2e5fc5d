import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import StormCore

/// What the subscribers on one event loop have seen so far.
///
/// One per event loop rather than one per subscriber: ten thousand subscribers share a handful of
/// histograms, and since each is touched only from its own loop, recording needs no lock.
final class LoopTally {
    var figures = SubscriberFigures()
}

/// Counters the subscribers add up; merged across loops and across bench processes.
struct SubscriberFigures: Sendable, Codable {
    var latency = LatencyHistogram()
    var delivered: UInt64 = 0
    /// Deliveries by channel index (`--channels`); grown on first use.
    var deliveredPerChannel: [UInt64] = []
    /// Messages of another channel than the one the subscriber is on.
    var misrouted: UInt64 = 0
    var outOfOrder: UInt64 = 0
    var unreadable: UInt64 = 0
    /// Subscribers whose connection ended before the bench closed it.
    var dropped = 0
    var firstDropReason: String?
    /// Wall-clock time of the latest delivery (µs since the epoch), to compute delivered/s.
    var lastDeliveryMicros: UInt64 = 0

    /// Counts one bench delivery that arrived at `now` at a subscriber of channel `channel`: its latency,
    /// and whether it came in its publisher's order (`lastSequence`: the subscriber's last sequence number
    /// seen per publisher; publishers number their messages per channel, so on one channel they are
    /// consecutive). A message of another channel is counted as misrouted, not as delivered.
    mutating func count(
        _ fields: EnvelopeProbe.BenchFields, channel: Int, at now: UInt64, lastSequence: inout [UInt64]
    ) {
        guard fields.channel == UInt64(channel) else {
            misrouted += 1
            return
        }
        delivered += 1
        addCount(1, at: channel, to: &deliveredPerChannel)
        latency.record(now > fields.timestampMicros ? now - fields.timestampMicros : 0)
        lastDeliveryMicros = now
        guard fields.publisher < UInt64(lastSequence.count) else { return }
        let publisher = Int(fields.publisher)
        if fields.sequence <= lastSequence[publisher] {
            outOfOrder += 1
        } else {
            lastSequence[publisher] = fields.sequence
        }
    }

    mutating func merge(_ other: SubscriberFigures) {
        latency.merge(other.latency)
        delivered += other.delivered
        mergeCounts(other.deliveredPerChannel, into: &deliveredPerChannel)
        misrouted += other.misrouted
        outOfOrder += other.outOfOrder
        unreadable += other.unreadable
        dropped += other.dropped
        firstDropReason = firstDropReason ?? other.firstDropReason
        lastDeliveryMicros = max(lastDeliveryMicros, other.lastDeliveryMicros)
    }
}

extension LatencyHistogram: Codable {
    private enum Keys: String, CodingKey {
        case buckets, min, max, sum
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: Keys.self)
        try container.encode(nonEmptyBuckets.map { [UInt64($0.index), $0.count] }, forKey: .buckets)
        try container.encode(count > 0 ? min : 0, forKey: .min)
        try container.encode(max, forKey: .max)
        try container.encode(sum, forKey: .sum)
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: Keys.self)
        self.init()
        for pair in try container.decode([[UInt64]].self, forKey: .buckets) where pair.count == 2 {
            add(bucket: Int(pair[0]), count: pair[1])
        }
        setExact(
            min: try container.decode(UInt64.self, forKey: .min), max: try container.decode(UInt64.self, forKey: .max),
            sum: try container.decode(UInt64.self, forKey: .sum))
    }
}

/// The tallies of every event loop of the bench's group, each bound to its loop.
struct TallyRegistry: Sendable {
    private let tallies: [ObjectIdentifier: NIOLoopBound<LoopTally>]
    private let loops: [any EventLoop]
    /// Raw WebSocket subscribers (Linux), which count on their own threads.
    private let rawSources = NIOLockedValueBox<[RawSubscriberSource]>([])

    static func make(for group: MultiThreadedEventLoopGroup) async throws -> TallyRegistry {
        var tallies: [ObjectIdentifier: NIOLoopBound<LoopTally>] = [:]
        var loops: [any EventLoop] = []
        for loop in group.makeIterator() {
            tallies[ObjectIdentifier(loop)] = try await loop.submit { NIOLoopBound(LoopTally(), eventLoop: loop) }.get()
            loops.append(loop)
        }
        return TallyRegistry(tallies: tallies, loops: loops)
    }

    /// The tally of `loop`; only call on that loop.
    func tally(on loop: any EventLoop) -> LoopTally? {
        tallies[ObjectIdentifier(loop)]?.value
    }

    func attach(_ source: RawSubscriberSource) {
        rawSources.withLockedValue { $0.append(source) }
    }

    /// The sum over all loops, read on each loop.
    func snapshot() async -> SubscriberFigures {
        var total = SubscriberFigures()
        for source in rawSources.withLockedValue({ $0 }) { total.merge(source.figures()) }
        for loop in loops {
            guard let bound = tallies[ObjectIdentifier(loop)] else { continue }
            if let figures = try? await loop.submit({ bound.value.figures }).get() {
                total.merge(figures)
            }
        }
        return total
    }
}

/// One bench subscriber: checks every message it gets and adds it to its loop's tally.
final class BenchSubscriber: StormStreamDelegate {
    private let tally: LoopTally?
    /// Index of the subscriber's channel in the run's `BenchChannels`.
    private let channel: Int
    private let subscribed: EventLoopPromise<Void>?
    private var isSubscribed: Bool
    /// Last sequence number seen from each publisher (they number their messages from 1).
    private var lastSequence: [UInt64]

    init(tally: LoopTally?, channel: Int, publishers: Int, subscribed: EventLoopPromise<Void>?) {
        self.tally = tally
        self.channel = channel
        self.subscribed = subscribed
        self.isSubscribed = subscribed == nil
        self.lastSequence = Array(repeating: 0, count: max(1, publishers))
    }

    func streamDidReceive(text: ByteBuffer) {
        text.withUnsafeReadableBytes { handle($0) }
    }

    func streamDidReceive(event: ServerSentEvent) {
        event.data.withUnsafeBytes { handle($0) }
    }

    private func handle(_ bytes: UnsafeRawBufferPointer) {
        guard let tally else { return }
        // Nearly every frame is a bench message: read it in one pass, and only classify what is not.
        if let fields = EnvelopeProbe.benchFields(bytes) {
            return tally.figures.count(fields, channel: channel, at: unixMicrosNow(), lastSequence: &lastSequence)
        }
        switch EnvelopeProbe.kind(bytes) {
        case .message:
            tally.figures.unreadable += 1
        case .reply:
            if !isSubscribed {
                isSubscribed = true
                subscribed?.succeed()
            }
        case .error:
            let error = MessagePrinter.serverError(Array(bytes))
            if !isSubscribed {
                subscribed?.fail(error)
            }
        case .other:
            tally.figures.unreadable += 1
        }
    }

    func streamDidClose(error: StormError?) {
        subscribed?.fail(error ?? StormError(.connection, "closed before subscribing"))
        guard let error, isSubscribed, let tally else { return }
        tally.figures.dropped += 1
        if tally.figures.firstDropReason == nil { tally.figures.firstDropReason = error.message }
    }
}

/// A held subscriber connection, whatever its transport.
enum BenchConnection: Sendable {
    case webSocket(StormWebSocketClient)
    case serverSentEvents(StormSSEClient)
    /// All the raw WebSocket subscribers of this process.
    case raw(RawSubscriberSource)

    func close() {
        switch self {
        case .webSocket(let client): client.closeImmediately()
        case .serverSentEvents(let client): client.closeImmediately()
        case .raw(let source): source.stop()
        }
    }
}

/// What the bench needs of its raw subscribers: their figures, and a way to end them.
protocol RawSubscriberSource: Sendable {
    func figures() -> SubscriberFigures
    func stop()
}

/// How the connect phase went.
struct ConnectOutcome: Sendable, Codable {
    var subscribed = 0
    /// Subscribed connections by channel index; grown on first use.
    var subscribedPerChannel: [Int] = []
    var failed = 0
    var firstFailure: String?
    var seconds = 0.0
}

/// Opens and subscribes the bench's subscribers at a paced rate.
struct SubscriberFleet: Sendable {
    let endpoint: StormEndpoint
    let channels: BenchChannels
    let transport: Stormctl.Subscribe.Transport
    let count: Int
    /// Global index of this process's first subscriber, so processes spread over source addresses alike.
    let firstIndex: Int
    let sourceAddresses: Int
    let connectRate: Double
    let publishers: Int
    /// How long raw WebSocket subscribers rest between polls while traffic flows.
    let pollInterval: TimeAmount
    let group: MultiThreadedEventLoopGroup
    let registry: TallyRegistry

    static let maximumConnectsInFlight = 2048

    func sourceAddress(forSubscriber index: Int) -> String? {
        guard sourceAddresses > 1 else { return nil }
        return "127.0.0.\(1 + (firstIndex + index) % sourceAddresses)"
    }

    /// What the connect phase gathered; completed on whichever loop a connection finished on.
    private struct Gathered {
        var connections: [BenchConnection] = []
        var outcome = ConnectOutcome()
        var inFlight = 0

        /// One connection to channel `channel` finished opening: subscribed (`failure` nil) or not.
        mutating func record(raw failure: StormError?, channel: Int) {
            inFlight -= 1
            if let failure {
                outcome.failed += 1
                if outcome.firstFailure == nil { outcome.firstFailure = failure.message }
            } else {
                outcome.subscribed += 1
                addCount(1, at: channel, to: &outcome.subscribedPerChannel)
            }
        }

        mutating func record(_ result: Result<BenchConnection, any Error>, channel: Int) {
            switch result {
            case .success(let connection):
                connections.append(connection)
                record(raw: nil, channel: channel)
            case .failure(let error):
                record(raw: (error as? StormError) ?? StormError(.connection, "\(error)"), channel: channel)
            }
        }
    }

    /// Opens the connections on schedule; each one is a chain of futures on its own event loop (connect,
    /// upgrade, subscribe, reply), and this task only paces them and waits for the last.
    ///
    /// Paced in ticks of `pacingTick`, each handing every event loop its share of what fell due in one
    /// `execute`: the connects then start on their loop, where NIO registers the socket without a hop,
    /// and the pacing costs a few hundred wakeups a second instead of one timer per connection (at 6,000
    /// connections/s the per-connection sleeps and hops took a fifth of the bench's CPU).
    func connectAll() async -> ([BenchConnection], ConnectOutcome) {
        #if os(Linux)
        if transport == .ws { return await connectAllRaw() }
        #endif
        let loops = Array(group.makeIterator())
        let gathered = NIOLockedValueBox(Gathered())
        gathered.withLockedValue { $0.connections.reserveCapacity(count) }
        let seconds = await paced(gathered) { due in
            for (position, loop) in loops.enumerated() {
                let share = Array(stride(from: due.lowerBound + position, to: due.upperBound, by: loops.count))
                guard !share.isEmpty else { continue }
                loop.execute {
                    for index in share {
                        let options = StormConnectOptions(localAddress: sourceAddress(forSubscriber: index))
                        let channel = channels.channel(ofSubscriber: firstIndex + index)
                        connectOne(options: options, channel: channel, on: loop).whenComplete { result in
                            gathered.withLockedValue { $0.record(result, channel: channel) }
                        }
                    }
                }
            }
        }
        var (connections, outcome) = gathered.withLockedValue { ($0.connections, $0.outcome) }
        outcome.seconds = seconds
        return (connections, outcome)
    }

    static let pacingTick = Duration.milliseconds(5)

    /// What every bench subscriber sends once connected.
    static func subscribeRequest(to channel: ChannelName) -> String {
        #"{"id":1,"op":"subscribe","channel":"\#(channel.rawValue)"}"#
    }

    /// Hands `start` the subscribers that fell due, every `pacingTick`, keeping at most
    /// `maximumConnectsInFlight` unfinished; returns the seconds until the last one finished (every
    /// connection ends within its connect timeout, succeeded or failed).
    private func paced(_ gathered: NIOLockedValueBox<Gathered>, start: (Range<Int>) -> Void) async -> Double {
        let schedule = RateSchedule(rate: connectRate, total: count)
        let clock = ContinuousClock()
        let began = clock.now
        var next = 0
        while next < count {
            let elapsed = began.duration(to: clock.now)
            let elapsedNanoseconds = elapsed.components.seconds * 1_000_000_000 + elapsed.components.attoseconds / 1_000_000_000
            let room = Self.maximumConnectsInFlight - gathered.withLockedValue { $0.inFlight }
            var due = next
            while due < count, due - next < room, schedule.dueOffsetNanoseconds(ofMessage: due) <= elapsedNanoseconds {
                due += 1
            }
            if due > next {
                gathered.withLockedValue { $0.inFlight += due - next }
                start(next..<due)
                next = due
            }
            if next < count { try? await Task.sleep(for: Self.pacingTick) }
        }
        while gathered.withLockedValue({ $0.inFlight }) > 0 {
            try? await Task.sleep(for: .milliseconds(5))
        }
        let elapsed = began.duration(to: clock.now)
        return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    }

    #if os(Linux)
    /// `connectAll` for WebSocket subscribers on Linux: the same pacing, handing each tick's connects to
    /// the raw subscriber threads (see `RawSubscriberLoops` for why they are not NIO channels).
    private func connectAllRaw() async -> ([BenchConnection], ConnectOutcome) {
        let gathered = NIOLockedValueBox(Gathered())
        let loops: RawSubscriberLoops
        do {
            loops = try RawSubscriberLoops(
                threads: System.coreCount, endpoint: endpoint, channels: channels, publishers: publishers,
                connectTimeout: StormConnectOptions().connectTimeout, pollInterval: pollInterval
            ) { failure, channel in
                gathered.withLockedValue { $0.record(raw: failure, channel: channel) }
            }
        } catch {
            return ([], ConnectOutcome(subscribed: 0, failed: count, firstFailure: error.message, seconds: 0))
        }
        registry.attach(loops)
        let seconds = await paced(gathered) { due in
            for position in 0..<loops.count {
                let share = stride(from: due.lowerBound + position, to: due.upperBound, by: loops.count).map {
                    RawSubscriberLoops.Connect(
                        sourceAddress: sourceAddress(forSubscriber: $0), channel: channels.channel(ofSubscriber: firstIndex + $0))
                }
                if !share.isEmpty { loops.connect(loop: position, share) }
            }
        }
        var outcome = gathered.withLockedValue { $0.outcome }
        outcome.seconds = seconds
        return ([.raw(loops)], outcome)
    }
    #endif

    private func connectOne(
        options: StormConnectOptions, channel channelIndex: Int, on loop: any EventLoop
    ) -> EventLoopFuture<BenchConnection> {
        let channel = channels.names[channelIndex]
        let registry = self.registry
        let publishers = self.publishers
        switch transport {
        case .ws:
            let subscribed = loop.makePromise(of: Void.self)
            let request = Self.subscribeRequest(to: channel)
            return StormWebSocketClient.connecting(to: endpoint, options: options, on: loop) { loop in
                BenchSubscriber(
                    tally: registry.tally(on: loop), channel: channelIndex, publishers: publishers, subscribed: subscribed)
            }
            .flatMapError { error in
                subscribed.fail(error)
                return loop.makeFailedFuture(error)
            }
            .flatMap { client in
                client.sendWithoutWaiting(text: request)
                let timeout = loop.scheduleTask(in: options.connectTimeout) {
                    subscribed.fail(StormError(.connection, "no reply to subscribe within the connect timeout"))
                }
                return subscribed.futureResult
                    .always { _ in timeout.cancel() }
                    .map { BenchConnection.webSocket(client) }
                    .flatMapError { error in
                        client.closeImmediately()
                        return loop.makeFailedFuture(error)
                    }
            }
        case .sse:
            let connected = loop.makePromise(of: BenchConnection.self)
            let endpoint = self.endpoint
            let group = self.group
            connected.completeWithTask {
                let client = try await StormSSEClient.connect(
                    to: endpoint, channels: [channel], options: options, group: group
                ) { loop in
                    BenchSubscriber(tally: registry.tally(on: loop), channel: channelIndex, publishers: publishers, subscribed: nil)
                }
                return .serverSentEvents(client)
            }
            return connected.futureResult
        }
    }
}
