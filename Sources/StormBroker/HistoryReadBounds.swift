import NIOCore
import StormCore

/// The limits of one history read as the broker sees them: when it must give up, and whether the
/// connection that asked is still there. Checked between the read's requests to the server (each
/// `natsSubscription_Fetch` waits at most the time left).
package struct HistoryReadBounds: Sendable {
    package var deadline: NIODeadline
    package var isCancelled: @Sendable () -> Bool

    /// For callers without a connection to watch (tests, tools): 5 s, never cancelled.
    package static func standard() -> HistoryReadBounds {
        HistoryReadBounds(deadline: .now() + .seconds(5), isCancelled: { false })
    }

    /// Time left, in milliseconds, at least 0.
    package var remainingMilliseconds: Int64 {
        max(0, (deadline - .now()).nanoseconds / 1_000_000)
    }

    package init(deadline: NIODeadline, isCancelled: @escaping @Sendable () -> Bool) {
        self.deadline = deadline
        self.isCancelled = isCancelled
    }
}
