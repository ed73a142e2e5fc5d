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

/// When a history read is finished and whether it is whole (issue #15): no server.
@Suite("History fetch progress")
struct HistoryFetchProgressTests {
    @Test("complete when the newest offset is delivered, whatever NumPending said before")
    func completeAtLatest() {
        var progress = HistoryFetchProgress(after: 10, latest: 40, limit: 100)
        #expect(!progress.isFinished)
        #expect(progress.nextBatch(256) == 100)
        let deliveredResult1 = progress.delivered(sequence: 12)
        #expect(deliveredResult1 == .keep)
        let deliveredResult2 = progress.delivered(sequence: 30)
        #expect(deliveredResult2 == .keep)
        #expect(progress.nextBatch(256) == 98)
        let deliveredResult3 = progress.delivered(sequence: 40)
        #expect(deliveredResult3 == .keepAndFinish)
        #expect(progress.isFinished)
        let deliveredResult4 = progress.delivered(sequence: 41)
        #expect(deliveredResult4 == .drop)
        #expect(progress.count == 3)
    }

    @Test("running dry before the newest offset is incomplete, not the end")
    func dryBeforeLatest() {
        var progress = HistoryFetchProgress(after: 0, latest: 433, limit: 1000)
        _ = progress.delivered(sequence: 430)
        _ = progress.delivered(sequence: 432)
        let fetchTimedOutResult1 = progress.fetchTimedOut() == .incomplete(lastDelivered: 432)
        #expect(fetchTimedOutResult1)
        #expect(progress.isFinished)

        var nothing = HistoryFetchProgress(after: 5, latest: 9, limit: 10)
        let fetchTimedOutResult2 = nothing.fetchTimedOut() == .incomplete(lastDelivered: 5)
        #expect(fetchTimedOutResult2)
    }

    @Test("the limit ends a read early and whole")
    func limit() {
        var progress = HistoryFetchProgress(after: 0, latest: 1_000, limit: 2)
        let deliveredResult5 = progress.delivered(sequence: 1)
        #expect(deliveredResult5 == .keep)
        let deliveredResult6 = progress.delivered(sequence: 3)
        #expect(deliveredResult6 == .keepAndFinish)
        let deliveredResult7 = progress.delivered(sequence: 5)
        #expect(deliveredResult7 == .drop)
        #expect(progress.nextBatch(256) == 0)
    }

    @Test("redeliveries and offsets not after the start are dropped")
    func redeliveries() {
        var progress = HistoryFetchProgress(after: 10, latest: 20, limit: 10)
        let deliveredResult8 = progress.delivered(sequence: 10)
        #expect(deliveredResult8 == .drop)
        let deliveredResult9 = progress.delivered(sequence: 15)
        #expect(deliveredResult9 == .keep)
        let deliveredResult10 = progress.delivered(sequence: 15)
        #expect(deliveredResult10 == .drop)
        let deliveredResult11 = progress.delivered(sequence: 14)
        #expect(deliveredResult11 == .drop)
        #expect(progress.count == 1)
    }

    @Test("nothing to read: finished at once")
    func nothingToRead() {
        #expect(HistoryFetchProgress(after: 20, latest: 20, limit: 10).isFinished)
        #expect(HistoryFetchProgress(after: 0, latest: 20, limit: 0).isFinished)
    }
}
