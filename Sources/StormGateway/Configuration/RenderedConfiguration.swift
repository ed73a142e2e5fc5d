import NIOCore
import StormConfiguration
import StormCore
import StormNATS
import StormObservability
import StormStore

/// Versions of the C libraries stormd links, for `stormd --version` style diagnostics and bug reports.
package enum LinkedLibraries {
    package static var summary: String {
        "nats.c \(NATSLibrary.version), libpq \(PostgresLibrary.version), hiredis \(RedisConnection.libraryVersion)"
    }
}

extension GatewayConfiguration {
    /// `--print-config`: the effective configuration as config-file lines.
    package func rendered() -> String {
        """
        listen = \(listen)
        nats = \(natsURLs.joined(separator: ","))
        nats-subject-prefix = \(natsSubjectPrefix)
        max-message-size = \(limits.maxMessageSize)
        client-buffer = \(limits.clientBufferBytes)
        max-channels-per-connection = \(limits.maxChannelsPerConnection)
        max-channels = \(limits.maxChannels)
        client-publish-rate = \(limits.clientPublishRate)
        ws-ping-interval = \(limits.webSocketPingInterval.nanoseconds / 1_000_000)ms
        sse-heartbeat = \(limits.sseHeartbeatInterval.nanoseconds / 1_000_000)ms
        flush-interval = \(limits.flushDelay.nanoseconds / 1_000_000)ms
        max-flush-interval = \(limits.effectiveMaxFlushDelay.nanoseconds / 1_000_000)ms
        event-loops = \(eventLoops)
        backlog = \(backlog)
        max-connections = \(connections.maxConnections.map(String.init) ?? "auto")  # applied: \(connections.effectiveMaxConnections(openFilesLimit: ResourceLimits.openFilesLimit(raised: true)))
        max-connections-per-ip = \(connections.maxConnectionsPerIP)
        connect-rate-per-ip = \(connections.connectRatePerIP)
        limit-loopback = \(connections.limitLoopback ? "on" : "off")
        header-timeout = \(connections.headerTimeout.nanoseconds / 1_000_000)ms
        idle-timeout = \(connections.idleTimeout.nanoseconds / 1_000_000)ms
        drain-timeout = \(drainSeconds)
        log-level = \(logLevel)
        log-format = \(logFormat.rawValue)
        otlp-endpoint = \(otlpEndpoint.map(OTLPTracing.redacted) ?? "")
        workers = \(workers)
        web-ui = \(limits.webUI ? "on" : "off")
        jetstream = \(jetStream ? "on" : "off")
        stream-replicas = \(stream.replicas)
        stream-max-bytes = \(stream.maxBytes)
        stream-max-messages = \(stream.maxMessages)
        stream-max-age = \(nanoseconds(stream.maxAge) / 1_000_000_000)s
        stream-discard = \(stream.discard.rawValue)
        stream-update = \(stream.updateExisting ? "on" : "off")
        role = \(store.role.rawValue)
        postgres = \(store.redactedPostgresURL ?? "")
        migrate-on-start = \(store.migrateOnStart)
        history-max-age = \(store.historyMaxAge.nanoseconds / 1_000_000_000)s
        history-max-count = \(store.historyMaxCount)
        \(presence.rendered)
        \(auth.rendered)
        \(hooks.rendered)
        allowed-origins = \(allowedOrigins.rendered)
        allowed-hosts = \(allowedHosts.joined(separator: ","))
        \(tls.rendered)
        # linked: \(LinkedLibraries.summary)
        """
    }
}
