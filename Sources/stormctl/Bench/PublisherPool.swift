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
        let clock = ContinuousClock()
        let start = clock.now
        // Anything not sent by the end of the run plus a second of grace is skipped, not sent late.
        let cutoff = start + duration + .seconds(1)
        var total = PublishFigures()
        await withTaskGroup(of: PublishFigures.self) { tasks in
            for publisher in 0..<publishers {
                tasks.addTask {
                    await publish(as: publisher, start: start, cutoff: cutoff, clock: clock)
                }
            }
            for await figures in tasks { total.merge(figures) }
        }
        let elapsed = start.duration(to: clock.now)
        total.seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        return total
    }

    private func publish(
        as publisher: Int, start: ContinuousClock.Instant, cutoff: ContinuousClock.Instant, clock: ContinuousClock
    ) async -> PublishFigures {
        let client = StormHTTPClient(endpoint: endpoint, group: group)
        var figures = PublishFigures()
        var sequence = 0
        for index in schedule.messages(forSender: publisher, of: publishers) {
            sequence += 1
            let due = start + .nanoseconds(schedule.dueOffsetNanoseconds(ofMessage: index))
            if due > clock.now { try? await Task.sleep(until: due, clock: clock) }
            if clock.now > cutoff {
                figures.skipped += 1
                continue
            }
            let payload = Self.payload(publisher: publisher, sequence: sequence, size: payloadSize)
            let sent = clock.now
            do {
                _ = try await client.publish(channel: channel, payload: payload)
                let elapsed = sent.duration(to: clock.now)
                let micros = elapsed.components.seconds * 1_000_000 + elapsed.components.attoseconds / 1_000_000_000_000
                figures.roundTrip.record(UInt64(max(0, micros)))
                figures.accepted += 1
            } catch {
                figures.failed += 1
                if figures.firstFailure == nil { figures.firstFailure = error.message }
            }
        }
        await client.close()
        return figures
    }
}
