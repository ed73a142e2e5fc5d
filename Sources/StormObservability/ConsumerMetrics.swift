import Prometheus
import StormCore

/// The history consumer's metrics, registered into the registry `/metrics` serves: the gateway's
/// (`GatewayMetrics.registry`) with `--role all`, the consumer's own small server with `--role consumer`.
/// Created once, with fixed labels.
package final class ConsumerMetrics: Sendable {
    package let registry: PrometheusCollectorRegistry
    /// Messages not yet stored by the durable consumer: JetStream's `num_pending` (not delivered) plus
    /// `num_ack_pending` (delivered, not acknowledged), sampled.
    package let lag: Gauge
    /// Messages per stored batch.
    package let batchSize: ValueHistogram
    /// Time of one batch's transaction, BEGIN to COMMIT.
    package let insertDuration: ValueHistogram
    /// Rows actually inserted (redeliveries and duplicates are not rows).
    package let rows: Prometheus.Counter
    /// Messages acknowledged to JetStream after their batch committed.
    package let acknowledged: Prometheus.Counter
    package let postgresFailures: Prometheus.Counter
    package let natsFailures: Prometheus.Counter
    package let malformed: Prometheus.Counter
    /// 1 while the last PostgreSQL statement succeeded.
    package let postgresConnected: Gauge
    /// Rows deleted by the retention prune.
    package let pruned: Prometheus.Counter

    /// Batch sizes from 1 to the maximum fetch (5,000).
    package static let batchBuckets: [Double] = [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000]
    /// Transaction times from 0.5 ms to 10 s.
    package static let durationBuckets: [Double] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]

    package init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.registry = registry
        let r = registry
        lag = r.makeGauge(name: "storm_consumer_lag_messages", help: "Messages in JetStream not yet stored by the history consumer: not delivered plus delivered and unacknowledged (num_pending + num_ack_pending, sampled).")
        batchSize = r.makeValueHistogram(name: "storm_consumer_batch_size", buckets: Self.batchBuckets, help: "Messages per batch written to PostgreSQL.")
        insertDuration = r.makeValueHistogram(name: "storm_consumer_insert_duration_seconds", buckets: Self.durationBuckets, help: "Time of one batch's transaction, BEGIN to COMMIT.")
        rows = r.makeCounter(name: "storm_consumer_rows_total", help: "History rows inserted (redeliveries and duplicate ids insert nothing).")
        acknowledged = r.makeCounter(name: "storm_consumer_messages_acked_total", help: "Messages acknowledged to JetStream after their batch committed.")
        postgresFailures = r.makeCounter(name: "storm_consumer_failures_total", labels: [("reason", "postgres")], help: "Consumer failures, by reason; each is retried with backoff.")
        natsFailures = r.makeCounter(name: "storm_consumer_failures_total", labels: [("reason", "nats")], help: "Consumer failures, by reason; each is retried with backoff.")
        malformed = r.makeCounter(name: "storm_consumer_failures_total", labels: [("reason", "malformed")], help: "Consumer failures, by reason; each is retried with backoff.")
        postgresConnected = r.makeGauge(name: "storm_postgres_connected", help: "1 while the history consumer's last PostgreSQL statement succeeded.")
        pruned = r.makeCounter(name: "storm_history_pruned_rows_total", help: "History rows deleted by the retention prune (age or count).")
    }
}
