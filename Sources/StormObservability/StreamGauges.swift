import Prometheus
import Synchronization

/// What JetStream last said about the message stream: replicas, leader, contents and limits, for the
/// `storm_stream_*` gauges that stormtop's broker view and `stormctl check --stream-replicas` read.
///
/// Sampled in the background by `JetStreamContext` (one `js_GetStreamInfo` every `sampleInterval`), never
/// on a scrape: `/metrics` must not wait on NATS.
package struct StreamStatus: Sendable, Equatable {
    /// Replicas the stream is configured with (`--stream-replicas`).
    package var configuredReplicas: Int
    /// Copies in sync now: the leader plus each follower JetStream reports current and online. A stream
    /// on a single server (no cluster information) counts 1; 0 after a sample that failed.
    package var currentReplicas: Int
    /// The server that leads the stream, when JetStream names one.
    package var leader: String?
    /// JetStream reports cluster information (a clustered JetStream); false for a single server, which
    /// names no leader.
    package var clustered: Bool
    package var messages: UInt64
    package var bytes: UInt64
    /// Caps, -1 when unlimited.
    package var maxMessages: Int64
    package var maxBytes: Int64

    /// After a failed sample: no copy is known to be in sync and no leader is known.
    package mutating func unconfirmed() {
        currentReplicas = 0
        leader = nil
    }

    /// Seconds between two samples.
    package static let sampleInterval: Duration = .seconds(2)

    package init(configuredReplicas: Int, currentReplicas: Int, leader: String?, clustered: Bool, messages: UInt64, bytes: UInt64, maxMessages: Int64, maxBytes: Int64) {
        self.configuredReplicas = configuredReplicas
        self.currentReplicas = currentReplicas
        self.leader = leader
        self.clustered = clustered
        self.messages = messages
        self.bytes = bytes
        self.maxMessages = maxMessages
        self.maxBytes = maxBytes
    }

}

/// The `storm_stream_*` gauges. They are made at the first sample, so a gateway without JetStream
/// (memory broker, `--jetstream off`) exports none of them and checks that need them say UNKNOWN.
/// Fixed labels only; the leader's name is a label of `storm_stream_leader_info`, one series per NATS
/// server that led the stream (a handful), the current one at 1 and the others at 0.
package final class StreamGauges: Sendable {
    private struct Gauges {
        package var replicas: Gauge
        package var configuredReplicas: Gauge
        package var clustered: Gauge
        package var messages: Gauge
        package var bytes: Gauge
        package var maxMessages: Gauge
        package var maxBytes: Gauge
        package var leaders: [String: Gauge] = [:]
    }

    /// Most leader series kept: server names come from the NATS cluster's configuration, but stay bounded.
    package static let leaderLimit = 16

    private let registry: PrometheusCollectorRegistry
    private let gauges = Mutex<Gauges?>(nil)

    package init(registry: PrometheusCollectorRegistry) {
        self.registry = registry
    }

    package func set(_ status: StreamStatus?) {
        guard let status else { return }
        gauges.withLock { gauges in
            let r = registry
            var made = gauges ?? Gauges(
                replicas: r.makeGauge(name: "storm_stream_replicas", help: "Copies of the message stream in sync now: the leader and the followers JetStream reports current (1 on a single server; 0 when the last sample failed)."),
                configuredReplicas: r.makeGauge(name: "storm_stream_replicas_configured", help: "Replicas the message stream is configured with (--stream-replicas)."),
                clustered: r.makeGauge(name: "storm_stream_clustered", help: "1 when the stream lives in a clustered JetStream (it then has a leader, storm_stream_leader_info), 0 on a single server."),
                messages: r.makeGauge(name: "storm_stream_messages", help: "Messages the JetStream stream holds."),
                bytes: r.makeGauge(name: "storm_stream_bytes", help: "Bytes the JetStream stream holds."),
                maxMessages: r.makeGauge(name: "storm_stream_max_messages", help: "The stream's message cap (--stream-max-messages); -1 is unlimited."),
                maxBytes: r.makeGauge(name: "storm_stream_max_bytes", help: "The stream's byte cap (--stream-max-bytes); -1 is unlimited."))
            made.replicas.set(Int64(status.currentReplicas))
            made.configuredReplicas.set(Int64(status.configuredReplicas))
            made.clustered.set(Int64(status.clustered ? 1 : 0))
            made.messages.set(Int64(clamping: status.messages))
            made.bytes.set(Int64(clamping: status.bytes))
            made.maxMessages.set(status.maxMessages)
            made.maxBytes.set(status.maxBytes)
            if let leader = status.leader, made.leaders[leader] == nil, made.leaders.count < Self.leaderLimit {
                made.leaders[leader] = r.makeGauge(
                    name: "storm_stream_leader_info", labels: [("leader", leader)],
                    help: "1 for the NATS server that leads the message stream now, 0 for servers that led it before.")
            }
            for (name, gauge) in made.leaders { gauge.set(Int64(name == status.leader ? 1 : 0)) }
            gauges = made
        }
    }
}
