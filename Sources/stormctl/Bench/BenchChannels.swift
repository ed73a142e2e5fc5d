import StormCore

/// The channels of a bench run (`--channels N`) and who uses which.
///
/// Subscriber `i` of the whole run (over every bench process) is on channel `i % N`, and message `m` of
/// the publish schedule goes to channel `m % N`: both round robin, so every channel has the same number of
/// subscribers and of messages, give or take one. With one channel its name is `--channel` itself; with
/// more, `--channel` is the prefix and the channels are `PREFIX.0` … `PREFIX.(N-1)`.
struct BenchChannels: Sendable {
    let names: [ChannelName]

    static let maximumCount = 100_000

    init(base: ChannelName, count: Int) throws(StormError) {
        guard count > 1 else {
            names = [base]
            return
        }
        var names: [ChannelName] = []
        names.reserveCapacity(count)
        for index in 0..<count { names.append(try ChannelName(validating: "\(base.rawValue).\(index)")) }
        self.names = names
    }

    var count: Int { names.count }

    /// The channel of subscriber `index` (counted over the whole run, not one process).
    func channel(ofSubscriber index: Int) -> Int { index % names.count }

    /// The channel message `index` of the schedule is published to.
    func channel(ofMessage index: Int) -> Int { index % names.count }

    /// What each subscriber of channel `c` should receive: every message accepted on `c` × the subscribers
    /// `c` has; and how many of those did not arrive, channel by channel (a channel that got more than it
    /// should does not hide another one's losses).
    static func expectation(
        accepted: [Int], subscribed: [Int], delivered: [UInt64]
    ) -> (expected: UInt64, lost: UInt64, channelsWithLoss: Int) {
        var expected: UInt64 = 0
        var lost: UInt64 = 0
        var channelsWithLoss = 0
        for channel in 0..<max(accepted.count, subscribed.count) {
            let messages = UInt64(max(0, channel < accepted.count ? accepted[channel] : 0))
            let subscribers = UInt64(max(0, channel < subscribed.count ? subscribed[channel] : 0))
            let want = messages * subscribers
            let got = channel < delivered.count ? delivered[channel] : 0
            expected += want
            if got < want {
                lost += want - got
                channelsWithLoss += 1
            }
        }
        return (expected, lost, channelsWithLoss)
    }
}

/// Adds `amount` at `index`, growing the array with zeros as needed: per-channel counters are sized by
/// the first use, so the figures of a one-channel run stay one number long.
func addCount<Number: BinaryInteger>(_ amount: Number, at index: Int, to counters: inout [Number]) {
    guard index >= 0 else { return }
    if index >= counters.count { counters.append(contentsOf: repeatElement(0, count: index + 1 - counters.count)) }
    counters[index] += amount
}

/// `lhs[i] += rhs[i]` for every index, growing `lhs` as needed.
func mergeCounts<Number: BinaryInteger>(_ rhs: [Number], into lhs: inout [Number]) {
    for (index, value) in rhs.enumerated() where value != 0 { addCount(value, at: index, to: &lhs) }
}
