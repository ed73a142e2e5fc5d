import Foundation
import StormCore

/// The JetStream stream as one gateway exports it (`storm_stream_*`, sampled by stormd every 2 s).
package struct StreamFigures: Sendable, Equatable {
    /// Copies in sync now (leader + current followers).
    package var replicas: Double?
    package var configuredReplicas: Double?
    /// The server whose `storm_stream_leader_info` is 1.
    package var leader: String?
    /// `storm_stream_clustered`: false on a single NATS server (no leader to name); nil from an older stormd.
    package var clustered: Bool?
    package var messages: Double?
    package var bytes: Double?
    /// Caps; nil when unlimited (-1) or not exported.
    package var maxMessages: Double?
    package var maxBytes: Double?

    /// nil when the gateway exports none of the stream gauges (memory broker, `--jetstream off`, older stormd).
    package init?(_ exposition: PrometheusExposition) {
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

    package init(
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
    package var fullPercent: Double? {
        var fullest: Double?
        if let messages, let maxMessages { fullest = max(fullest ?? 0, messages / maxMessages * 100) }
        if let bytes, let maxBytes { fullest = max(fullest ?? 0, bytes / maxBytes * 100) }
        return fullest
    }

    /// A clustered stream without a leader: it can neither store nor serve messages.
    package var leaderless: Bool { clustered == true && leader == nil }

    /// The LEADER column: the server, `standalone` on a single server, `NONE` when a clustered stream has none.
    package var leaderLabel: String {
        if let leader { return leader }
        switch clustered {
        case false?: return "standalone"
        case true?: return "NONE"
        case nil: return Format.unknown
        }
    }

    /// Fewer copies in sync than configured.
    package var underReplicated: Bool {
        guard let replicas, let configuredReplicas else { return false }
        return replicas < configuredReplicas
    }
}

/// One row of the consumers view: a history consumer's `/metrics` and `/readyz`
/// (`stormd --role consumer`, or a gateway with `--role all`).
package struct ConsumerFigures: Sendable {
    package var address: String
    package var url: String
    package var state: GatewayState = .waiting
    /// `/readyz`: true on 200; false with its reason otherwise.
    package var ready: Bool?
    package var readyReason: String?
    /// `storm_consumer_lag_messages`.
    package var lag: Double?
    package var rowsPerSecond: Double?
    package var rowsTotal: Double?
    /// Mean messages per batch written between the last two polls.
    package var batchSize: Double?
    /// p95 of the batch transaction time between the last two polls.
    package var p95InsertSeconds: Double?
    package var failuresPerSecond: Double?
    package var failuresTotal: Double?
    package var postgresConnected: Bool?

    package init(address: String, url: String) {
        self.address = address
        self.url = url
    }

    package init(address: String, url: String, latest: ScrapeSample, previous: ScrapeSample?) {
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
    package var readyLabel: String {
        switch ready {
        case true?: return "ready"
        case false?: return "NOT READY"
        case nil: return Format.unknown
        }
    }
}

/// One channel of one gateway from `GET /api/v1/channels`: subscribers, and rates from two polls.
package struct ChannelRate: Sendable, Equatable {
    package var channel: String
    package var gateway: String
    package var subscribers: Int
    /// Messages the broker delivered for the channel per second, between the last two polls.
    package var messagesPerSecond: Double?
    /// Deliveries to clients per second: messages per second times the local subscribers.
    package var deliveriesPerSecond: Double? { messagesPerSecond.map { $0 * Double(subscribers) } }
}

/// One poll of `GET /api/v1/channels` on a gateway.
package struct ChannelSample: Sendable, Equatable, Codable {
    package struct Item: Sendable, Equatable, Codable {
        package var channel: String
        package var subscribers: Int
        /// nil from a stormd that does not count messages per channel.
        package var messages: Double?
    }
    package var elapsed: Double
    package var items: [Item]

    /// Decodes `{"gateway":…,"channels":[{"channel":…,"subscribers":N,"messages":M}…]}`.
    package static func decode(_ body: [UInt8], elapsed: Double) throws(StormError) -> ChannelSample {
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
    package static func rates(gateway: String, latest: ChannelSample, previous: ChannelSample?) -> [ChannelRate] {
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
package struct AlertThresholds: Sendable, Equatable {
    /// Consumer lag in messages at or above which an alert shows.
    package var consumerLag: Double = 10_000
    /// Stream fullness in percent above which an alert shows.
    package var storePercent: Double = 90

    package init(consumerLag: Double = 10_000, storePercent: Double = 90) {
        self.consumerLag = consumerLag
        self.storePercent = storePercent
    }
}

/// One line of the header's alert list.
package struct Alert: Sendable, Equatable {
    package enum Kind: String, Sendable {
        case gatewayDown = "gateway_down", consumerDown = "consumer_down", consumerNotReady = "consumer_not_ready", consumerLag = "consumer_lag"
        case noLeader = "stream_no_leader", underReplicated = "stream_under_replicated", storeFull = "store_full"
    }
    package var kind: Kind
    package var text: String

    /// Every alert a frame raises, most serious first. The stream is the same for every gateway: it is
    /// judged once, from the first gateway that exports it.
    package static func evaluate(gateways: [GatewayFigures], consumers: [ConsumerFigures], thresholds: AlertThresholds) -> [Alert] {
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
