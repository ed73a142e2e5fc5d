import NIOConcurrencyHelpers
import NIOCore
import StormCore

/// The in-process presence store: the zero-config default (one gateway sees itself) and the fast engine
/// for unit tests, where several gateways of one test process may share one instance.
///
/// It keeps Redis's model (see `RedisPresenceStore`): entries name their gateway, and a gateway is live
/// while its registry record has not expired, so expiry and lazy cleanup behave the same in both.
package final class MemoryPresenceStore: PresenceStore {
    private struct State {
        var channels: [ChannelName: [String: PresenceEntry]] = [:]
        /// Gateway id → record and the uptime at which it expires.
        var gateways: [String: (record: GatewayRecord, expires: NIODeadline)] = [:]
        var users: [String: [String: Int]] = [:]
    }

    private let state = NIOLockedValueBox(State())
    package let ttl: TimeAmount
    /// The clock expiry is measured on: the uptime clock, or a test's own (so a test of expiry moves time
    /// itself instead of sleeping through the TTL and depending on how fast the machine is).
    private let clock: @Sendable () -> NIODeadline

    package init(ttl: TimeAmount = .seconds(30), clock: @escaping @Sendable () -> NIODeadline = { NIODeadline.now() }) {
        self.ttl = ttl
        self.clock = clock
    }

    package var endpointDescription: String { "memory" }
    package var isShared: Bool { false }

    package func connect() throws(StormError) {}
    package func disconnect() {}

    package func write(_ batch: PresenceBatch) throws(StormError) -> PresenceWriteOutcome {
        let now = clock()
        return state.withLockedValue { state in
            var outcome = PresenceWriteOutcome()
            if let heartbeat = batch.heartbeat {
                let existing = state.gateways[heartbeat.record.id]
                outcome.registrationWasMissing = existing == nil || existing.map { $0.expires <= now } == true
            }
            for (channel, entries) in batch.joined {
                for entry in entries { state.channels[channel, default: [:]][entry.client] = entry }
            }
            for (channel, clients) in batch.left {
                for client in clients { state.channels[channel]?[client] = nil }
                if state.channels[channel]?.isEmpty == true { state.channels[channel] = nil }
            }
            for (user, count) in batch.userCounts {
                state.users[user, default: [:]][batch.gateway] = count > 0 ? count : nil
                if state.users[user]?.isEmpty == true { state.users[user] = nil }
            }
            if let heartbeat = batch.heartbeat {
                state.gateways[heartbeat.record.id] = (heartbeat.record, now + ttl)
            }
            if batch.deregister { state.gateways[batch.gateway] = nil }
            return outcome
        }
    }

    private static func isLive(_ id: String, in state: State, now: NIODeadline) -> Bool {
        guard let gateway = state.gateways[id] else { return false }
        return gateway.expires > now
    }

    package func presence(in channel: ChannelName) throws(StormError) -> [PresenceEntry] {
        let now = clock()
        return state.withLockedValue { state in
            let entries = Array(state.channels[channel]?.values ?? [:].values)
            let live = entries.filter { Self.isLive($0.gateway, in: state, now: now) }
            if live.count != entries.count {
                for entry in entries where !Self.isLive(entry.gateway, in: state, now: now) {
                    state.channels[channel]?[entry.client] = nil
                }
                if state.channels[channel]?.isEmpty == true { state.channels[channel] = nil }
            }
            return live.sorted { ($0.sinceMillis, $0.client) < ($1.sinceMillis, $1.client) }
        }
    }

    package func gateways() throws(StormError) -> [GatewayRecord] {
        let now = clock()
        return state.withLockedValue { state in
            state.gateways = state.gateways.filter { $0.value.expires > now }
            return state.gateways.values.map(\.record).sorted { ($0.startedMillis, $0.id) < ($1.startedMillis, $1.id) }
        }
    }

    package func gateways(ofUser user: String) throws(StormError) -> [String] {
        let now = clock()
        return state.withLockedValue { state in
            (state.users[user] ?? [:]).filter { $0.value > 0 && Self.isLive($0.key, in: state, now: now) }.keys.sorted()
        }
    }
}
