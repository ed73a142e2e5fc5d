import NIOCore
import StormCore

/// A token bucket: `rate` publishes a second, with a burst of `rate`, for one connection
/// (`--client-publish-rate`).
///
/// Why a bucket of its own per connection, on its event loop: the check sits on every publish of the
/// connection, so it must cost a subtraction, no lock and no allocation. Plain state and a clock passed
/// in, so it is unit-tested without sockets or sleeps.
package struct PublishRateLimiter: Sendable {
    /// Publishes a second; 0 means unlimited.
    package let rate: Int
    private var tokens: Double
    private var refilledAt: NIODeadline

    package init(rate: Int, now: NIODeadline = .now()) {
        self.rate = max(0, rate)
        self.tokens = Double(self.rate)
        self.refilledAt = now
    }

    /// Takes one token if there is one: whether this publish may go ahead.
    package mutating func admit(now: NIODeadline = .now()) -> Bool {
        guard rate > 0 else { return true }
        let elapsed = max(0, Double((now - refilledAt).nanoseconds) / 1e9)
        refilledAt = now
        tokens = min(Double(rate), tokens + elapsed * Double(rate))
        guard tokens >= 1 else { return false }
        tokens -= 1
        return true
    }
}
