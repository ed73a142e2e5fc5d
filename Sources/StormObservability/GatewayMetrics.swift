import Prometheus
import StormCore

/// Every metric a gateway exports, created once with fixed labels (never per user or per channel).
///
/// Names follow Prometheus conventions: `storm_` prefix, base units (seconds, bytes), counters end in
/// `_total`. Each gateway owns its own registry, so tests can run several gateways in one process.
package final class GatewayMetrics: Sendable {
    /// Why a connection was refused at accept; the `reason` label of `storm_connections_refused_total`.
    package enum ConnectionRefusal: String, CaseIterable, Sendable {
        case maxConnections = "max_connections"
        case maxConnectionsPerIP = "max_connections_per_ip"
        case connectRate = "connect_rate"
    }

    /// How a history read (recovery or the history API) ended; the `outcome` label of
    /// `storm_recovery_reads_total`.
    package enum HistoryReadOutcome: String, CaseIterable, Sendable {
        case ok, cancelled, timeout, refused, error
    }

    package enum Transport: String, CaseIterable, Sendable {
        case webSocket = "websocket"
        case sse
        case http
    }

    package let registry = PrometheusCollectorRegistry()

    package let webSocketConnections: Gauge
    package let sseConnections: Gauge
    package let webSocketAccepted: Prometheus.Counter
    package let sseAccepted: Prometheus.Counter
    package let publishedHTTP: Prometheus.Counter
    package let publishedWebSocket: Prometheus.Counter
    /// Events the gateway publishes itself (presence join and leave).
    package let publishedServer: Prometheus.Counter
    package let deliveredWebSocket: Prometheus.Counter
    package let deliveredSSE: Prometheus.Counter
    package let droppedSlowClient: Prometheus.Counter
    package let droppedMalformed: Prometheus.Counter
    package let slowWebSocketDisconnects: Prometheus.Counter
    package let slowSSEDisconnects: Prometheus.Counter
    package let brokerMessagesReceived: Prometheus.Counter
    package let publishDuration: ValueHistogram
    package let fanoutLatency: ValueHistogram
    package let fanoutPass: ValueHistogram
    package let fanoutWrites: Prometheus.Counter
    package let brokerConnected: Gauge
    package let brokerSubscriptions: Gauge
    /// `storm_stream_*`: the JetStream stream as the broker last sampled it (none without JetStream).
    package let streamGauges: StreamGauges
    package let redisConnected: Gauge
    package let presenceWrites: Prometheus.Counter
    package let presenceErrors: Prometheus.Counter
    package let presenceBatches: Prometheus.Counter
    package let rateLimitedWebSocket: Prometheus.Counter
    /// `storm_publish_refused_total{reason="storage_full"}`: publishes JetStream refused for lack of room.
    package let publishRefusedStorageFull: Prometheus.Counter
    private let clientErrors: [StormError.Code: Prometheus.Counter]
    /// `storm_recovery_reads_total{outcome}`: history reads (recovery and the HTTP history route) by outcome.
    private let recoveryReadsOK: Prometheus.Counter
    private let recoveryReadsCancelled: Prometheus.Counter
    private let recoveryReadsTimeout: Prometheus.Counter
    private let recoveryReadsRefused: Prometheus.Counter
    private let recoveryReadsError: Prometheus.Counter
    /// `storm_recovery_reads_in_flight`: history reads running against the broker now.
    package let recoveryReadsInFlight: Gauge
    /// `storm_connections_refused_total{reason}`: connections refused at accept, by `ConnectionRefusal`.
    private let connectionsRefused: [ConnectionRefusal: Prometheus.Counter]
    /// `storm_connections_timed_out_total{reason="header"|"idle"}`: HTTP connections closed by
    /// `--header-timeout` and `--idle-timeout`.
    package let headerTimeouts: Prometheus.Counter
    package let idleTimeouts: Prometheus.Counter

    /// Latency buckets in seconds, from 0.25 ms to 10 s: the SLOs (publish p95 < 50 ms, fan-out p95
    /// < 100 ms) sit in the dense middle.
    package static let latencyBuckets: [Double] = [
        0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
    ]

    /// The codes a client can cause; counted under `storm_client_errors_total{code=…}`.
    package static let countedClientErrors: [StormError.Code] = [
        .badRequest, .invalidChannel, .messageTooLarge, .notFound, .methodNotAllowed, .tooManyChannels,
        .protocolViolation, .brokerUnavailable, .storageFull, .unauthorized, .forbidden, .rateLimited, .originNotAllowed, .hostNotAllowed,
        .unsupportedMediaType, .unsupportedWebSocketVersion, .tooManyConnections, .connectRateLimited, .requestTimeout,
    ]

    package init(instanceID: String) {
        let r = registry
        webSocketConnections = r.makeGauge(name: "storm_connections", labels: [("transport", "websocket")], help: "Open client connections by transport.")
        sseConnections = r.makeGauge(name: "storm_connections", labels: [("transport", "sse")], help: "Open client connections by transport.")
        webSocketAccepted = r.makeCounter(name: "storm_connections_accepted_total", labels: [("transport", "websocket")], help: "Client connections accepted since start, by transport.")
        sseAccepted = r.makeCounter(name: "storm_connections_accepted_total", labels: [("transport", "sse")], help: "Client connections accepted since start, by transport.")
        publishedHTTP = r.makeCounter(name: "storm_messages_published_total", labels: [("transport", "http")], help: "Messages accepted by this gateway, by transport (server: its own presence events).")
        publishedWebSocket = r.makeCounter(name: "storm_messages_published_total", labels: [("transport", "websocket")], help: "Messages accepted by this gateway, by transport (server: its own presence events).")
        publishedServer = r.makeCounter(name: "storm_messages_published_total", labels: [("transport", "server")], help: "Messages accepted by this gateway, by transport (server: its own presence events).")
        deliveredWebSocket = r.makeCounter(name: "storm_messages_delivered_total", labels: [("transport", "websocket")], help: "Messages written to client connections, by transport.")
        deliveredSSE = r.makeCounter(name: "storm_messages_delivered_total", labels: [("transport", "sse")], help: "Messages written to client connections, by transport.")
        droppedSlowClient = r.makeCounter(name: "storm_messages_dropped_total", labels: [("reason", "slow_client")], help: "Deliveries not made, by reason.")
        droppedMalformed = r.makeCounter(name: "storm_messages_dropped_total", labels: [("reason", "malformed")], help: "Deliveries not made, by reason.")
        slowWebSocketDisconnects = r.makeCounter(name: "storm_slow_client_disconnects_total", labels: [("transport", "websocket")], help: "Clients disconnected because their outbound buffer was full.")
        slowSSEDisconnects = r.makeCounter(name: "storm_slow_client_disconnects_total", labels: [("transport", "sse")], help: "Clients disconnected because their outbound buffer was full.")
        brokerMessagesReceived = r.makeCounter(name: "storm_broker_messages_received_total", help: "Messages received from the broker for local subscribers.")
        publishDuration = r.makeValueHistogram(name: "storm_publish_duration_seconds", buckets: Self.latencyBuckets, help: "Time from receiving a publish to the broker accepting it.")
        fanoutLatency = r.makeValueHistogram(name: "storm_fanout_latency_seconds", buckets: Self.latencyBuckets, help: "Time from a message's publish timestamp to its write to local subscribers.")
        fanoutPass = r.makeValueHistogram(
            name: "storm_fanout_pass_seconds", buckets: Self.latencyBuckets,
            help: "Time an event loop takes to write a channel's new messages to all its subscribers there; a message waits up to about one pass for its connection's turn.")
        fanoutWrites = r.makeCounter(
            name: "storm_fanout_writes_total",
            help: "Writes to client connections, each carrying every message the connection was owed (delivered messages per write is the batching).")
        brokerConnected = r.makeGauge(name: "storm_broker_connected", help: "1 when the broker connection is up.")
        brokerSubscriptions = r.makeGauge(name: "storm_broker_subscriptions", help: "Channels this gateway holds a broker subscription for.")
        redisConnected = r.makeGauge(name: "storm_redis_connected", help: "1 while the presence store in Redis is writable; 0 when it is down (presence degraded) or not configured (--redis).")
        presenceWrites = r.makeCounter(name: "storm_presence_writes_total", help: "Presence entries and user routes written to or deleted from the presence store.")
        presenceErrors = r.makeCounter(name: "storm_presence_errors_total", help: "Presence store writes that failed (the store was then reconnected and rewritten).")
        presenceBatches = r.makeCounter(name: "storm_presence_batches_total", help: "Pipelined presence writes (about one round trip each).")
        rateLimitedWebSocket = r.makeCounter(
            name: "storm_publish_rate_limited_total", labels: [("transport", "websocket")],
            help: "Publishes refused because their connection passed --client-publish-rate (answered rate_limited; the connection stays).")
        publishRefusedStorageFull = r.makeCounter(
            name: "storm_publish_refused_total", labels: [("reason", "storage_full")],
            help: "Publishes the broker refused, by reason (storage_full: the JetStream stream or store is full).")
        var errors: [StormError.Code: Prometheus.Counter] = [:]
        for code in Self.countedClientErrors {
            errors[code] = r.makeCounter(name: "storm_client_errors_total", labels: [("code", code.rawValue)], help: "Errors answered to clients, by code.")
        }
        clientErrors = errors
        func reads(_ outcome: HistoryReadOutcome) -> Prometheus.Counter {
            r.makeCounter(
                name: "storm_recovery_reads_total", labels: [("outcome", outcome.rawValue)],
                help: "History reads for recovery and the history API, by outcome (ok; cancelled: the connection went; timeout; refused: too many in flight; error).")
        }
        recoveryReadsOK = reads(.ok)
        recoveryReadsCancelled = reads(.cancelled)
        recoveryReadsTimeout = reads(.timeout)
        recoveryReadsRefused = reads(.refused)
        recoveryReadsError = reads(.error)
        recoveryReadsInFlight = r.makeGauge(name: "storm_recovery_reads_in_flight", help: "History reads running against the broker now.")
        var refused: [ConnectionRefusal: Prometheus.Counter] = [:]
        for reason in ConnectionRefusal.allCases {
            refused[reason] = r.makeCounter(
                name: "storm_connections_refused_total", labels: [("reason", reason.rawValue)],
                help: "Connections refused at accept, by reason (max_connections: past --max-connections; max_connections_per_ip; connect_rate: past --connect-rate-per-ip).")
        }
        connectionsRefused = refused
        headerTimeouts = r.makeCounter(name: "storm_connections_timed_out_total", labels: [("reason", "header")], help: "HTTP connections closed by a timeout, by reason (header: --header-timeout, idle: --idle-timeout).")
        idleTimeouts = r.makeCounter(name: "storm_connections_timed_out_total", labels: [("reason", "idle")], help: "HTTP connections closed by a timeout, by reason (header: --header-timeout, idle: --idle-timeout).")
        streamGauges = StreamGauges(registry: r)
        r.makeGauge(name: "storm_build_info", labels: [("version", StormVersion.current), ("instance_id", instanceID)], help: "Always 1; labels carry the build.").set(Int64(1))
    }

    package typealias AuthCounter = Prometheus.Counter

    /// `storm_auth_failures_total{reason}`: one counter per fixed reason (`TokenRejectionReason`), made
    /// once by the gateway's `Authenticator`.
    package func authFailureCounter(reason: String) -> AuthCounter {
        registry.makeCounter(name: "storm_auth_failures_total", labels: [("reason", reason)], help: "Tokens refused (or missing where required), by reason.")
    }

    /// `storm_hook_calls_total{hook,outcome}`: made once per configured hook and outcome by the gateway's
    /// hooks (both labels from fixed sets: connect/subscribe/publish, allow/deny/error/timeout/overloaded).
    package func hookCallCounter(hook: String, outcome: String) -> Prometheus.Counter {
        registry.makeCounter(
            name: "storm_hook_calls_total", labels: [("hook", hook), ("outcome", outcome)],
            help: "Backend hook calls, by hook and outcome (allow, deny; error, timeout, overloaded: no usable answer, then refused or let through by --hook-fail-open).")
    }

    package func recoveryReads(_ outcome: HistoryReadOutcome) -> Prometheus.Counter {
        switch outcome {
        case .ok: recoveryReadsOK
        case .cancelled: recoveryReadsCancelled
        case .timeout: recoveryReadsTimeout
        case .refused: recoveryReadsRefused
        case .error: recoveryReadsError
        }
    }

    package func countRefusal(_ reason: ConnectionRefusal) {
        connectionsRefused[reason]?.increment()
    }

    package func countClientError(_ code: StormError.Code) {
        clientErrors[code]?.increment()
    }

    package func connections(_ transport: Transport) -> Gauge {
        transport == .sse ? sseConnections : webSocketConnections
    }

    package func delivered(_ transport: Transport) -> Prometheus.Counter {
        transport == .sse ? deliveredSSE : deliveredWebSocket
    }

    /// The exposition text, with the standard `process_*` metrics (CPU, memory, open files, start time)
    /// after STORM's own; the gauges that are read rather than counted are set first.
    package func exposition(brokerConnected connected: Bool, brokerSubscriptions subscriptions: Int, stream: StreamStatus? = nil) -> [UInt8] {
        streamGauges.set(stream)
        brokerConnected.set(Int64(connected ? 1 : 0))
        brokerSubscriptions.set(Int64(subscriptions))
        var text = registry.emitToBuffer()
        ProcessMetrics.append(to: &text)
        return text
    }
}
