import NIOCore
import StormBroker
import StormStore

/// Joins what PostgreSQL keeps of a channel (the archive, written by the history consumer) with what
/// the broker still holds, for a read after an offset older than the broker keeps: the one rule the
/// HTTP history route and WebSocket/SSE recovery share (`HistoryReader` applies it). Plain values, no
/// I/O: unit-tested without sockets.
///
/// The rules:
/// - The archive is asked only when the offset is older than the broker keeps (`offset < lostUpTo`).
/// - Only archive rows of the broker's epoch count (`HistoryStore.archive` filters them): offsets of
///   another epoch mean nothing here. The answer keeps the broker's epoch.
/// - No gap: the archive must reach the part the broker keeps. When the broker still holds messages of
///   the channel, the archive's newest row must be at or after the first of them (the consumer stores in
///   stream order, so it then stored everything before it). When the broker holds none (every message of
///   the channel fell out of the stream), the archive must hold at least one. Otherwise the answer is the
///   broker's alone, marked incomplete (`lostUpTo` unchanged), exactly as without PostgreSQL.
/// - No duplicate: the messages are the union of both by offset (the broker's copy where both have one;
///   the bytes are the same), ascending, at most `limit`. When the broker's page is full, nothing after
///   its last message is taken from the archive alone, so a cut page never skips a message.
/// - A stitched answer says nothing was lost (`lostUpTo` 0); `latestOffset` is the broker's, or the
///   archive's newest when the broker holds none of the channel.
///
/// Known limit: PostgreSQL's own retention (`history_size`, `history_age`) is not recorded, so an offset
/// older than what the archive still keeps is not detected.
package enum HistoryStitch {
    /// Whether a read after `offset` needs the archive: the broker may have removed messages after it.
    package static func needsArchive(after offset: UInt64, limit: Int, broker: ChannelHistory) -> Bool {
        limit > 0 && offset < broker.lostUpTo
    }

    /// Whether `archive` reaches the part of the channel `broker` still holds (see the rules above).
    package static func reaches(_ archive: ArchivedHistory, broker: ChannelHistory) -> Bool {
        guard let newest = archive.newestOffset, newest > 0 else { return false }
        guard let firstKept = broker.messages.first?.offset else {
            // The broker holds nothing of the channel after the offset: only when it holds nothing of the
            // channel at all is the archive the whole story.
            return broker.latestOffset == nil
        }
        return UInt64(newest) >= firstKept
    }

    /// The stitched history after `offset` (see the rules above); `broker` unchanged when the archive is
    /// not needed or does not reach the broker's part.
    package static func join(after offset: UInt64, limit: Int, broker: ChannelHistory, archive: ArchivedHistory) -> ChannelHistory {
        guard needsArchive(after: offset, limit: limit, broker: broker), reaches(archive, broker: broker) else { return broker }
        // A full broker page may end before the archive's last row: past it only the broker is proof.
        let cut: UInt64? = broker.messages.count >= limit ? broker.messages.last?.offset : nil
        var byOffset: [UInt64: StoredEnvelope] = [:]
        for row in archive.messages where row.offset > 0 {
            let rowOffset = UInt64(row.offset)
            guard rowOffset > offset, rowOffset <= (cut ?? UInt64.max) else { continue }
            byOffset[rowOffset] = StoredEnvelope(offset: rowOffset, envelope: ByteBuffer(bytes: row.envelope))
        }
        // Where both hold a message, the broker's copy (the same bytes) replaces the row.
        for message in broker.messages where message.offset > offset { byOffset[message.offset] = message }
        let merged = Array(byOffset.values.sorted { $0.offset < $1.offset }.prefix(limit))
        var stitched = broker
        stitched.messages = merged
        stitched.lostUpTo = 0
        stitched.earliestOffset = merged.first?.offset
        if stitched.latestOffset == nil, let newest = archive.newestOffset { stitched.latestOffset = UInt64(clamping: newest) }
        return stitched
    }
}
