import Logging
import NIOConcurrencyHelpers
import NIOCore
import StormBroker
import StormCore
import StormObservability
import StormPresence
import StormStore

/// What every connection handler of one gateway shares. Created once per gateway.
package final class GatewayContext: Sendable {
    package let router: ChannelRouter
    package let publisher: Publisher
    package let metrics: GatewayMetrics
    package let limits: GatewayLimits
    package let state: GatewayState
    package let broker: any MessageBroker
    package let logger: Logger
    /// Presence, per-user routing and the gateway registry of this gateway.
    package let presence: PresenceTracker
    /// Tokens, users, channel rules and every permission decision.
    package let auth: Authenticator
    /// Request and connection ids for logs (`storm.request_id`, `storm.connection_id`) and `X-Request-Id`.
    package let connectionIDs: ConnectionIDs
    /// Long-term history in PostgreSQL (with `--postgres`): serves what the broker no longer keeps.
    package let historyStore: (any HistoryStore)?
    /// Host and Origin checks of every HTTP request, upgrades and event streams included.
    package let requestPolicy: RequestPolicy
    /// Bounded, cancellable history reads, broker then `historyStore`: recovery and the HTTP history route.
    package let historyReader: HistoryReader
    /// `--max-connections-per-ip`, `--connect-rate-per-ip` and the timeouts, for refusal messages.
    package let connectionLimits: ConnectionLimits
    /// The history consumer running beside the gateway (`--role all`), for `/readyz`.
    package let consumer = NIOLockedValueBox<(any ConsumerHealthReporting)?>(nil)
    /// The backend hooks (`--connect-hook`, `--subscribe-hook`, `--publish-hook`); none by default.
    package let hooks: GatewayHooks
    /// What the process runs (`--role`: `gateway` or `all`), for `/readyz`.
    package let role: String

    package init(
        router: ChannelRouter, publisher: Publisher, metrics: GatewayMetrics, limits: GatewayLimits, state: GatewayState, broker: any MessageBroker, presence: PresenceTracker, auth: Authenticator,
        logger: Logger, connectionIDs: ConnectionIDs = ConnectionIDs(instanceID: "gw"), historyStore: (any HistoryStore)? = nil,
        requestPolicy: RequestPolicy = RequestPolicy(), historyReads: HistoryReaderConfiguration = HistoryReaderConfiguration(),
        connectionLimits: ConnectionLimits = ConnectionLimits(), hooks: GatewayHooks? = nil,
        role: String = "gateway"
    ) {
        self.role = role
        self.hooks = hooks ?? GatewayHooks.disabled(metrics: metrics, logger: logger)
        self.historyReader = HistoryReader(broker: broker, archive: historyStore, configuration: historyReads, metrics: metrics)
        self.requestPolicy = requestPolicy
        self.connectionLimits = connectionLimits
        self.connectionIDs = connectionIDs
        self.historyStore = historyStore
        self.router = router
        self.publisher = publisher
        self.metrics = metrics
        self.limits = limits
        self.state = state
        self.broker = broker
        self.presence = presence
        self.auth = auth
        self.logger = logger
    }

    /// Validates channel names from a request, refusing the whole request on the first bad one.
    package func channels(from names: [String]) throws(StormError) -> [ChannelName] {
        guard !names.isEmpty else { throw StormError(.badRequest, "no channel given") }
        var result: [ChannelName] = []
        for name in names {
            let channel = try ChannelName(validating: name)
            if !result.contains(channel) { result.append(channel) }
        }
        guard result.count <= limits.maxChannelsPerConnection else {
            throw StormError(.tooManyChannels, "\(result.count) channels requested; a connection may hold at most \(limits.maxChannelsPerConnection) (--max-channels-per-connection)")
        }
        return result
    }
}
