import NIOCore
import NIOEmbedded
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

/// JetStream publishes waiting for their acknowledgement: timeouts are swept, pointer reuse is safe.
@Suite("JetStream acknowledgement table")
struct AckTableTests {
    @Test func onlyUnacknowledgedPublishesTimeOut() throws {
        let loop = EmbeddedEventLoop()
        let table = AckTable()
        let start = NIODeadline.now()
        let acked = loop.makePromise(of: PublishReceipt.self)
        let lost = loop.makePromise(of: PublishReceipt.self)
        let late = loop.makePromise(of: PublishReceipt.self)
        table.insert(1, acked, deadline: start + .seconds(1), sweepingOn: loop)
        table.insert(2, lost, deadline: start + .seconds(1), sweepingOn: loop)
        table.insert(3, late, deadline: start + .seconds(5), sweepingOn: loop)
        table.remove(1)?.succeed(PublishReceipt(offset: 7, duplicate: false))

        table.expire(now: start + .milliseconds(500))
        var failures = 0
        lost.futureResult.whenFailure { _ in failures += 1 }
        late.futureResult.whenFailure { _ in failures += 1 }
        #expect(failures == 0)

        table.expire(now: start + .seconds(2))
        #expect(failures == 1)
        #expect(try acked.futureResult.wait().offset == 7)

        // Address 2 is reused by a new publish: the old publish's expiry must not touch it.
        let reused = loop.makePromise(of: PublishReceipt.self)
        table.insert(2, reused, deadline: start + .seconds(10), sweepingOn: loop)
        table.expire(now: start + .seconds(6))
        #expect(failures == 2)  // `late`
        #expect(table.remove(2) != nil)
        reused.succeed(PublishReceipt(offset: 8, duplicate: false))
        table.failAll(StormError(.brokerUnavailable, "closing"))
        try loop.syncShutdownGracefully()
    }
}
