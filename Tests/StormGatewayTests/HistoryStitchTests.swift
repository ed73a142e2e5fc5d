import NIOCore
import StormBroker
import StormCore
import StormGateway
import StormStore
import Testing

/// `HistoryStitch`: the archive (PostgreSQL) and the broker joined with no gap and no duplicate, without
/// sockets or servers.
@Suite("History stitching")
struct HistoryStitchTests {
    let channel: ChannelName

    init() throws {
        channel = try ChannelName(validating: "chat.stitch")
    }

    func envelope(_ offset: UInt64, from source: String) -> [UInt8] { Array("\(source)-\(offset)".utf8) }

    func broker(_ offsets: [UInt64], lostUpTo: UInt64, latest: UInt64? = nil, brokerLatest: UInt64 = 1000) -> ChannelHistory {
        ChannelHistory(
            epoch: "E1", messages: offsets.map { StoredEnvelope(offset: $0, envelope: ByteBuffer(bytes: envelope($0, from: "broker"))) },
            latestOffset: latest ?? offsets.last, earliestOffset: offsets.first, lostUpTo: lostUpTo, brokerLatestOffset: brokerLatest)
    }

    func archive(_ offsets: [Int64], newest: Int64? = nil) -> ArchivedHistory {
        ArchivedHistory(
            messages: offsets.map { StoredMessage(channel: channel, offset: $0, epoch: "E1", envelope: envelope(UInt64($0), from: "pg")) },
            newestOffset: newest ?? offsets.last)
    }

    func offsets(_ history: ChannelHistory) -> [UInt64] { history.messages.map(\.offset) }

    @Test("an offset the broker still keeps never asks the archive")
    func brokerAlone() {
        let kept = broker([12, 15, 20], lostUpTo: 10)
        #expect(!HistoryStitch.needsArchive(after: 10, limit: 100, broker: kept))
        #expect(!HistoryStitch.needsArchive(after: 11, limit: 100, broker: kept))
        #expect(HistoryStitch.needsArchive(after: 9, limit: 100, broker: kept))
        #expect(!HistoryStitch.needsArchive(after: 0, limit: 0, broker: kept))
        let joined = HistoryStitch.join(after: 12, limit: 100, broker: broker([15, 20], lostUpTo: 10), archive: archive([13, 15, 20]))
        #expect(offsets(joined) == [15, 20])
        #expect(joined.lostUpTo == 10)
    }

    @Test("archive then broker, overlapping: every message once, in order, nothing lost")
    func overlap() {
        // The stream dropped 1...10; the channel had 2, 5, 9 there, and 12, 15, 20 are still kept.
        let joined = HistoryStitch.join(after: 2, limit: 100, broker: broker([12, 15, 20], lostUpTo: 10), archive: archive([5, 9, 12, 15]))
        #expect(offsets(joined) == [5, 9, 12, 15, 20])
        #expect(joined.lostUpTo == 0)
        #expect(joined.epoch == "E1")
        #expect(joined.latestOffset == 20)
        // Where both hold a message, the broker's copy is used; the archive fills the rest.
        #expect(joined.messages.map { String(buffer: $0.envelope) } == ["pg-5", "pg-9", "broker-12", "broker-15", "broker-20"])
    }

    @Test("resuming from 0 takes every archived message before the broker's")
    func fromZero() {
        let joined = HistoryStitch.join(after: 0, limit: 100, broker: broker([12, 15], lostUpTo: 10), archive: archive([2, 5, 9, 12, 15]))
        #expect(offsets(joined) == [2, 5, 9, 12, 15])
        #expect(joined.lostUpTo == 0)
    }

    @Test("an archive that does not reach the broker's first message leaves the broker's answer, incomplete")
    func archiveBehind() {
        // The consumer has not stored 12 yet: 10 and 11 may hold a message of this channel it never saw.
        let kept = broker([12, 15], lostUpTo: 10)
        let joined = HistoryStitch.join(after: 2, limit: 100, broker: kept, archive: archive([5, 9]))
        #expect(offsets(joined) == [12, 15])
        #expect(joined.lostUpTo == 10)
        #expect(!HistoryStitch.reaches(archive([5, 9]), broker: kept))
        #expect(HistoryStitch.reaches(archive([5, 9], newest: 12), broker: kept))
    }

    @Test("an empty archive leaves the broker's answer, incomplete")
    func emptyArchive() {
        let joined = HistoryStitch.join(after: 2, limit: 100, broker: broker([12, 15], lostUpTo: 10), archive: archive([]))
        #expect(offsets(joined) == [12, 15])
        #expect(joined.lostUpTo == 10)
        let nothing = HistoryStitch.join(after: 2, limit: 100, broker: broker([], lostUpTo: 10), archive: archive([]))
        #expect(nothing.messages.isEmpty)
        #expect(nothing.lostUpTo == 10)
        #expect(nothing.latestOffset == nil)
    }

    @Test("a channel wholly gone from the stream is the archive's alone")
    func onlyArchive() {
        let joined = HistoryStitch.join(after: 3, limit: 100, broker: broker([], lostUpTo: 50), archive: archive([2, 5, 9]))
        #expect(offsets(joined) == [5, 9])
        #expect(joined.lostUpTo == 0)
        #expect(joined.latestOffset == 9)
        // The broker still holds the channel's newest message but returned none of it: not provable.
        let notShown = broker([], lostUpTo: 50, latest: 60)
        #expect(!HistoryStitch.reaches(archive([2, 5, 9]), broker: notShown))
    }

    @Test("the limit cuts the joined answer without skipping: a page of the archive alone, or a full broker page")
    func limits() {
        // The archive's page is full before the broker's part starts: the answer ends with it.
        let archivePage = HistoryStitch.join(after: 0, limit: 3, broker: broker([12, 15, 20], lostUpTo: 10), archive: archive([2, 5, 9], newest: 20))
        #expect(offsets(archivePage) == [2, 5, 9])
        #expect(archivePage.lostUpTo == 0)
        // Across the junction.
        let across = HistoryStitch.join(after: 0, limit: 4, broker: broker([12, 15, 20, 25], lostUpTo: 10), archive: archive([2, 5, 9, 12], newest: 25))
        #expect(offsets(across) == [2, 5, 9, 12])
        // A full broker page: nothing past its last message comes from the archive alone.
        let fullBroker = HistoryStitch.join(after: 8, limit: 2, broker: broker([12, 15], lostUpTo: 10, latest: 30), archive: archive([9, 12, 15, 17], newest: 30))
        #expect(offsets(fullBroker) == [9, 12])
        let rest = HistoryStitch.join(after: 9, limit: 2, broker: broker([12, 15], lostUpTo: 10, latest: 30), archive: archive([12, 15], newest: 30))
        #expect(offsets(rest) == [12, 15])
    }

    @Test("paging through a stitched history with since = the last offset seen yields every message exactly once")
    func paging() {
        // Channel messages at every third offset 3...300; the stream keeps offsets above 150.
        let all = Array(stride(from: UInt64(3), through: 300, by: 3))
        let lost: UInt64 = 150
        let stored = all.map { Int64($0) }
        var seen: [UInt64] = []
        var since: UInt64 = 0
        for _ in 0..<200 {
            let limit = 7
            let keptAfter = all.filter { $0 > since && $0 > lost }
            let kept = broker(Array(keptAfter.prefix(limit)), lostUpTo: lost, latest: 300)
            let rows = stored.filter { UInt64($0) > since }
            let page = HistoryStitch.join(after: since, limit: limit, broker: kept, archive: archive(Array(rows.prefix(limit)), newest: 300))
            #expect(page.lostUpTo == 0 || since >= lost)
            guard let last = page.messages.last?.offset else { break }
            seen += offsets(page)
            since = last
        }
        #expect(seen == all)
    }

    @Test("a duplicated or unordered archive row never produces a duplicate or a step back")
    func defensive() {
        let joined = HistoryStitch.join(after: 0, limit: 100, broker: broker([12], lostUpTo: 10), archive: archive([9, 2, 9, 12, 12]))
        #expect(offsets(joined) == [2, 9, 12])
    }
}
