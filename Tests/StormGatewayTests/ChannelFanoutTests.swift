import NIOCore
import StormCore
import StormTestSupport
import Testing

@testable import StormBroker
@testable import StormConfiguration
@testable import StormConsumer
@testable import StormGateway
@testable import StormNATS
@testable import StormObservability
@testable import StormPresence
@testable import StormStore

/// The per-channel fan-out of one event loop: a pass writes each subscriber everything it has not had,
/// including messages that arrived during the pass, in order, once.
@Suite("Channel fan-out")
struct ChannelFanoutTests {
    /// Records the offsets of every run it is given.
    final class Recorder: FanoutSubscriber {
        let transport = GatewayMetrics.Transport.webSocket
        var received: [UInt64] = []
        var closeOnNext = false
        func enqueue(_ run: DeliveryRun) -> EnqueueOutcome {
            if closeOnNext { return .closed }
            received += run.deliveries.map(\.offset)
            return .queued(flushDue: true, messages: run.count)
        }
        func flush() {}
        func tick(now: NIODeadline) {}
        func closeForShutdown() {}
    }

    static func delivery(_ offset: UInt64) throws -> Delivery {
        let channel = try ChannelName(validating: "fan.out")
        let envelope = Envelope(channel: channel, id: "m-\(offset)", timestampMicros: 1_000, payload: Array("\(offset)".utf8))
        return try #require(Delivery(envelope: ByteBuffer(bytes: envelope.encoded()), offset: offset, channel: channel, allocator: ByteBufferAllocator()))
    }

    static func fanout() throws -> ChannelFanout {
        ChannelFanout(channel: try ChannelName(validating: "fan.out"))
    }

    @Test func messagesArrivingDuringAPassReachTheRestOfItAndTheOthersNext() throws {
        let fanout = try Self.fanout()
        let subscribers = (0..<3).map { _ in Recorder() }
        for subscriber in subscribers { fanout.add(subscriber) }

        fanout.append(try Self.delivery(1))
        _ = fanout.serve(slot: 0)
        fanout.append(try Self.delivery(2))  // arrives mid-pass
        _ = fanout.serve(slot: 1)
        _ = fanout.serve(slot: 2)
        fanout.endPass()
        #expect(subscribers.map(\.received) == [[1], [1, 2], [1, 2]])
        #expect(fanout.hasUnwritten)  // the first subscriber is owed 2

        for slot in 0..<fanout.slots { _ = fanout.serve(slot: slot) }
        fanout.endPass()
        #expect(subscribers.map(\.received) == [[1, 2], [1, 2], [1, 2]])
        #expect(!fanout.hasUnwritten)
    }

    @Test func aNewSubscriberGetsOnlyWhatArrivesAfterIt() throws {
        let fanout = try Self.fanout()
        let early = Recorder()
        fanout.add(early)
        fanout.append(try Self.delivery(1))
        let late = Recorder()
        fanout.add(late)
        fanout.append(try Self.delivery(2))
        for slot in 0..<fanout.slots { _ = fanout.serve(slot: slot) }
        fanout.endPass()
        #expect(early.received == [1, 2])
        #expect(late.received == [2])
    }

    @Test func departedAndClosedSubscribersAreForgotten() throws {
        let fanout = try Self.fanout()
        let subscribers = (0..<200).map { _ in Recorder() }
        for subscriber in subscribers { fanout.add(subscriber) }
        for subscriber in subscribers[0..<100] { fanout.remove(subscriber) }
        subscribers[150].closeOnNext = true
        fanout.append(try Self.delivery(7))
        var closed = 0
        for slot in 0..<fanout.slots {
            if case .closed? = fanout.serve(slot: slot)?.outcome { closed += 1 }
        }
        fanout.endPass()  // compacts: more than a quarter of the slots were empty
        #expect(closed == 1)
        #expect(fanout.subscriberCount == 99)
        #expect(fanout.slots == 99)
        #expect(subscribers[0..<100].allSatisfy { $0.received.isEmpty })
        #expect(subscribers[100...].filter { $0.received == [7] }.count == 99)
        // Still working after the compaction: positions were rebuilt.
        fanout.append(try Self.delivery(8))
        for slot in 0..<fanout.slots { _ = fanout.serve(slot: slot) }
        fanout.remove(subscribers[199])
        #expect(subscribers[199].received == [7, 8])
        #expect(fanout.subscriberCount == 98)
    }
}
