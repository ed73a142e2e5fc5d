/// When a history read through an ephemeral pull consumer is finished, and whether what it got is whole:
/// a plain state machine fed with each delivered message's stream sequence (unit-tested without a server).
///
/// The read knows, before it fetches, the channel's newest offset (`latest`, from `js_GetLastMsg`, answered
/// by the stream's leader). It used to stop at the first message whose `NumPending` was 0, and to take a
/// fetch that timed out for the end: both trust the consumer's view of the stream, which after a leader
/// change can be a replica's that is behind (issue #15). Now:
///
/// - the read is complete when it delivered `latest` (or reached its limit); `NumPending` is not trusted;
/// - a fetch that times out before that is an *incomplete* read, reported as such (never a short answer
///   that looks whole);
/// - a sequence at or below one already delivered (a redelivery) is dropped, so offsets only grow.
package struct HistoryFetchProgress: Sendable, Equatable {
    package enum Step: Sendable, Equatable {
        /// Keep this message and fetch on.
        case keep
        /// Keep this message; the read is complete.
        case keepAndFinish
        /// Drop it: not after what was delivered already.
        case drop
    }

    package enum End: Sendable, Equatable {
        case complete
        /// The consumer had nothing more while `latest` was not delivered: the last offset delivered.
        case incomplete(lastDelivered: UInt64)
    }

    package let after: UInt64
    package let latest: UInt64
    package let limit: Int
    private(set) var count = 0
    private(set) var lastDelivered: UInt64
    private(set) var isFinished = false

    package init(after: UInt64, latest: UInt64, limit: Int) {
        self.after = after
        self.latest = latest
        self.limit = limit
        self.lastDelivered = after
        self.isFinished = latest <= after || limit <= 0
    }

    /// How many to ask for in the next fetch (at most `batch`).
    package func nextBatch(_ batch: Int) -> Int { max(0, min(batch, limit - count)) }

    package mutating func delivered(sequence: UInt64) -> Step {
        guard !isFinished, sequence > lastDelivered else { return .drop }
        count += 1
        lastDelivered = sequence
        if sequence >= latest || count >= limit {
            isFinished = true
            return .keepAndFinish
        }
        return .keep
    }

    /// A fetch waited its full time and got nothing.
    package mutating func fetchTimedOut() -> End {
        isFinished = true
        return lastDelivered >= latest || count >= limit ? .complete : .incomplete(lastDelivered: lastDelivered)
    }
}
