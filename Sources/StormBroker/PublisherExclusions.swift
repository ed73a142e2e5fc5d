import Atomics
import NIOConcurrencyHelpers
import NIOCore
import StormCore

/// The messages of this gateway that must not be delivered back to the WebSocket connection that
/// published them (`"exclude_self": true`, docs/protocol.md).
///
/// Why a table and not a field of the message: the message goes through the broker and comes back as
/// bytes, and only this gateway knows which of its connections sent it. The publisher registers the
/// message's key (`channel/id`, the broker's deduplication key) before it hands the message to the
/// broker; the router takes the entry when the message comes back and carries the connection's number
/// on the `Delivery`, so the loop's pass skips that one session. Other gateways never see an entry and
/// deliver as usual.
///
/// The hot path pays one relaxed atomic load per delivery while the table is empty (no publisher asked
/// for exclusion). Entries whose message never comes back (the channel has no local subscriber any
/// more) expire after `lifetime`; the table holds at most `capacity` entries, past which a publish is
/// delivered to its publisher like any other (counted by the caller as not excluded).
package final class PublisherExclusions: Sendable {
    private struct Entry {
        var connection: UInt64
        var expires: NIODeadline
    }

    private let entries = NIOLockedValueBox<[String: Entry]>([:])
    private let count = ManagedAtomic<Int>(0)
    package let capacity: Int
    package let lifetime: TimeAmount

    package init(capacity: Int = 65_536, lifetime: TimeAmount = .seconds(60)) {
        self.capacity = max(1, capacity)
        self.lifetime = lifetime
    }

    /// The key a message is registered and looked up by.
    package static func key(channel: ChannelName, id: some Collection<UInt8>) -> String {
        channel.rawValue + "/" + String(decoding: id, as: UTF8.self)
    }

    /// Remembers that the message `key` must skip connection number `connection`; false when the table
    /// is full (the message is then delivered to its publisher too).
    @discardableResult
    package func register(_ key: String, connection: UInt64, now: NIODeadline = .now()) -> Bool {
        entries.withLockedValue { entries in
            if entries.count >= capacity {
                entries = entries.filter { $0.value.expires > now }
            }
            guard entries.count < capacity else {
                count.store(entries.count, ordering: .relaxed)
                return false
            }
            entries[key] = Entry(connection: connection, expires: now + lifetime)
            count.store(entries.count, ordering: .relaxed)
            return true
        }
    }

    /// Forgets a registration whose publish failed (nothing will come back).
    package func forget(_ key: String) {
        entries.withLockedValue { entries in
            entries[key] = nil
            count.store(entries.count, ordering: .relaxed)
        }
    }

    /// Whether any message waits to be matched: the router's only cost while nobody excludes.
    @inline(__always)
    package var isEmpty: Bool { count.load(ordering: .relaxed) == 0 }

    /// Takes the connection number registered for `key`, or 0 when there is none.
    package func take(_ key: String) -> UInt64 {
        entries.withLockedValue { entries in
            guard let entry = entries.removeValue(forKey: key) else { return 0 }
            count.store(entries.count, ordering: .relaxed)
            return entry.connection
        }
    }
}
