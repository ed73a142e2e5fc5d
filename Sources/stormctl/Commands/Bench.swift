import ArgumentParser
import Foundation
import NIOCore
import NIOPosix
import StormCore

extension Stormctl {
    /// `stormctl bench`: many subscribers, a paced publisher, and what arrived how fast.
    struct Bench: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Load-test the gateway: hold N subscribers, publish at R msg/s, measure delivery.",
            discussion: """
                Connects and subscribes every subscriber first (counting failures), then publishes --rate messages per second for --duration seconds with POST /publish (or the WebSocket publish op: --publish-over ws). Every subscriber checks each message: deliveries, per-publisher order, and latency from the envelope's ts (the time the gateway accepted the message) to arrival. The run is bounded: connect time + duration + 10 s to drain, then it reports and exits.

                With --channels N the subscribers are spread round robin over N channels (CHANNEL.0 … CHANNEL.N-1) and so are the messages; each subscriber expects exactly the messages accepted on its own channel, in order, and losses are counted channel by channel.

                One process holds at most ~19,900 sockets (open-file limit) and one source address ~28,000 connections to the gateway (fewer keep connect() cheap): past those, use --processes; --source-addresses defaults to one address per 5,000 subscribers.

                Examples:
                  stormctl bench
                  stormctl bench --subscribers 10000 --rate 50 --duration 30
                  stormctl bench --subscribers 50000 --processes 4 --source-addresses 4 --json
                  stormctl bench --transport sse --subscribers 2000
                  stormctl bench --subscribers 20000 --channels 2000 --rate 20000 --publishers 64 --publish-over ws --processes 2

                Exits 0 when every subscriber connected and every message reached every subscriber in
                order; 1 when the run completed with losses or failures; 69 when nothing could connect.

                \(ExitStatus.helpText)
                """
        )

        @OptionGroup var global: GlobalOptions

        @Option(name: .long, help: "Subscribers to connect.")
        var subscribers = 1000

        @Option(name: .long, help: "ws or sse.")
        var transport: Subscribe.Transport = .ws

        @Option(name: .long, help: "Channel to use, or the prefix of the channels with --channels (default: bench.<random>).")
        var channel: String?

        @Option(name: .long, help: "Channels to spread subscribers and messages over, round robin.")
        var channels = 1

        @Option(name: .customLong("publish-over"), help: "http (POST /publish) or ws (the WebSocket publish op).")
        var publishOver: PublishTransport = .http

        @Option(name: .long, help: "Total publish rate, messages per second.")
        var rate: Double = 100

        @Option(name: .long, help: "Seconds to publish for.")
        var duration: Double = 10

        @Option(name: .customLong("payload-size"), help: "Payload bytes per message.")
        var payloadSize = 64

        @Option(name: .long, help: "Kept-alive connections publishing in parallel, one message in flight each.")
        var publishers = 4

        @Option(
            name: .customLong("source-addresses"),
            help: "Spread connections over 127.0.0.1…127.0.0.K (default: one per 5,000 subscribers).")
        var sourceAddresses: Int?

        @Option(name: .customLong("connect-rate"), help: "New connections per second.")
        var connectRate: Double = 5000

        @Option(name: .long, help: "Subscriber processes (each holds subscribers/M).")
        var processes = 1

        @Option(
            name: .customLong("poll-interval"),
            help: "WebSocket subscribers: milliseconds to rest between polls of their sockets while messages flow (0: wake for each readable socket).")
        var pollInterval: Double = 0.5

        @Flag(name: .customLong("subscriber-only"), help: .hidden)
        var subscriberOnly = false

        @Option(name: .customLong("first-index"), help: .hidden)
        var firstIndex = 0

        static let drainSeconds = 10.0

        func validate() throws {
            if subscribers < 0 { throw ValidationError("--subscribers must not be negative") }
            if !(rate > 0) || !rate.isFinite { throw ValidationError("--rate must be a positive number") }
            if !(duration > 0) || !duration.isFinite { throw ValidationError("--duration must be a positive number") }
            if payloadSize < 0 || payloadSize > 1 << 20 { throw ValidationError("--payload-size must be 0…1048576") }
            if publishers < 1 { throw ValidationError("--publishers must be at least 1") }
            if !(1...BenchChannels.maximumCount).contains(channels) {
                throw ValidationError("--channels must be 1…\(BenchChannels.maximumCount)")
            }
            if let sourceAddresses, !(1...254).contains(sourceAddresses) {
                throw ValidationError("--source-addresses must be 1…254")
            }
            if !(connectRate > 0) { throw ValidationError("--connect-rate must be positive") }
            if processes < 1 || processes > 64 { throw ValidationError("--processes must be 1…64") }
            if !(0...100).contains(pollInterval) { throw ValidationError("--poll-interval must be 0…100 ms") }
        }

        /// One source address per 5,000 subscribers by default, far below the ~28,000 ephemeral ports of
        /// each: the kernel looks for a free port by walking the used ones, and with 20,000 connections per
        /// address that walk made each `connect()` cost milliseconds (the 100k ramp stalled near 70k).
        var effectiveSourceAddresses: Int {
            sourceAddresses ?? min(254, max(1, (subscribers + 4_999) / 5_000))
        }

        func run() async throws {
            try await reportingFailures {
                let endpoint = try global.endpoint()
                let channelName = try BenchChannels(
                    base: ChannelName(validating: channel ?? "bench.\(UInt32.random(in: 0...UInt32.max))"), count: channels)
                let fileLimit = raiseOpenFileLimit()
                let perProcess = (subscribers + processes - 1) / processes
                if !subscriberOnly, perProcess + publishers + 64 > fileLimit {
                    StandardError.write(
                        "stormctl: warning: \(perProcess) subscribers per process exceed the open-file limit (\(fileLimit)); use --processes\n")
                }
                let group = MultiThreadedEventLoopGroup(numberOfThreads: System.coreCount)
                let outcome: Result<BenchReport?, any Error>
                do {
                    if subscriberOnly {
                        try await runSubscriberChild(endpoint: endpoint, channel: channelName, group: group)
                        outcome = .success(nil)
                    } else {
                        outcome = .success(try await runParent(endpoint: endpoint, channel: channelName, group: group))
                    }
                } catch {
                    outcome = .failure(error)
                }
                try? await group.shutdownGracefully()
                guard let report = try outcome.get() else { return }
                StandardOutput.write(global.json ? report.json() : report.table())
                if report.subscribersConnected == 0, report.published == 0, report.subscribersRequested > 0 {
                    throw ExitCode(ExitStatus.unavailable)  // nothing reached the gateway at all
                }
                if !report.isClean { throw ExitCode(1) }
            }
        }

        private func fleet(
            endpoint: StormEndpoint, channel: BenchChannels, count: Int, firstIndex: Int, connectRate: Double,
            group: MultiThreadedEventLoopGroup, registry: TallyRegistry
        ) -> SubscriberFleet {
            SubscriberFleet(
                endpoint: endpoint, channels: channel, transport: transport, count: count, firstIndex: firstIndex,
                sourceAddresses: effectiveSourceAddresses, connectRate: connectRate, publishers: publishers,
                pollInterval: .nanoseconds(Int64(pollInterval * 1e6)), group: group, registry: registry)
        }

        private func runParent(
            endpoint: StormEndpoint, channel: BenchChannels, group: MultiThreadedEventLoopGroup
        ) async throws -> BenchReport {
            var connect = ConnectOutcome()
            var figures = SubscriberFigures()
            var connections: [BenchConnection] = []
            var registry: TallyRegistry?
            var children: ChildFleet?
            /// Each child's subscribers by channel, to tell it how many deliveries to wait for.
            var childSubscribed: [[Int]] = []
            if processes == 1 {
                let tallies = try await TallyRegistry.make(for: group)
                registry = tallies
                (connections, connect) = await fleet(
                    endpoint: endpoint, channel: channel, count: subscribers, firstIndex: 0,
                    connectRate: connectRate, group: group, registry: tallies
                ).connectAll()
            } else {
                let fleet = try ChildFleet(count: processes) { index in
                    childArguments(index: index, endpoint: endpoint, channel: channel)
                }
                children = fleet
                for message in await fleet.collect(.ready) {
                    childSubscribed.append(message?.connect.subscribedPerChannel ?? [])
                    guard let message else {
                        connect.failed += subscribers / processes
                        connect.firstFailure = connect.firstFailure ?? "a bench child process exited before connecting"
                        continue
                    }
                    connect.subscribed += message.connect.subscribed
                    mergeCounts(message.connect.subscribedPerChannel, into: &connect.subscribedPerChannel)
                    connect.failed += message.connect.failed
                    connect.firstFailure = connect.firstFailure ?? message.connect.firstFailure
                    connect.seconds = max(connect.seconds, message.connect.seconds)
                }
            }

            let cpuAtStart = processCPUSeconds()
            let wallAtStart = ContinuousClock.now
            let publishStartMicros = unixMicrosNow()
            children?.send("start")
            let schedule = RateSchedule(rate: rate, duration: duration)
            let publishing = await PublisherPool(
                endpoint: endpoint, channels: channel, transport: publishOver, publishers: publishers, schedule: schedule,
                payloadSize: payloadSize, duration: .nanoseconds(Int64(duration * 1e9)), group: group
            ).run()
            let publishEndMicros = unixMicrosNow()

            let expected = BenchChannels.expectation(
                accepted: publishing.acceptedPerChannel, subscribed: connect.subscribedPerChannel, delivered: []
            ).expected
            var childCPU = 0.0
            if let registry {
                let clock = ContinuousClock()
                let drainEnd = clock.now + .nanoseconds(Int64(Self.drainSeconds * 1e9))
                figures = await registry.snapshot()
                while figures.delivered < expected, clock.now < drainEnd {
                    try? await Task.sleep(for: .milliseconds(100))
                    figures = await registry.snapshot()
                }
                for connection in connections { connection.close() }
                figures = await registry.snapshot()
            } else if let children {
                for (index, subscribed) in childSubscribed.enumerated() {
                    let expected = BenchChannels.expectation(
                        accepted: publishing.acceptedPerChannel, subscribed: subscribed, delivered: []
                    ).expected
                    children.send("drain \(expected) \(Self.drainSeconds)", to: index)
                }
                for message in await children.collect(.finished) {
                    guard let message else { continue }
                    if let childFigures = message.figures { figures.merge(childFigures) }
                    childCPU += message.cpuSeconds ?? 0
                }
                children.finish()
            }
            let wall = wallAtStart.duration(to: .now)
            let wallSeconds = Double(wall.components.seconds) + Double(wall.components.attoseconds) / 1e18
            let cpuSeconds = processCPUSeconds() - cpuAtStart + childCPU
            let outcome = BenchChannels.expectation(
                accepted: publishing.acceptedPerChannel, subscribed: connect.subscribedPerChannel,
                delivered: figures.deliveredPerChannel)
            let deliveryWindow = Double(figures.lastDeliveryMicros > publishStartMicros ? figures.lastDeliveryMicros - publishStartMicros : 0) / 1e6

            return BenchReport(
                server: endpoint.description, transport: transport.rawValue, publishOver: publishOver.rawValue,
                channel: channel.count == 1 ? channel.names[0].rawValue : "\(channel.names[0].rawValue)…\(channel.names[channel.count - 1].rawValue)",
                channels: channel.count,
                processes: processes, subscribersRequested: subscribers, subscribersConnected: connect.subscribed,
                subscribersFailed: connect.failed, subscribersDropped: figures.dropped,
                connectSeconds: (connect.seconds * 100).rounded() / 100, firstConnectError: connect.firstFailure,
                firstDropReason: figures.firstDropReason, publishRate: rate, durationSeconds: duration,
                payloadSize: payloadSize, publishers: publishers, published: publishing.accepted,
                publishFailed: publishing.failed, publishSkipped: publishing.skipped,
                firstPublishError: publishing.firstFailure, publishRoundTrip: .init(publishing.roundTrip),
                expectedDeliveries: expected, delivered: figures.delivered,
                lost: outcome.lost, channelsWithLoss: outcome.channelsWithLoss, misrouted: figures.misrouted,
                outOfOrder: figures.outOfOrder, unreadable: figures.unreadable,
                deliveredPerSecond: deliveryWindow > 0 ? (Double(figures.delivered) / deliveryWindow).rounded() : 0,
                latency: .init(figures.latency),
                publishEndedUnixMs: Double(publishEndMicros / 1_000),
                benchCPUPercent: wallSeconds > 0 ? (cpuSeconds / wallSeconds * 1000).rounded() / 10 : 0)
        }

        /// Child `index` holds subscribers [first, first + count) of the whole run.
        private func childArguments(index: Int, endpoint: StormEndpoint, channel: BenchChannels) -> [String] {
            let base = subscribers / processes
            let extra = subscribers % processes
            let count = base + (index < extra ? 1 : 0)
            let first = index * base + min(index, extra)
            return [
                "bench", "--subscriber-only", "--server", endpoint.description, "--channel", baseChannel(channel),
                "--channels", String(channel.count),
                "--transport", transport.rawValue, "--subscribers", String(count), "--first-index", String(first),
                "--source-addresses", String(effectiveSourceAddresses), "--publishers", String(publishers),
                "--connect-rate", String(connectRate / Double(processes)), "--poll-interval", String(pollInterval),
            ]
        }

        /// The `--channel` that gives these channels: the name itself, or the prefix of `PREFIX.0`….
        private func baseChannel(_ channels: BenchChannels) -> String {
            let first = channels.names[0].rawValue
            guard channels.count > 1, first.hasSuffix(".0") else { return first }
            return String(first.dropLast(2))
        }

        /// A child of `--processes M`: connect, report `ready`, then follow the parent's commands.
        private func runSubscriberChild(
            endpoint: StormEndpoint, channel: BenchChannels, group: MultiThreadedEventLoopGroup
        ) async throws {
            let registry = try await TallyRegistry.make(for: group)
            let (connections, connect) = await fleet(
                endpoint: endpoint, channel: channel, count: subscribers, firstIndex: firstIndex,
                connectRate: connectRate, group: group, registry: registry
            ).connectAll()
            StandardOutput.write(ChildMessage(phase: .ready, connect: connect).line())
            var cpuAtStart = processCPUSeconds()
            var commands = lines(of: FileHandle.standardInput).makeAsyncIterator()
            var figures = SubscriberFigures()
            loop: while let line = await commands.next() {
                switch ChildCommand(line: line) {
                case .start?:
                    cpuAtStart = processCPUSeconds()
                case .drain(let expected, let seconds)?:
                    let clock = ContinuousClock()
                    let end = clock.now + .nanoseconds(Int64(seconds * 1e9))
                    figures = await registry.snapshot()
                    while figures.delivered < expected, clock.now < end {
                        try? await Task.sleep(for: .milliseconds(100))
                        figures = await registry.snapshot()
                    }
                    break loop
                case .endOfInput?, nil:
                    continue
                }
            }
            for connection in connections { connection.close() }
            figures = await registry.snapshot()
            StandardOutput.write(
                ChildMessage(phase: .finished, connect: connect, figures: figures, cpuSeconds: processCPUSeconds() - cpuAtStart)
                    .line())
        }
    }
}
