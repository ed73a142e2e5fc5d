import NIOCore
import StormConfiguration
import StormCore
import StormNATS
import StormObservability
import StormPresence
import StormStore

/// Everything `stormd` is configured with, resolved from (highest first) command-line flags, `STORM_*`
/// environment variables, and the `--config` file. Every key, its variable and default is listed in
/// `Setting` and documented in man/storm.conf.5.
package struct GatewayConfiguration: Sendable {
    /// `--listen HOST:PORT` (`STORM_LISTEN`), default `127.0.0.1:8080`: loopback unless chosen otherwise.
    package var listen = ListenAddress(host: "127.0.0.1", port: 8080)
    /// `--nats URL[,URL]` (`STORM_NATS_URL`): empty means the in-memory broker (single node).
    package var natsURLs: [String] = []
    /// `--nats-subject-prefix` (`STORM_NATS_SUBJECT_PREFIX`), default `storm.ch`.
    package var natsSubjectPrefix = "storm.ch"
    /// Connection limits and timings.
    package var limits = GatewayLimits()
    /// Bounds of history reads (recovery, the history API); not flags, see `HistoryReaderConfiguration`.
    package var historyReads = HistoryReaderConfiguration()
    /// `--event-loops N` (`STORM_EVENT_LOOPS`), default: the number of cores.
    package var eventLoops = System.coreCount
    /// `--backlog N` (`STORM_BACKLOG`), default 4096: the accept queue, sized for connection ramps.
    package var backlog = 4096
    /// `--max-connections`, `--max-connections-per-ip`, `--connect-rate-per-ip`, `--header-timeout`,
    /// `--idle-timeout`: see `ConnectionLimits`.
    package var connections = ConnectionLimits()
    /// `--drain-timeout SECONDS` (`STORM_DRAIN_TIMEOUT`), default 5: how long shutdown waits for clients.
    package var drainSeconds = 5
    /// `--log-level` (`STORM_LOG_LEVEL`), default `info`.
    package var logLevel = "info"
    /// `--log-format text|json` (`STORM_LOG_FORMAT`), default `text`: `json` writes one object per line.
    package var logFormat = LogFormat.text
    /// `--otlp-endpoint URL` (`STORM_OTLP_ENDPOINT`), default none (no tracing): the OTLP/HTTP collector
    /// traces are exported to, e.g. `http://127.0.0.1:4318`. Needs a stormd built with the OTLP trait.
    package var otlpEndpoint: String?
    /// `--jetstream on|off` (`STORM_JETSTREAM`), default on: with NATS, publishes are stored in JetStream
    /// before they are acknowledged, and offsets, history and recovery work.
    package var jetStream = true
    /// The JetStream stream's settings (`--stream-replicas`, `--stream-max-bytes`, `--stream-max-messages`,
    /// `--stream-max-age`, `--stream-discard`, `--stream-update`): see `JetStreamStreamConfiguration`.
    /// Defaults: 1 replica, no byte or message cap, 24 h, discard old, never update an existing stream.
    package var stream = JetStreamStreamConfiguration()
    /// `--workers N` (`STORM_WORKERS`), default 1: gateway processes sharing the port (`SO_REUSEPORT`).
    package var workers = 1
    /// `--role`, `--postgres`, `--migrate-on-start`, `--history-max-age`, `--history-max-count`: the
    /// history store and its consumer (see `StoreConfiguration`).
    package var store = StoreConfiguration()
    /// Presence, routing and the gateway registry (`--redis`, `--presence-channels`, …): see
    /// `PresenceConfiguration`.
    package var presence = PresenceConfiguration()
    /// `--allowed-origins LIST` (`STORM_ALLOWED_ORIGINS`), default: the gateway's own origin only. Browser
    /// origins (`https://app.example.com`) allowed besides it, or `*` for every origin.
    package var allowedOrigins = OriginPolicy()
    /// `--allowed-hosts LIST` (`STORM_ALLOWED_HOSTS`), default none: `Host` names answered besides the
    /// loopback ones (on a loopback listen), or the only names answered (on any other listen); `*` for all.
    package var allowedHosts: [String] = []
    /// Tokens, anonymous access and `--insecure` (`--jwt-secret-file`, `--jwt-public-key`, …): see
    /// `AuthConfiguration`.
    package var auth = AuthConfiguration()
    /// `--tls-cert`, `--tls-key` (HTTPS and WSS on the listen port) and `--nats-ca`, `--nats-cert`,
    /// `--nats-key` (TLS to NATS): see `TLSSettings`. Default: none (plain HTTP, plain NATS).
    package var tls = TLSSettings()
    /// `--connect-hook`, `--subscribe-hook`, `--publish-hook` and their `--hook-*` settings: see
    /// `HookConfiguration`. Default: no hook.
    package var hooks = HookConfiguration()

    /// Resolves every setting from its sources; throws a `.configuration` error naming the bad key.
    package init(sources: ConfigurationSources) throws(StormError) {
        for (key, source) in sources.unknownKeys() {
            throw StormError(.configuration, "unknown configuration key '\(key)' in \(source)")
        }
        if let value = sources.value(.listen) { listen = try ConfigurationSources.parseListen(value) }
        if let value = sources.value(.nats) {
            natsURLs = value.value.split(separator: ",").map { $0.trimmingSpaces() }.filter { !$0.isEmpty }
            for url in natsURLs where !(url.hasPrefix("nats://") || url.hasPrefix("tls://")) {
                throw StormError(.configuration, "\(value.origin): '\(url)' is not a NATS URL (expected nats://HOST:PORT)")
            }
        }
        if let value = sources.value(.natsSubjectPrefix) {
            do {
                natsSubjectPrefix = try ChannelName(validating: value.value).rawValue
            } catch {
                throw StormError(.configuration, "\(value.origin): '\(value.value)' is not a valid subject prefix: \(error.message)")
            }
        }
        if let value = sources.value(.maxMessageSize) { limits.maxMessageSize = try ConfigurationSources.parseSize(value, range: 1...(64 << 20)) }
        if let value = sources.value(.clientBuffer) { limits.clientBufferBytes = try ConfigurationSources.parseSize(value, range: 4096...(1 << 30)) }
        if let value = sources.value(.maxChannels) { limits.maxChannelsPerConnection = try ConfigurationSources.parseInt(value, range: 1...100_000) }
        if let value = sources.value(.maxGatewayChannels) { limits.maxChannels = try ConfigurationSources.parseInt(value, range: 1...10_000_000) }
        if let value = sources.value(.clientPublishRate) { limits.clientPublishRate = try ConfigurationSources.parseInt(value, range: 0...10_000_000) }
        if let value = sources.value(.wsPingInterval) { limits.webSocketPingInterval = try ConfigurationSources.parseDuration(value, range: .seconds(1)...TimeAmount.hours(1)) }
        if let value = sources.value(.sseHeartbeat) { limits.sseHeartbeatInterval = try ConfigurationSources.parseDuration(value, range: .seconds(1)...TimeAmount.hours(1)) }
        if let value = sources.value(.flushInterval) { limits.flushDelay = try ConfigurationSources.parseDuration(value, range: .zero...TimeAmount.milliseconds(100)) }
        if let value = sources.value(.maxFlushInterval) { limits.maxFlushDelay = try ConfigurationSources.parseDuration(value, range: .zero...TimeAmount.seconds(1)) }
        if let maxFlushDelay = limits.maxFlushDelay, maxFlushDelay < limits.flushDelay {
            throw StormError(.configuration, "max-flush-interval (\(maxFlushDelay.nanoseconds / 1_000_000) ms) is below flush-interval (\(limits.flushDelay.nanoseconds / 1_000_000) ms)")
        }
        if let value = sources.value(.webUI) { limits.webUI = try ConfigurationSources.parseSwitch(value) }
        if let value = sources.value(.jetStream) { jetStream = try ConfigurationSources.parseSwitch(value) }
        try loadStream(from: sources)
        if let value = sources.value(.workers) { workers = try ConfigurationSources.parseInt(value, range: 1...256) }
        if workers > 1 {
            eventLoops = max(1, System.coreCount / workers)
            guard !natsURLs.isEmpty else {
                throw StormError(.configuration, "--workers \(workers) needs --nats: each worker is its own process, and only NATS carries messages between them")
            }
            guard listen.port != 0 else {
                throw StormError(.configuration, "--workers \(workers) needs a fixed port in --listen: workers share one port")
            }
        }
        if let value = sources.value(.eventLoops) { eventLoops = try ConfigurationSources.parseInt(value, range: 1...256) }
        if let value = sources.value(.backlog) { backlog = try ConfigurationSources.parseInt(value, range: 1...65_535) }
        try loadConnectionLimits(from: sources)
        if let value = sources.value(.drainTimeout) { drainSeconds = try ConfigurationSources.parseInt(value, range: 0...3600) }
        if let value = sources.value(.logLevel) {
            let levels = ["trace", "debug", "info", "notice", "warning", "error", "critical"]
            guard levels.contains(value.value) else {
                throw StormError(.configuration, "\(value.origin): '\(value.value)' is not a log level (\(levels.joined(separator: ", ")))")
            }
            logLevel = value.value
        }
        if let value = sources.value(.logFormat) {
            guard let format = LogFormat(rawValue: value.value.lowercased()) else {
                throw StormError(.configuration, "\(value.origin): '\(value.value)' is not a log format (text or json)")
            }
            logFormat = format
        }
        if let value = sources.value(.otlpEndpoint) {
            let url = value.value
            guard url.hasPrefix("http://") || url.hasPrefix("https://"), url.utf8.count > "https://".utf8.count, !url.contains(" ") else {
                throw StormError(.configuration, "\(value.origin): '\(url.prefix(100))' is not an OTLP/HTTP endpoint (expected http://HOST:PORT, e.g. http://127.0.0.1:4318)")
            }
            guard OTLPTracing.isAvailable else {
                throw StormError(.configuration, "\(value.origin): this stormd was built without the OTLP trait, so it cannot export traces (build with `swift build --traits OTLP`)")
            }
            otlpEndpoint = url
        }
        if let value = sources.value(.allowedOrigins) {
            do {
                allowedOrigins = try OriginPolicy.parse(value.value)
            } catch {
                throw StormError(.configuration, "\(value.origin): \(error.message)")
            }
        }
        if let value = sources.value(.allowedHosts) {
            let entries = value.value.split(separator: ",").map { $0.trimmingSpaces() }.filter { !$0.isEmpty }
            for entry in entries where entry != "*" && (HostPolicy.hostName(of: entry) == nil || entry.contains("://")) {
                throw StormError(.configuration, "\(value.origin): '\(entry.prefix(100))' is not a host name (expected a name or address such as storm.example.com or 10.0.0.5, without scheme or path; '*' for every Host)")
            }
            allowedHosts = entries.map(HostPolicy.normalizedName)
        }
        store = try StoreConfiguration(sources: sources, natsConfigured: !natsURLs.isEmpty)
        try presence.load(from: sources)
        auth = try AuthConfiguration(sources: sources, listen: listen)
        tls = try TLSSettings(sources: sources, natsURLs: natsURLs)
        hooks = try HookConfiguration(sources: sources)
    }

    /// The warning logged at start for a listener reachable from the network in clear text, else nil.
    package var plainTextWarning: String? {
        guard !listen.isLoopback, !tls.enabled else { return nil }
        return "listening on \(listen) without TLS: tokens and messages cross the network in clear text; give --tls-cert and --tls-key (or terminate TLS in a proxy in front)"
    }

    /// The Host and Origin checks every request passes (docs/security.md).
    package var requestPolicy: RequestPolicy {
        RequestPolicy(hosts: HostPolicy(listenIsLoopback: listen.isLoopback, allowedHosts: allowedHosts), origins: allowedOrigins)
    }

    /// `--max-connections` (`auto` or a number; clamped below the open-files limit when applied),
    /// `--max-connections-per-ip` and `--connect-rate-per-ip` (0: unlimited), the two timeouts.
    private mutating func loadConnectionLimits(from sources: ConfigurationSources) throws(StormError) {
        if let value = sources.value(.maxConnections) {
            connections.maxConnections = value.value.lowercased() == "auto" ? nil : try ConfigurationSources.parseInt(value, range: 1...10_000_000)
        }
        if let value = sources.value(.maxConnectionsPerIP) { connections.maxConnectionsPerIP = try ConfigurationSources.parseInt(value, range: 0...10_000_000) }
        if let value = sources.value(.connectRatePerIP) { connections.connectRatePerIP = try ConfigurationSources.parseInt(value, range: 0...1_000_000) }
        if let value = sources.value(.limitLoopback) { connections.limitLoopback = try ConfigurationSources.parseSwitch(value) }
        if let value = sources.value(.headerTimeout) { connections.headerTimeout = try ConfigurationSources.parseDuration(value, range: .milliseconds(100)...TimeAmount.hours(1)) }
        if let value = sources.value(.idleTimeout) { connections.idleTimeout = try ConfigurationSources.parseDuration(value, range: .milliseconds(100)...TimeAmount.hours(24)) }
    }

    /// The `--stream-*` settings; a cap of -1 (or `unlimited`) means none.
    private mutating func loadStream(from sources: ConfigurationSources) throws(StormError) {
        if let value = sources.value(.streamReplicas) {
            // JetStream allows 1 to 5 replicas.
            stream.replicas = try ConfigurationSources.parseInt(value, range: 1...5)
            stream.replicasExplicit = true
        }
        if let value = sources.value(.streamMaxBytes) {
            stream.maxBytes = Self.isUnlimited(value) ? -1 : Int64(try ConfigurationSources.parseSize(value, range: 1...(Int.max >> 1)))
        }
        if let value = sources.value(.streamMaxMessages) {
            stream.maxMessages = Self.isUnlimited(value) ? -1 : Int64(try ConfigurationSources.parseInt(value, range: 1...(Int.max >> 1)))
        }
        if let value = sources.value(.streamMaxAge) {
            if Self.isUnlimited(value) || value.value == "0" {
                stream.maxAge = .zero
            } else {
                let amount = try ConfigurationSources.parseDuration(value, range: .seconds(1)...TimeAmount.hours(24 * 3650))
                stream.maxAge = .nanoseconds(amount.nanoseconds)
            }
        }
        if let value = sources.value(.streamDiscard) {
            guard let discard = StreamDiscard(rawValue: value.value.lowercased()) else {
                throw StormError(.configuration, "\(value.origin): '\(value.value)' is not a discard policy (old or new)")
            }
            stream.discard = discard
        }
        if let value = sources.value(.streamUpdate) { stream.updateExisting = try ConfigurationSources.parseSwitch(value) }
    }

    private static func isUnlimited(_ setting: ConfigurationSources.Value) -> Bool {
        ["-1", "unlimited", "none"].contains(setting.value.lowercased())
    }
}

