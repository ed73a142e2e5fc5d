import StormCore

/// The batch-mode output (`--once`, `-n`): the screen's figures as plain text or one JSON object per
/// report, for scripts and logs.
package enum BatchReport {
    /// A text block like the screen's header and gateway table, ASCII only.
    package static func text(_ frame: DashboardFrame, interval: Double) -> String {
        let c = frame.cluster
        var lines: [String] = []
        lines.append(
            "stormtop \(StormVersion.current)  \(Format.timestamp(frame.wallClock))  gateways: \(c.gatewaysUp) up, \(c.gatewaysDown) down"
                + (c.gatewaysWaiting > 0 ? ", \(c.gatewaysWaiting) waiting" : "") + "  interval: \(Format.quantity(interval))s")
        lines.append(
            "connections: websocket \(Format.count(c.webSocketConnections))  sse \(Format.count(c.sseConnections))  total \(Format.count(c.connections))")
        lines.append(
            "messages/s: published \(Format.quantity(c.publishedPerSecond))  delivered \(Format.quantity(c.deliveredPerSecond))  from broker \(Format.quantity(c.brokerReceivedPerSecond))")
        lines.append(
            "p95: publish \(Format.latency(c.p95PublishSeconds, ascii: true))  fan-out \(Format.latency(c.p95FanoutSeconds, ascii: true))"
                + "  slow-client drops: \(Format.quantity(c.slowClientDropsPerSecond))/s (\(Format.count(c.slowClientDropsTotal)) total)"
                + "  broker: \(c.brokersConnected)/\(c.brokersKnown) connected, \(Format.count(c.brokerSubscriptions)) subscriptions"
                + "  redis: " + (c.redisKnown == 0 ? Format.unknown : "\(c.redisConnected)/\(c.redisKnown) connected"))
        let columns: [(String, Int, (GatewayFigures) -> String)] = [
            ("GATEWAY", 21, { $0.address }),
            ("STATE", 5, { $0.state.label }),
            ("UPTIME", 7, { Format.duration($0.uptimeSeconds) }),
            ("CONNS", 6, { Format.count($0.connections) }),
            ("WS", 6, { Format.count($0.webSocketConnections) }),
            ("SSE", 6, { Format.count($0.sseConnections) }),
            ("IN/s", 7, { Format.quantity($0.publishedPerSecond) }),
            ("OUT/s", 7, { Format.quantity($0.deliveredPerSecond) }),
            ("P95PUB", 8, { Format.latency($0.p95PublishSeconds, ascii: true) }),
            ("P95FAN", 8, { Format.latency($0.p95FanoutSeconds, ascii: true) }),
            ("CPU", 6, { Format.percent($0.cpuPercent) }),
            ("MEM", 8, { Format.bytes($0.residentMemoryBytes) }),
            ("SUBS", 5, { Format.count($0.brokerSubscriptions) }),
        ]
        lines.append(columns.map { pad($0.0, $0.1, left: $0.0 == "GATEWAY") }.joined(separator: " "))
        for gateway in frame.gateways {
            var line = columns.map { pad($0.2(gateway), $0.1, left: $0.0 == "GATEWAY") }.joined(separator: " ")
            if case .down(let reason) = gateway.state { line += "  (\(reason))" }
            lines.append(line)
        }
        if let presence = frame.presence { lines += presenceLines(presence) }
        lines += clusterViewLines(frame)
        return lines.joined(separator: "\n") + "\n"
    }

    /// The alerts, the stream, the consumers and the busiest channels, as the views 4-6 show them.
    package static func clusterViewLines(_ frame: DashboardFrame) -> [String] {
        var lines = ["alerts: " + (frame.alerts.isEmpty ? "none" : frame.alerts.map(\.text).joined(separator: "; "))]
        if let stream = frame.gateways.lazy.filter({ $0.state == .up }).compactMap(\.stream).first {
            lines.append(
                "stream: replicas \(Format.count(stream.replicas))/\(Format.count(stream.configuredReplicas))  leader \(stream.leaderLabel)"
                    + "  messages \(Format.count(stream.messages)) of \(stream.maxMessages.map { Format.count($0) } ?? "unlimited")"
                    + "  bytes \(Format.bytes(stream.bytes)) of \(stream.maxBytes.map { Format.bytes($0) } ?? "unlimited")  full \(Format.percent(stream.fullPercent))")
        }
        if !frame.consumers.isEmpty {
            let columns: [(String, Int, (ConsumerFigures) -> String)] = [
                ("CONSUMER", 21, { $0.address }), ("STATE", 5, { $0.state.label }), ("READY", 9, { $0.readyLabel }),
                ("LAG", 8, { Format.count($0.lag) }), ("ROWS/s", 8, { Format.quantity($0.rowsPerSecond) }),
                ("BATCH", 6, { Format.quantity($0.batchSize) }), ("P95INS", 8, { Format.latency($0.p95InsertSeconds, ascii: true) }),
                ("FAIL/s", 6, { Format.quantity($0.failuresPerSecond) }), ("FAILURES", 8, { Format.count($0.failuresTotal) }),
            ]
            let left: Set<String> = ["CONSUMER", "STATE", "READY"]
            lines.append(columns.map { pad($0.0, $0.1, left: left.contains($0.0)) }.joined(separator: " "))
            for consumer in frame.consumers {
                var line = columns.map { pad($0.2(consumer), $0.1, left: left.contains($0.0)) }.joined(separator: " ")
                if case .down(let reason) = consumer.state { line += "  (\(reason))" } else if let reason = consumer.readyReason { line += "  (\(reason))" }
                lines.append(line)
            }
        }
        let channels = frame.channelRates.sorted { ($0.deliveriesPerSecond ?? -1, $1.channel) > ($1.deliveriesPerSecond ?? -1, $0.channel) }
        if !channels.isEmpty {
            lines.append([pad("CHANNEL", 28, left: true), pad("GATEWAY", 21, left: true), pad("SUBS", 6, left: false), pad("MSGS/s", 8, left: false), pad("OUT/s", 8, left: false)].joined(separator: " "))
            for rate in channels.prefix(textChannelLimit) {
                lines.append(
                    [pad(rate.channel, 28, left: true), pad(rate.gateway, 21, left: true), pad(Format.count(Double(rate.subscribers)), 6, left: false),
                     pad(Format.quantity(rate.messagesPerSecond), 8, left: false), pad(Format.quantity(rate.deliveriesPerSecond), 8, left: false)].joined(separator: " "))
            }
            if channels.count > textChannelLimit { lines.append("... \(channels.count - textChannelLimit) more channels (--json lists all)") }
        }
        return lines
    }

    package static func streamJSON(_ stream: StreamFigures?) -> JSONValue {
        guard let stream else { return .null }
        return .object([
            ("replicas", .number(stream.replicas)), ("replicas_configured", .number(stream.configuredReplicas)),
            ("leader", stream.leader.map(JSONValue.string) ?? .null), ("clustered", stream.clustered.map(JSONValue.bool) ?? .null), ("messages", .number(stream.messages)), ("bytes", .number(stream.bytes)),
            ("max_messages", .number(stream.maxMessages)), ("max_bytes", .number(stream.maxBytes)), ("full_percent", .number(stream.fullPercent)),
        ])
    }

    package static func consumerJSON(_ consumer: ConsumerFigures) -> JSONValue {
        var error: JSONValue = .null
        if case .down(let reason) = consumer.state { error = .string(reason) }
        return .object([
            ("address", .string(consumer.address)), ("url", .string(consumer.url)),
            ("state", .string(consumer.state.isDown ? "down" : consumer.state == .up ? "up" : "waiting")), ("error", error),
            ("ready", consumer.ready.map(JSONValue.bool) ?? .null), ("ready_error", consumer.readyReason.map(JSONValue.string) ?? .null),
            ("lag_messages", .number(consumer.lag)), ("rows_per_second", .number(consumer.rowsPerSecond)), ("rows_total", .number(consumer.rowsTotal)),
            ("batch_size", .number(consumer.batchSize)), ("p95_insert_seconds", .number(consumer.p95InsertSeconds)),
            ("failures_per_second", .number(consumer.failuresPerSecond)), ("failures_total", .number(consumer.failuresTotal)),
            ("postgres_connected", consumer.postgresConnected.map(JSONValue.bool) ?? .null),
        ])
    }

    /// Channels listed by the text report; the JSON report has them all.
    package static let textChannelLimit = 20

    /// With `--redis`: the state of Redis and the busiest channels.
    package static func presenceLines(_ presence: PresenceSnapshot) -> [String] {
        switch presence.state {
        case .waiting: return ["presence: \(presence.endpoint) not read yet"]
        case .down(let reason): return ["presence: \(presence.endpoint) DOWN (\(reason))"]
        case .up: break
        }
        var lines = [
            "presence: \(presence.endpoint) up, \(presence.gateways.count) gateways registered, \(presence.channels.count)"
                + (presence.truncated ? "+ channels (list incomplete)" : " channels")
        ]
        guard !presence.channels.isEmpty else { return lines }
        lines.append([pad("CHANNEL", 32, left: true), pad("CLIENTS", 7, left: false), pad("USERS", 7, left: false), pad("GATEWAYS", 8, left: false)].joined(separator: " "))
        for channel in presence.channels.prefix(textChannelLimit) {
            lines.append(
                [
                    pad(channel.channel, 32, left: true), pad(Format.count(Double(channel.clients)), 7, left: false),
                    pad(Format.count(channel.users.map { Double($0) }), 7, left: false),
                    pad(Format.count(channel.gateways.map { Double($0) }), 8, left: false),
                ].joined(separator: " "))
        }
        if presence.channels.count > textChannelLimit { lines.append("... \(presence.channels.count - textChannelLimit) more channels (--json lists all)") }
        return lines
    }

    /// The `presence` member of the JSON report: null without `--redis`.
    package static func presenceJSON(_ presence: PresenceSnapshot?) -> JSONValue {
        guard let presence else { return .null }
        var state = "waiting"
        var error: JSONValue = .null
        switch presence.state {
        case .waiting: break
        case .up: state = "up"
        case .down(let reason):
            state = "down"
            error = .string(reason)
        }
        return .object([
            ("redis", .string(presence.endpoint)),
            ("state", .string(state)),
            ("error", error),
            ("gateways", .array(presence.gateways.map { gateway -> JSONValue in
                .object([
                    ("id", .string(gateway.id)), ("metrics", .string(gateway.metricsURL)), ("version", .string(gateway.version)),
                    ("presence", .string(gateway.presence)),
                ])
            })),
            ("channels_truncated", .bool(presence.truncated)),
            ("channels", .array(presence.channels.map { channel -> JSONValue in
                .object([
                    ("channel", .string(channel.channel)), ("clients", .int(channel.clients)),
                    ("users", channel.users.map(JSONValue.int) ?? .null), ("gateways", channel.gateways.map(JSONValue.int) ?? .null),
                ])
            })),
        ])
    }

    package static func pad(_ text: String, _ width: Int, left: Bool) -> String {
        guard text.count < width else { return text }
        let fill = String(repeating: " ", count: width - text.count)
        return left ? text + fill : fill + text
    }

    /// One line of JSON; unknown figures are `null`, never omitted, so a consumer sees the full shape.
    package static func json(_ frame: DashboardFrame, interval: Double) -> String {
        let c = frame.cluster
        let cluster: JSONValue = .object([
            ("gateways_up", .int(c.gatewaysUp)),
            ("gateways_down", .int(c.gatewaysDown)),
            ("gateways_waiting", .int(c.gatewaysWaiting)),
            ("connections", .object([("websocket", .number(c.webSocketConnections)), ("sse", .number(c.sseConnections)), ("total", .number(c.connections))])),
            ("published_per_second", .number(c.publishedPerSecond)),
            ("delivered_per_second", .number(c.deliveredPerSecond)),
            ("broker_received_per_second", .number(c.brokerReceivedPerSecond)),
            ("p95_publish_seconds", .number(c.p95PublishSeconds)),
            ("p95_fanout_seconds", .number(c.p95FanoutSeconds)),
            ("slow_client_drops_per_second", .number(c.slowClientDropsPerSecond)),
            ("slow_client_drops_total", .number(c.slowClientDropsTotal)),
            ("brokers_connected", .int(c.brokersConnected)),
            ("brokers_known", .int(c.brokersKnown)),
            ("broker_subscriptions", .number(c.brokerSubscriptions)),
            ("redis_connected", .int(c.redisConnected)),
            ("redis_known", .int(c.redisKnown)),
            ("resident_memory_bytes", .number(c.residentMemoryBytes)),
        ])
        let gateways: [JSONValue] = frame.gateways.map { g in
            var error: JSONValue = .null
            if case .down(let reason) = g.state { error = .string(reason) }
            return .object([
                ("address", .string(g.address)),
                ("url", .string(g.url)),
                ("state", .string(g.state.isDown ? "down" : g.state.label == "up" ? "up" : "waiting")),
                ("error", error),
                ("version", g.version.map(JSONValue.string) ?? .null),
                ("instance_id", g.instanceID.map(JSONValue.string) ?? .null),
                ("uptime_seconds", .number(g.uptimeSeconds)),
                ("connections", .object([("websocket", .number(g.webSocketConnections)), ("sse", .number(g.sseConnections)), ("total", .number(g.connections))])),
                ("published_per_second", .number(g.publishedPerSecond)),
                ("delivered_per_second", .number(g.deliveredPerSecond)),
                ("broker_received_per_second", .number(g.brokerReceivedPerSecond)),
                ("connections_accepted_per_second", .number(g.acceptedPerSecond)),
                ("p95_publish_seconds", .number(g.p95PublishSeconds)),
                ("p95_fanout_seconds", .number(g.p95FanoutSeconds)),
                ("cpu_percent", .number(g.cpuPercent)),
                ("resident_memory_bytes", .number(g.residentMemoryBytes)),
                ("slow_client_drops_per_second", .number(g.slowClientDropsPerSecond)),
                ("slow_client_drops_total", .number(g.slowClientDropsTotal)),
                ("slow_client_disconnects_total", .number(g.slowClientDisconnectsTotal)),
                ("malformed_drops_total", .number(g.malformedDropsTotal)),
                ("client_errors_per_second", .number(g.clientErrorsPerSecond)),
                ("client_errors_total", .number(g.clientErrorsTotal)),
                ("broker_connected", g.brokerConnected.map(JSONValue.bool) ?? .null),
                ("broker_subscriptions", .number(g.brokerSubscriptions)),
                ("redis_connected", g.redisConnected.map(JSONValue.bool) ?? .null),
                ("rate_limited_per_second", .number(g.rateLimitedPerSecond)),
                ("rate_limited_total", .number(g.rateLimitedTotal)),
                ("stream", streamJSON(g.stream)),
            ])
        }
        return JSONValue.object([
            ("time", .string(Format.timestamp(frame.wallClock))),
            ("interval_seconds", .number(interval)),
            ("cluster", cluster),
            ("gateways", .array(gateways)),
            ("presence", presenceJSON(frame.presence)),
            ("consumers", .array(frame.consumers.map(consumerJSON))),
            ("channels", .array(frame.channelRates.map { rate -> JSONValue in
                .object([
                    ("channel", .string(rate.channel)), ("gateway", .string(rate.gateway)), ("subscribers", .int(rate.subscribers)),
                    ("messages_per_second", .number(rate.messagesPerSecond)), ("deliveries_per_second", .number(rate.deliveriesPerSecond)),
                ])
            })),
            ("alerts", .array(frame.alerts.map { .object([("kind", .string($0.kind.rawValue)), ("text", .string($0.text))]) })),
        ]).rendered + "\n"
    }
}

/// Just enough JSON to write the report with keys in a fixed, readable order.
package enum JSONValue {
    case null
    case bool(Bool)
    case int(Int)
    /// nil and non-finite numbers render as `null` (JSON has no NaN).
    case number(Double?)
    case string(String)
    case array([JSONValue])
    case object([(String, JSONValue)])

    package var rendered: String {
        switch self {
        case .null: return "null"
        case .bool(let value): return value ? "true" : "false"
        case .int(let value): return String(value)
        case .number(let value):
            guard let value, value.isFinite else { return "null" }
            if value == value.rounded(), abs(value) < 9e15 { return String(Int64(value)) }
            return "\(value)"
        case .string(let value): return JSONWriter.quoted(value)
        case .array(let values): return "[" + values.map(\.rendered).joined(separator: ",") + "]"
        case .object(let members):
            return "{" + members.map { JSONWriter.quoted($0.0) + ":" + $0.1.rendered }.joined(separator: ",") + "}"
        }
    }
}
