import StormCore

/// One successful scrape, stamped with when it was answered.
package struct ScrapeSample: Sendable {
    package var exposition: PrometheusExposition
    /// Monotonic seconds since stormtop started: the base of every rate, immune to clock changes.
    package var elapsed: Double
    /// Seconds since the epoch, only to turn `process_start_time_seconds` into an uptime.
    package var wallClock: Double
    /// Consumers only: whether `/readyz` answered 200, and its reason when it did not.
    package var ready: Bool? = nil
    package var readyReason: String? = nil
}

/// Whether a gateway answers.
package enum GatewayState: Sendable, Equatable {
    /// Not polled yet (or the first poll is still running).
    case waiting
    case up
    /// The last poll failed; the reason is what the operator sees.
    case down(String)

    package var label: String {
        switch self {
        case .waiting: return "wait"
        case .up: return "up"
        case .down: return "DOWN"
        }
    }

    package var isDown: Bool { if case .down = self { return true } else { return false } }
}

/// Everything stormtop shows about one gateway, computed from its last two scrapes. Each figure is nil
/// when it cannot be known: the gateway is down, the metric is not exported (process metrics on an
/// older stormd), or a rate still lacks its second scrape.
package struct GatewayFigures: Sendable {
    package var address: String
    package var url: String
    package var state: GatewayState = .waiting
    package var version: String?
    package var instanceID: String?
    package var uptimeSeconds: Double?
    package var webSocketConnections: Double?
    package var sseConnections: Double?
    package var publishedPerSecond: Double?
    package var deliveredPerSecond: Double?
    package var brokerReceivedPerSecond: Double?
    package var acceptedPerSecond: Double?
    package var p95PublishSeconds: Double?
    package var p95FanoutSeconds: Double?
    package var residentMemoryBytes: Double?
    package var cpuPercent: Double?
    package var slowClientDropsPerSecond: Double?
    package var slowClientDropsTotal: Double?
    package var slowClientDisconnectsTotal: Double?
    package var malformedDropsTotal: Double?
    package var clientErrorsPerSecond: Double?
    package var clientErrorsTotal: Double?
    /// The client error code counted most often, with its count.
    package var topClientError: (code: String, count: Double)?
    package var brokerConnected: Bool?
    package var brokerSubscriptions: Double?
    /// From `storm_redis_connected`: 1 while presence in Redis is writable, 0 when down or not
    /// configured; nil from a gateway without presence support.
    package var redisConnected: Bool?
    /// Publishes refused by `--client-publish-rate` (`rate_limited`), per second and in total.
    package var rateLimitedPerSecond: Double?
    package var rateLimitedTotal: Double?
    /// The JetStream stream as this gateway's broker last sampled it (`storm_stream_*`; nil without JetStream).
    package var stream: StreamFigures?
    /// Observations between the last two scrapes, kept to aggregate the cluster's percentiles.
    package var publishWindow: PrometheusHistogram?
    package var fanoutWindow: PrometheusHistogram?

    package var connections: Double? {
        guard webSocketConnections != nil || sseConnections != nil else { return nil }
        return (webSocketConnections ?? 0) + (sseConnections ?? 0)
    }

    /// Messages delivered per message received from the broker: the average fan-out of this gateway.
    package var fanoutRatio: Double? {
        guard let delivered = deliveredPerSecond, let received = brokerReceivedPerSecond, received > 0 else { return nil }
        return delivered / received
    }

    package init(address: String, url: String) {
        self.address = address
        self.url = url
    }

    /// Figures from the latest scrape and, for rates and windowed percentiles, the one before it.
    package init(address: String, url: String, latest: ScrapeSample, previous: ScrapeSample?) {
        self.init(address: address, url: url)
        state = .up
        let now = latest.exposition
        let build = now.samples(named: "storm_build_info").first?.labels
        version = build?["version"]
        instanceID = build?["instance_id"]
        if let started = now.value("process_start_time_seconds"), started > 0 {
            uptimeSeconds = max(0, latest.wallClock - started)
        }
        webSocketConnections = now.value("storm_connections", matching: ["transport": "websocket"])
        sseConnections = now.value("storm_connections", matching: ["transport": "sse"])
        residentMemoryBytes = now.value("process_resident_memory_bytes")
        slowClientDropsTotal = now.value("storm_messages_dropped_total", matching: ["reason": "slow_client"])
        malformedDropsTotal = now.value("storm_messages_dropped_total", matching: ["reason": "malformed"])
        slowClientDisconnectsTotal = now.sum("storm_slow_client_disconnects_total")
        clientErrorsTotal = now.sum("storm_client_errors_total")
        if let top = now.samples(named: "storm_client_errors_total").max(by: { $0.value < $1.value }), top.value > 0 {
            topClientError = (code: top.labels["code"] ?? "?", count: top.value)
        }
        brokerConnected = now.value("storm_broker_connected").map { $0 >= 1 }
        brokerSubscriptions = now.value("storm_broker_subscriptions")
        redisConnected = now.value("storm_redis_connected").map { $0 >= 1 }
        rateLimitedTotal = now.sum("storm_publish_rate_limited_total")
        stream = StreamFigures(now)

        guard let previous else { return }
        let before = previous.exposition
        let seconds = latest.elapsed - previous.elapsed
        func rate(_ name: String, _ selector: PrometheusLabels = [:]) -> Double? {
            PrometheusRate.perSecond(from: before.sum(name, matching: selector), to: now.sum(name, matching: selector), over: seconds)
        }
        publishedPerSecond = rate("storm_messages_published_total")
        deliveredPerSecond = rate("storm_messages_delivered_total")
        brokerReceivedPerSecond = rate("storm_broker_messages_received_total")
        acceptedPerSecond = rate("storm_connections_accepted_total")
        slowClientDropsPerSecond = rate("storm_messages_dropped_total", ["reason": "slow_client"])
        clientErrorsPerSecond = rate("storm_client_errors_total")
        rateLimitedPerSecond = rate("storm_publish_rate_limited_total")
        cpuPercent = rate("process_cpu_seconds_total").map { $0 * 100 }
        publishWindow = Self.window("storm_publish_duration_seconds", now: now, before: before)
        fanoutWindow = Self.window("storm_fanout_latency_seconds", now: now, before: before)
        p95PublishSeconds = publishWindow?.quantile(0.95)
        p95FanoutSeconds = fanoutWindow?.quantile(0.95)
    }

    /// The observations of histogram `name` between two scrapes.
    package static func window(_ name: String, now: PrometheusExposition, before: PrometheusExposition) -> PrometheusHistogram? {
        guard let current = now.histogram(name) else { return nil }
        guard let earlier = before.histogram(name) else { return current }
        return current.increase(since: earlier)
    }
}

/// The cluster line of the header: sums over the gateways that answer.
package struct ClusterFigures: Sendable {
    package var gatewaysUp = 0
    package var gatewaysDown = 0
    package var gatewaysWaiting = 0
    package var webSocketConnections: Double?
    package var sseConnections: Double?
    package var publishedPerSecond: Double?
    package var deliveredPerSecond: Double?
    package var brokerReceivedPerSecond: Double?
    package var p95PublishSeconds: Double?
    package var p95FanoutSeconds: Double?
    package var slowClientDropsPerSecond: Double?
    package var slowClientDropsTotal: Double?
    package var brokersConnected = 0
    package var brokersKnown = 0
    package var brokerSubscriptions: Double?
    package var redisConnected = 0
    package var redisKnown = 0
    package var residentMemoryBytes: Double?

    package var connections: Double? {
        guard webSocketConnections != nil || sseConnections != nil else { return nil }
        return (webSocketConnections ?? 0) + (sseConnections ?? 0)
    }

    package init(_ gateways: [GatewayFigures]) {
        var publishWindow: PrometheusHistogram?
        var fanoutWindow: PrometheusHistogram?
        for gateway in gateways {
            switch gateway.state {
            case .waiting: gatewaysWaiting += 1
            case .down: gatewaysDown += 1
            case .up: gatewaysUp += 1
            }
            guard gateway.state == .up else { continue }
            webSocketConnections = Self.add(webSocketConnections, gateway.webSocketConnections)
            sseConnections = Self.add(sseConnections, gateway.sseConnections)
            publishedPerSecond = Self.add(publishedPerSecond, gateway.publishedPerSecond)
            deliveredPerSecond = Self.add(deliveredPerSecond, gateway.deliveredPerSecond)
            brokerReceivedPerSecond = Self.add(brokerReceivedPerSecond, gateway.brokerReceivedPerSecond)
            slowClientDropsPerSecond = Self.add(slowClientDropsPerSecond, gateway.slowClientDropsPerSecond)
            slowClientDropsTotal = Self.add(slowClientDropsTotal, gateway.slowClientDropsTotal)
            brokerSubscriptions = Self.add(brokerSubscriptions, gateway.brokerSubscriptions)
            residentMemoryBytes = Self.add(residentMemoryBytes, gateway.residentMemoryBytes)
            if let connected = gateway.brokerConnected {
                brokersKnown += 1
                if connected { brokersConnected += 1 }
            }
            if let connected = gateway.redisConnected {
                redisKnown += 1
                if connected { redisConnected += 1 }
            }
            publishWindow = Self.merge(publishWindow, gateway.publishWindow)
            fanoutWindow = Self.merge(fanoutWindow, gateway.fanoutWindow)
        }
        // The cluster's p95 comes from all observations together, not from averaging each gateway's p95.
        p95PublishSeconds = publishWindow?.quantile(0.95)
        p95FanoutSeconds = fanoutWindow?.quantile(0.95)
    }

    /// nil + nil stays nil (nobody exports it); otherwise missing counts as zero.
    package static func add(_ total: Double?, _ value: Double?) -> Double? {
        guard let value else { return total }
        return (total ?? 0) + value
    }

    package static func merge(_ total: PrometheusHistogram?, _ value: PrometheusHistogram?) -> PrometheusHistogram? {
        guard let value else { return total }
        return total?.adding(value) ?? value
    }
}
