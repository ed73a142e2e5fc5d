import NIOCore
import StormCore

/// One channel's subscribers on one event loop, and the channel's recent messages that some of them have
/// not been written yet. Used only on its loop.
///
/// Why a log and a position per subscriber rather than "write this batch to everyone": writing a batch to
/// ten thousand connections takes tens of milliseconds, and messages keep arriving meanwhile. With a
/// batch, a message that arrives during a pass waits for the pass to end and then for its connection's
/// turn in the next one: up to two passes. Here a pass picks new messages up as it goes (`LoopHub` appends
/// them between chunks of subscribers), so every connection is written everything that arrived before
/// its turn: at most one pass, for the same number of writes.
package final class ChannelFanout {
    package let channel: ChannelName
    /// Subscribers in a stable order; `nil` marks one that left (compacted between passes).
    private var subscribers: [(any FanoutSubscriber)?] = []
    /// For each subscriber, the sequence number of the first message it has not been written.
    private var written: [UInt64] = []
    private var positions: [ObjectIdentifier: Int] = [:]
    private var departed = 0

    /// Messages from `logStart` on, oldest first; trimmed once every subscriber has them.
    private var log: [Delivery] = []
    private var logStart: UInt64 = 0
    package var logEnd: UInt64 { logStart + UInt64(log.count) }

    /// The concatenated runs of the current pass, by first sequence number: subscribers are at one of a
    /// few positions, so each run is built once and shared. Reset when the log grows.
    private var runs: [UInt64: DeliveryRun] = [:]
    private let allocator = ByteBufferAllocator()

    package init(channel: ChannelName) {
        self.channel = channel
    }

    package var subscriberCount: Int { positions.count }
    package var isEmpty: Bool { positions.isEmpty }
    /// Some subscriber may be owed messages: `endPass` trims the log to what is still owed, so a
    /// non-empty log means work (at worst one pass that finds a departed laggard's share and trims it).
    package var hasUnwritten: Bool { !log.isEmpty }
    package var slots: Int { subscribers.count }

    /// A new subscriber gets what arrives from now on.
    package func add(_ session: any FanoutSubscriber) {
        let key = ObjectIdentifier(session)
        guard positions[key] == nil else { return }
        positions[key] = subscribers.count
        subscribers.append(session)
        written.append(logEnd)
    }

    package func remove(_ session: any FanoutSubscriber) {
        guard let position = positions.removeValue(forKey: ObjectIdentifier(session)) else { return }
        subscribers[position] = nil
        departed += 1
        if positions.isEmpty { reset() }
    }

    package func append(_ delivery: Delivery) {
        log.append(delivery)
        runs.removeAll(keepingCapacity: true)
    }

    /// Writes subscriber `slot` everything it has not been written; what the hub must count and flush.
    package func serve(slot: Int) -> (session: any FanoutSubscriber, outcome: EnqueueOutcome)? {
        guard let session = subscribers[slot] else { return nil }
        let from = written[slot]
        let end = logEnd
        guard from < end else { return nil }
        written[slot] = end
        let run: DeliveryRun
        if let cached = runs[from] {
            run = cached
        } else {
            run = DeliveryRun(channel: channel, deliveries: Array(log[Int(from - logStart)...]), allocator: allocator)
            runs[from] = run
        }
        let outcome = session.enqueue(run)
        if case .closed = outcome { remove(session) }
        return (session, outcome)
    }

    /// After a pass: forgets the messages every subscriber has, and the slots of those that left.
    package func endPass() {
        let keepFrom = min(minimumWritten(), logEnd)
        if keepFrom > logStart {
            log.removeFirst(Int(keepFrom - logStart))
            logStart = keepFrom
            runs.removeAll(keepingCapacity: true)
        }
        if departed > 64, departed * 4 > subscribers.count { compact() }
    }

    private func minimumWritten() -> UInt64 {
        var lowest = logEnd
        for (slot, session) in subscribers.enumerated() where session != nil { lowest = min(lowest, written[slot]) }
        return lowest
    }

    private func compact() {
        var keptSubscribers: [(any FanoutSubscriber)?] = []
        var keptWritten: [UInt64] = []
        keptSubscribers.reserveCapacity(positions.count)
        keptWritten.reserveCapacity(positions.count)
        for (slot, session) in subscribers.enumerated() {
            guard let session else { continue }
            positions[ObjectIdentifier(session)] = keptSubscribers.count
            keptSubscribers.append(session)
            keptWritten.append(written[slot])
        }
        subscribers = keptSubscribers
        written = keptWritten
        departed = 0
    }

    private func reset() {
        subscribers.removeAll()
        written.removeAll()
        departed = 0
        log.removeAll()
        runs.removeAll()
    }
}
