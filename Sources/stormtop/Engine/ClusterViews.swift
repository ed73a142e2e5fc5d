import Foundation
import StormCore

/// The JetStream stream as one gateway exports it (`storm_stream_*`, sampled by stormd every 2 s).
struct StreamFigures: Sendable, Equatable {
    /// Copies in sync now (leader + current followers).
    var replicas: Double?
    var configuredReplicas: Double?
    /// The server whose `storm_stream_leader_info` is 1.
    var leader: String?
    /// `storm_stream_clustered`: false on a single NATS server (no leader to name); nil from an older stormd.
    var clustered: Bool?
    var messages: Double?
    var bytes: Double?
    /// Caps; nil when unlimited (-1) or not exported.
    var maxMessages: Double?
    var maxBytes: Double?

    /// nil when the gateway exports none of the stream gauges (memory broker, `--jetstream off`, older stormd).
    init?(_ exposition: PrometheusExposition) {
        guard let configured = exposition.value("storm_stream_replicas_configured") ?? exposition.value("storm_stream_replicas") else { return nil }
        configuredReplicas = configured
        replicas = exposition.value("storm_stream_replicas")
        leader = exposition.samples(named: "storm_stream_leader_info").first { $0.value >= 1 }?.labels["leader"]
        clustered = exposition.value("storm_stream_clustered").map { $0 >= 1 }
        messages = exposition.value("storm_stream_messages")
        bytes = exposition.value("storm_stream_bytes")
        maxMessages = exposition.value("storm_stream_max_messages").flatMap { $0 > 0 ? $0 : nil }
        maxBytes = exposition.value("storm_stream_max_bytes").flatMap { $0 > 0 ? $0 : nil }
    }

    init(
        replicas: Double?, configuredReplicas: Double?, leader: String?, clustered: Bool? = nil, messages: Double?, bytes: Double?, maxMessages: Double?,
        maxBytes: Double?
    ) {
        self.replicas = replicas
        self.configuredReplicas = configuredReplicas
        self.leader = leader
        self.clustered = clustered
        self.messages = messages
        self.bytes = bytes
        self.maxMessages = maxMessages
        self.maxBytes = maxBytes
    }

    /// How full the stream is against its tightest cap, in percent; nil when it has no cap.
    var fullPercent: Double? {
        var fullest: Double?
        if let messages, let maxMessages { fullest = max(fullest ?? 0, messages / maxMessages * 100) }
        if let bytes, let maxBytes { fullest = max(fullest ?? 0, bytes / maxBytes * 100) }
        return fullest
    }

    /// A clustered stream without a leader: it can neither store nor serve messages.
    var leaderless: Bool { clustered == true && leader == nil }

    /// The LEADER column: the server, `standalone` on a single server, `NONE` when a clustered stream has none.
    var leaderLabel: String {
        if let leader { return leader }
        switch clustered {
        case false?: return "standalone"
        case true?: return "NONE"
        case nil: return Format.unknown
        }
    }

    /// Fewer copies in sync than configured.
    var underReplicated: Bool {
        guard let replicas, let configuredReplicas else { return false }
        return replicas < configuredReplicas
    }
}

/// One row of the consumers view: a history consumer's `/metrics` and `/readyz`
/// (`stormd --role consumer`, or a gateway with `--role all`).
struct ConsumerFigures: Sendable {
    var address: String
    var url: String
    var state: GatewayState = .waiting
    /// `/readyz`: true on 200; false with its reason otherwise.
    var ready: Bool?
    var readyReason: String?
    /// `storm_consumer_lag_messages`.
    var lag: Double?
    var rowsPerSecond: Double?
    var rowsTotal: Double?
    /// Mean messages per batch written between the last two polls.
    var batchSize: Double?
    /// p95 of the batch transaction time between the last two polls.
    var p95InsertSeconds: Double?
    var failuresPerSecond: Double?
    var failuresTotal: Double?
    var postgresConnected: Bool?

    init(address: String, url: String) {
        self.address = address
        self.url = url
    }

    init(address: String, url: String, latest: ScrapeSample, previous: ScrapeSample?) {
        self.init(address: address, url: url)
        state = .up
        let now = latest.exposition
        ready = latest.ready
        readyReason = latest.readyReason
        lag = now.value("storm_consumer_lag_messages")
        rowsTotal = now.value("storm_consumer_rows_total")
        failuresTotal = now.sum("storm_consumer_failures_total")
        postgresConnected = now.value("storm_postgres_connected").map { $0 >= 1 }
        guard let previous else { return }
        let before = previous.exposition
        let seconds = latest.elapsed - previous.elapsed
        rowsPerSecond = PrometheusRate.perSecond(from: before.value("storm_consumer_rows_total"), to: rowsTotal, over: seconds)
        failuresPerSecond = PrometheusRate.perSecond(from: before.sum("storm_consumer_failures_total"), to: failuresTotal, over: seconds)
        if let batches = GatewayFigures.window("storm_consumer_batch_size", now: now, before: before), batches.count > 0, batches.sum.isFinite {
            batchSize = batches.sum / batches.count
        }
        p95InsertSeconds = GatewayFigures.window("storm_consumer_insert_duration_seconds", now: now, before: before)?.quantile(0.95)
    }

    /// The READY column: `ready`, `NOT READY`, or `-` before /readyz answered.
    var readyLabel: String {
        switch ready {
        case true?: return "ready"
        case false?: return "NOT READY"
        case nil: return Format.unknown
        }
    }
}

/// One channel of one gateway from `GET /api/v1/channels`: subscribers, and rates from two polls.
struct ChannelRate: Sendable, Equatable {
    var channel: String
    var gateway: String
    var subscribers: Int
    /// Messages the broker delivered for the channel per second, between the last two polls.
    var messagesPerSecond: Double?
    /// Deliveries to clients per second: messages per second times the local subscribers.
    var deliveriesPerSecond: Double? { messagesPerSecond.map { $0 * Double(subscribers) } }
}

/// One poll of `GET /api/v1/channels` on a gateway.
struct ChannelSample: Sendable, Equatable, Codable {
    struct Item: Sendable, Equatable, Codable {
        var channel: String
        var subscribers: Int
        /// nil from a stormd that does not count messages per channel.
        var messages: Double?
    }
    var elapsed: Double
    var items: [Item]

    /// Decodes `{"gateway":…,"channels":[{"channel":…,"subscribers":N,"messages":M}…]}`.
    static func decode(_ body: [UInt8], elapsed: Double) throws(StormError) -> ChannelSample {
        struct Answer: Decodable { var channels: [Item] }
        do {
            let answer = try JSONDecoder().decode(Answer.self, from: Data(body))
            return ChannelSample(elapsed: elapsed, items: answer.channels.map { item in
                var item = item
                item.subscribers = max(0, item.subscribers)
                return item
            })
        } catch {
            throw StormError(.protocolViolation, "GET /api/v1/channels answered what stormtop cannot read: \(error)")
        }
    }

    /// The rows of `gateway` from this poll and the one before.
    static func rates(gateway: String, latest: ChannelSample, previous: ChannelSample?) -> [ChannelRate] {
        var before: [String: Double] = [:]
        for item in previous?.items ?? [] { before[item.channel] = item.messages }
        let seconds = latest.elapsed - (previous?.elapsed ?? latest.elapsed)
        return latest.items.map { item in
            ChannelRate(
                channel: item.channel, gateway: gateway, subscribers: item.subscribers,
                messagesPerSecond: PrometheusRate.perSecond(from: before[item.channel], to: item.messages, over: seconds))
        }
    }
}

/// The thresholds of the header's alerts (`--lag-alert`, `--store-alert`).
struct AlertThresholds: Sendable, Equatable {
    /// Consumer lag in messages at or above which an alert shows.
    var consumerLag: Double = 10_000
    /// Stream fullness in percent above which an alert shows.
    var storePercent: Double = 90
}

/// One line of the header's alert list.
struct Alert: Sendable, Equatable {
    enum Kind: String, Sendable {
        case gatewayDown = "gateway_down", consumerDown = "consumer_down", consumerNotReady = "consumer_not_ready", consumerLag = "consumer_lag"
        case noLeader = "stream_no_leader", underReplicated = "stream_under_replicated", storeFull = "store_full"
    }
    var kind: Kind
    var text: String

    /// Every alert a frame raises, most serious first. The stream is the same for every gateway: it is
    /// judged once, from the first gateway that exports it.
    static func evaluate(gateways: [GatewayFigures], consumers: [ConsumerFigures], thresholds: AlertThresholds) -> [Alert] {
        var alerts: [Alert] = []
        for gateway in gateways {
            if case .down(let reason) = gateway.state { alerts.append(Alert(kind: .gatewayDown, text: "gateway \(gateway.address) DOWN: \(reason)")) }
        }
        for consumer in consumers {
            if case .down(let reason) = consumer.state { alerts.append(Alert(kind: .consumerDown, text: "consumer \(consumer.address) DOWN: \(reason)")) }
            if consumer.ready == false { alerts.append(Alert(kind: .consumerNotReady, text: "consumer \(consumer.address) not ready: \(consumer.readyReason ?? "")")) }
            if let lag = consumer.lag, lag >= thresholds.consumerLag {
                alerts.append(Alert(kind: .consumerLag, text: "consumer \(consumer.address) lag \(Format.count(lag)) >= \(Format.count(thresholds.consumerLag))"))
            }
        }
        if let stream = gateways.lazy.filter({ $0.state == .up }).compactMap(\.stream).first {
            if stream.leaderless { alerts.append(Alert(kind: .noLeader, text: "stream has no leader")) }
            if stream.underReplicated {
                alerts.append(Alert(kind: .underReplicated, text: "stream has \(Format.count(stream.replicas)) of \(Format.count(stream.configuredReplicas)) replicas in sync"))
            }
            if let full = stream.fullPercent, full > thresholds.storePercent {
                alerts.append(Alert(kind: .storeFull, text: "stream \(Format.percent(full)) full (> \(Format.percent(thresholds.storePercent)))"))
            }
        }
        return alerts
    }
}
