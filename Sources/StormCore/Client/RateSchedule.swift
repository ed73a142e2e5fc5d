/// When each message of a paced run is due, as an offset from the start.
///
/// Offsets are computed from the message index, not by sleeping a fixed interval after each send, so a
/// slow send never shifts the rest of the run: the sender catches up and the average rate holds. Several
/// senders share one schedule by taking every `senders`-th message.
public struct RateSchedule: Sendable, Equatable {
    /// Messages per second over all senders; `nil` means as fast as possible.
    public let rate: Double?
    public let total: Int

    public init(rate: Double?, total: Int) {
        self.rate = rate.flatMap { $0 > 0 && $0.isFinite ? $0 : nil }
        self.total = Swift.max(0, total)
    }

    /// A run of `duration` seconds at `rate` messages per second.
    public init(rate: Double, duration: Double) {
        self.init(rate: rate, total: Int((rate * duration).rounded()))
    }

    /// Nanoseconds from the start at which message `index` (0-based) is due.
    public func dueOffsetNanoseconds(ofMessage index: Int) -> Int64 {
        guard let rate else { return 0 }
        return Int64((Double(index) * 1e9 / rate).rounded())
    }

    /// The messages sender `sender` (0-based) of `senders` sends, in order.
    public func messages(forSender sender: Int, of senders: Int) -> StrideTo<Int> {
        stride(from: sender, to: total, by: Swift.max(1, senders))
    }

    /// How many messages sender `sender` of `senders` sends.
    public func messageCount(forSender sender: Int, of senders: Int) -> Int {
        guard sender < total else { return 0 }
        return (total - sender + senders - 1) / senders
    }
}
