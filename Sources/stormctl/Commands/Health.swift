import ArgumentParser
import Foundation
import StormCore

/// What one gateway says about itself: `/readyz` (status and JSON body) and `/metrics` (parsed).
struct GatewayProbe: Sendable {
    /// nil when the gateway could not be reached at all.
    var readyStatus: Int?
    var ready: [String: [UInt8]] = [:]
    var readyError: String?
    var metrics: PrometheusExposition?
    var metricsError: String?

    static func probe(_ endpoint: StormEndpoint) async -> GatewayProbe {
        var probe = GatewayProbe()
        let client = StormHTTPClient(endpoint: endpoint, options: StormConnectOptions(connectTimeout: .seconds(3)))
        do {
            let answer = try await client.request(path: "/readyz", timeout: .seconds(5), throwingOnErrorStatus: false)
            probe.readyStatus = answer.status
            probe.ready = (try? JSONScanner.objectMembers(answer.body)) ?? [:]
            if answer.status != 200 {
                let error = StormError(httpStatus: answer.status, body: answer.body)
                probe.readyError = error.message
            }
        } catch {
            probe.readyError = error.message
            await client.close()
            return probe
        }
        do {
            let body = try await client.request(path: "/metrics", timeout: .seconds(5)).body
            probe.metrics = try PrometheusTextParser.parse(body)
        } catch {
            probe.metricsError = "\(error)"
        }
        await client.close()
        return probe
    }

    /// `/readyz`'s `limits` object as `name=value` pairs, sorted by name.
    var limits: String? {
        guard let raw = ready["limits"], let members = try? JSONScanner.objectMembers(raw), !members.isEmpty else { return nil }
        return members.sorted { $0.key < $1.key }.map { "\($0.key)=\(String(decoding: $0.value, as: UTF8.self))" }.joined(separator: " ")
    }

    func readyField(_ key: String) -> String? { ready[key].flatMap { try? JSONScanner.string($0) } }

    var version: String? { metrics?.samples(named: "storm_build_info").first?.labels["version"] }
    var connections: Double? { metrics?.sum("storm_connections") }
    var consumerLag: Double? { metrics?.sum("storm_consumer_lag_messages") }
    /// Replicas of the message stream, when the gateway exports `storm_stream_replicas`.
    var streamReplicas: Double? { metrics?.value("storm_stream_replicas") }
    /// The message stream as the gateway's `storm_stream_*` gauges describe it; nil when it exports
    /// none (the memory engine, `--jetstream off`, a stream not sampled yet) or `/metrics` was unread.
    var stream: StreamFigures? {
        guard let metrics, let current = metrics.value("storm_stream_replicas") else { return nil }
        let leader = metrics.samples(named: "storm_stream_leader_info").first { $0.value == 1 }?.labels["leader"]
        return StreamFigures(
            replicas: current, configuredReplicas: metrics.value("storm_stream_replicas_configured"),
            clustered: metrics.value("storm_stream_clustered").map { $0 == 1 },
            messages: metrics.value("storm_stream_messages"), bytes: metrics.value("storm_stream_bytes"),
            maxMessages: metrics.value("storm_stream_max_messages"), maxBytes: metrics.value("storm_stream_max_bytes"), leader: leader)
    }

    /// The process's role: `/readyz`'s `role` (`gateway`, `all`, `consumer`); nil when it was not read.
    var role: String? {
        if let role = readyField("role") { return role }
        // A gateway from before /readyz named its role: one that answered is at least a gateway.
        return readyStatus == 200 ? "gateway" : nil
    }

    /// The stream row: what the gauges say, or why there is no stream.
    var streamSummary: String {
        if let stream { return stream.summary }
        if metrics != nil { return "none (no storm_stream_* gauges: the memory engine, --jetstream off, or not sampled yet)" }
        return "unknown (\(metricsError ?? readyError ?? "/metrics not read"))"
    }

    var uptimeSeconds: Double? {
        guard let start = metrics?.value("process_start_time_seconds") else { return nil }
        return max(0, Date().timeIntervalSince1970 - start)
    }
}

/// The JetStream stream's figures from a gateway's `/metrics` (`storm_stream_*`).
struct StreamFigures: Sendable {
    var replicas: Double
    var configuredReplicas: Double?
    var clustered: Bool?
    var messages: Double?
    var bytes: Double?
    var maxMessages: Double?
    var maxBytes: Double?
    var leader: String?

    private static func number(_ value: Double?) -> String { value.map { NagiosMeasurement.format($0) } ?? "unknown" }
    private static func limit(_ value: Double?) -> String {
        guard let value else { return "unknown" }
        return value < 0 ? "unlimited" : NagiosMeasurement.format(value)
    }

    var replicasText: String { "\(Self.number(replicas))/\(Self.number(configuredReplicas)) in sync" + (clustered == true ? ", leader \(leader ?? "none")" : "") }
    var limitsText: String { "max_messages=\(Self.limit(maxMessages)) max_bytes=\(Self.limit(maxBytes))" }

    /// One line: health, size and how full it is.
    var summary: String {
        var health = "ok"
        if replicas == 0 { health = "unconfirmed (the last sample failed)" }
        else if let configured = configuredReplicas, replicas < configured { health = "under-replicated" }
        var text = "jetstream, \(health), \(Self.number(messages)) messages, \(Self.number(bytes)) bytes"
        var fill: [String] = []
        if let messages, let max = maxMessages, max > 0 { fill.append("\(Int((messages / max * 100).rounded()))% of max_messages") }
        if let bytes, let max = maxBytes, max > 0 { fill.append("\(Int((bytes / max * 100).rounded()))% of max_bytes") }
        if !fill.isEmpty { text += " (" + fill.joined(separator: ", ") + ")" }
        return text
    }

    /// `{"replicas":…,"replicas_configured":…,…}` with numbers (null where unknown).
    var json: String {
        func n(_ value: Double?) -> String { value.map { NagiosMeasurement.format($0) } ?? "null" }
        return "{\"replicas\":\(n(replicas)),\"replicas_configured\":\(n(configuredReplicas)),\"clustered\":\(clustered.map { "\($0)" } ?? "null"),"
            + "\"leader\":\(leader.map(JSONWriter.quoted) ?? "null"),\"messages\":\(n(messages)),\"bytes\":\(n(bytes)),"
            + "\"max_messages\":\(n(maxMessages)),\"max_bytes\":\(n(maxBytes))}"
    }
}

extension Stormctl {
    /// `stormctl info`: each gateway's version, uptime, broker, presence and load.
    struct Info: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show each gateway's version, uptime, broker, stream, consumer, presence and connections.",
            discussion: """
                Every gateway listed by GET /api/v1/gateways is asked for /readyz and /metrics; what neither exposes is printed as unknown. The role is /readyz's role (gateway, all, consumer); the stream is what the storm_stream_* gauges say (replicas in sync of configured, leader, messages, bytes, max_messages and max_bytes, -1 meaning unlimited), or none when the gateway exports no stream gauges (the memory engine, --jetstream off). With --json each gateway also has a stream_figures object of numbers, null without a stream. A gateway that does not answer is reported as down and the command exits 75 after printing the others.

                Examples:
                  stormctl info
                  stormctl info --json

                \(ExitStatus.helpText)
                """
        )

        @OptionGroup var global: GlobalOptions

        func run() async throws {
            try await reportingFailures {
                let members = try await ClusterGateways.members(global)
                var failed = 0
                var objects: [String] = []
                for member in members {
                    let probe = await GatewayProbe.probe(member.endpoint)
                    if probe.readyStatus == nil { failed += 1 }
                    let registryVersion = member.fields["version"].flatMap { try? JSONScanner.string($0) }
                    let rows: [(String, String)] = [
                        ("gateway", member.id),
                        ("url", member.endpoint.description),
                        ("status", probe.readyStatus == nil ? "down (\(probe.readyError ?? "no answer"))" : probe.readyStatus == 200 ? "ready" : "not ready (\(probe.readyError ?? "HTTP \(probe.readyStatus ?? 0)"))"),
                        ("version", probe.version ?? registryVersion ?? "unknown"),
                        ("uptime", probe.uptimeSeconds.map { Age.format(milliseconds: $0 * 1000) } ?? "unknown"),
                        ("role", probe.role ?? "unknown"),
                        ("broker", probe.readyField("broker").map { b in b + (probe.metrics?.value("storm_broker_connected") == 1 ? " (connected)" : probe.metrics == nil ? "" : " (disconnected)") } ?? "unknown"),
                        ("stream", probe.streamSummary),
                        ("stream replicas", probe.stream?.replicasText ?? (probe.metrics == nil ? "unknown" : "none")),
                        ("stream limits", probe.stream?.limitsText ?? (probe.metrics == nil ? "unknown" : "none")),
                        ("consumer", probe.readyField("consumer").map { c in c + (probe.readyField("consumer_error").map { " (\($0))" } ?? "") } ?? "unknown"),
                        ("consumer lag", probe.consumerLag.map { NagiosMeasurement.format($0) } ?? "unknown"),
                        ("presence", probe.readyField("presence") ?? "unknown"),
                        ("connections", probe.connections.map { NagiosMeasurement.format($0) } ?? "unknown"),
                        ("subscribed channels", probe.metrics?.value("storm_broker_subscriptions").map { NagiosMeasurement.format($0) } ?? "unknown"),
                        ("limits", probe.limits ?? "unknown"),
                    ]
                    if global.json {
                        let keys = rows.map { ($0.0.replacingOccurrences(of: " ", with: "_"), $0.1) }
                        let figures = ",\"stream_figures\":" + (probe.stream?.json ?? "null")
                        objects.append("{" + keys.map { "\(JSONWriter.quoted($0.0)):\(JSONWriter.quoted($0.1))" }.joined(separator: ",") + figures + "}")
                    } else {
                        var table = KeyValueTable()
                        for (key, value) in rows { table.add(key, value) }
                        StandardOutput.write(table.render() + "\n")
                    }
                }
                if global.json { StandardOutput.write("{\"gateways\":[" + objects.joined(separator: ",") + "]}\n") }
                if failed > 0 { throw ExitCode(ExitStatus.temporaryFailure) }
            }
        }
    }

    /// `stormctl check`: a monitoring-plugin check of one gateway (Nagios/Icinga exit codes).
    struct Check: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check one gateway for monitoring (Nagios/Icinga plugin exit codes, perfdata).",
            discussion: """
                Prints one status line with perfdata, e.g. STORM OK - 12 connections | connections=12;1000;2000 consumer_lag=0;100;1000, and exits 0 OK, 1 WARNING, 2 CRITICAL or 3 UNKNOWN. These exit codes are the monitoring-plugin convention, not the sysexits codes of the other stormctl commands. A value at or above its -warn threshold is WARNING, at or above its -crit threshold CRITICAL. A gateway that cannot be reached is CRITICAL. With --readyz, a /readyz answer other than 200 is CRITICAL, so the command also serves as a systemd or Kubernetes probe. --stream-replicas N is CRITICAL when the stream has fewer replicas, and UNKNOWN when the gateway does not export storm_stream_replicas. A metric the gateway does not export makes its check UNKNOWN.

                Examples:
                  stormctl check --connections-warn 1000 --connections-crit 2000
                  stormctl check --consumer-lag-warn 100 --consumer-lag-crit 1000 --readyz
                  stormctl --server http://10.0.0.5:8080 check --readyz --stream-replicas 3
                """
        )

        @OptionGroup var global: GlobalOptions

        @Option(name: .long, help: ArgumentHelp("WARNING at or above this many open connections.", valueName: "n"))
        var connectionsWarn: Double?
        @Option(name: .long, help: ArgumentHelp("CRITICAL at or above this many open connections.", valueName: "n"))
        var connectionsCrit: Double?
        @Option(name: .long, help: ArgumentHelp("WARNING at or above this history consumer lag (messages).", valueName: "n"))
        var consumerLagWarn: Double?
        @Option(name: .long, help: ArgumentHelp("CRITICAL at or above this history consumer lag (messages).", valueName: "n"))
        var consumerLagCrit: Double?
        @Option(name: .long, help: ArgumentHelp("CRITICAL when the message stream has fewer replicas.", valueName: "n"))
        var streamReplicas: Int?
        @Flag(name: .long, help: "CRITICAL when /readyz does not answer 200.")
        var readyz = false

        func run() async throws {
            let status: NagiosStatus
            do {
                let report = try await evaluate()
                StandardOutput.write(report.line + "\n")
                status = report.status
            } catch {
                StandardOutput.write("STORM UNKNOWN - \(error.message)\n")
                status = .unknown
            }
            if status != .ok { throw ExitCode(status.rawValue) }
        }

        func evaluate() async throws(StormError) -> NagiosReport {
            let endpoint = try global.endpoint()
            let probe = await GatewayProbe.probe(endpoint)
            var report = NagiosReport(summary: "")
            guard let readyStatus = probe.readyStatus else {
                report.findings.append((.critical, "\(endpoint) is unreachable: \(probe.readyError ?? "no answer")"))
                return report
            }
            if readyz, readyStatus != 200 {
                report.findings.append((.critical, "/readyz answered \(readyStatus): \(probe.readyError ?? "")"))
            }
            if probe.metrics == nil {
                report.findings.append((.unknown, "/metrics unreadable: \(probe.metricsError ?? "")"))
            }
            let connections = NagiosMeasurement(label: "connections", value: probe.connections, warning: connectionsWarn, critical: connectionsCrit)
            report.measurements.append(connections)
            if consumerLagWarn != nil || consumerLagCrit != nil || probe.consumerLag != nil {
                report.measurements.append(NagiosMeasurement(label: "consumer_lag", value: probe.consumerLag, warning: consumerLagWarn, critical: consumerLagCrit))
            }
            if let streamReplicas {
                if let replicas = probe.streamReplicas {
                    report.measurements.append(NagiosMeasurement(label: "stream_replicas", value: replicas))
                    if replicas < Double(streamReplicas) {
                        report.findings.append((.critical, "the stream has \(NagiosMeasurement.format(replicas)) replicas, fewer than \(streamReplicas)"))
                    }
                } else {
                    report.findings.append((.unknown, "the gateway does not export storm_stream_replicas"))
                }
            }
            let count = connections.value.map(NagiosMeasurement.format) ?? "unknown"
            report.summary = "\(count) connection\(count == "1" ? "" : "s")" + (readyz ? ", ready" : "")
            return report
        }
    }
}
