import ArgumentParser
import Foundation
import Logging
import NIOCore
import ServiceLifecycle
import StormBroker
import StormConfiguration
import StormCore
import StormGateway
import StormNATS
import StormObservability
import StormStore
import StormWeb

/// `stormd`: the STORM daemon. With no subcommand it serves (`stormd serve`): on 127.0.0.1:8080 with the
/// in-memory broker when given no flags. `stormd migrate` applies the PostgreSQL schema migrations.
@main
struct Stormd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stormd",
        abstract: "The STORM daemon: the gateway (HTTP publish, WebSocket and SSE fan-out), the history consumer, migrations.",
        discussion: """
            `stormd` alone (or `stormd serve`) runs the server; `stormd serve --help` lists every option.
            `stormd migrate --postgres URL` applies the database schema migrations and exits.
            """,
        version: "stormd \(StormVersion.current)",
        subcommands: [Serve.self, Migrate.self],
        defaultSubcommand: Serve.self
    )
}

/// `stormd serve`, the default command: the gateway, the history consumer, or both (`--role`).
struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve: the gateway, the history consumer, or both (--role); the default command.",
        discussion: """
            With no flags stormd serves on 127.0.0.1:8080 with the in-memory broker (one node). Give it a
            NATS server to run several gateways as one cluster. Every option can also come from a STORM_*
            environment variable or a config file (key = value lines, keys as the long options); flags win
            over the environment, which wins over the file.

            Examples:
              stormd
              STORM_JWT_SECRET=… stormd --listen 0.0.0.0:8080 --nats nats://127.0.0.1:4222
              STORM_NATS_URL=nats://10.0.0.5:4222 stormd --config /etc/storm/storm.conf
              stormd --config /etc/storm/storm.conf --check-config
              stormd --listen 0.0.0.0:8443 --tls-cert /etc/storm/tls/storm.pem --tls-key /etc/storm/tls/storm.key

            TLS: with --tls-cert and --tls-key the listen port serves HTTPS and WSS (TLS 1.2 or newer);
            SIGHUP rereads both files without dropping open connections (docs/security.md, "TLS").

            Exit codes: 0 after a clean shutdown (SIGTERM/SIGINT), 78 for a configuration error only (a NATS
            or JetStream that is not up yet is waited for, with /readyz at 503), 69 when the listening address
            cannot be used, 70 for an internal error.
            """
    )

    @OptionGroup var options: StormdOptions

    @Flag(help: "Validate the configuration and exit (0 when valid, 78 otherwise).")
    var checkConfig = false

    @Flag(help: "Print the effective configuration and exit.")
    var printConfig = false

    func run() async throws {
        let configuration: GatewayConfiguration
        do {
            configuration = try GatewayConfiguration(sources: try options.sources())
        } catch {
            FileHandle.standardError.write(Data("stormd: configuration error: \(error.message)\n".utf8))
            throw ExitCode(78)
        }
        if configuration.limits.webUI, case .failure(let error) = WebUI.loaded {
            FileHandle.standardError.write(Data("stormd: \(error)\n".utf8))
            throw ExitCode(78)
        }
        if let cert = configuration.tls.certificateFile, let key = configuration.tls.keyFile {
            // Parsed now, so that a bad certificate or key fails here (exit 78), with --check-config too.
            do throws(StormError) {
                _ = try TLSCertificateStore.makeContext(certificateFile: cert, keyFile: key)
            } catch {
                FileHandle.standardError.write(Data("stormd: configuration error: \(error.message)\n".utf8))
                throw ExitCode(78)
            }
        }
        if checkConfig {
            print("configuration is valid")
            return
        }
        if printConfig {
            print(configuration.rendered())
            return
        }

        let level = Logger.Level(rawValue: configuration.logLevel) ?? .info
        configuration.logFormat.bootstrap(level: level)
        var logger = Logger(label: "stormd")
        ResourceLimits.raiseOpenFilesLimit(logger: logger)
        // Unset so --workers children don't notify: systemd only listens to the main PID.
        let notifier = SystemdNotifier.fromEnvironment(unsetEnvironment: true, logger: logger)
        if configuration.workers > 1, WorkerSupervisor.currentWorkerIndex == nil {
            print("stormd \(StormVersion.current) starting \(configuration.workers) workers on \(configuration.tls.enabled ? "https" : "http")://\(configuration.listen) (broker: \(configuration.natsURLs.joined(separator: ",")))")
            fflush(nil)
            let supervisor = WorkerSupervisor(count: configuration.workers, arguments: Array(CommandLine.arguments.dropFirst()), logger: logger)
            notifier?.ready(status: "\(configuration.workers) workers on http://\(configuration.listen)")
            let watchdog = notifier?.startWatchdog()
            defer { watchdog?.cancel() }
            let status = try await supervisor.run()
            if status != 0 { throw ExitCode(status) }
            return
        }
        if let index = WorkerSupervisor.currentWorkerIndex { logger[metadataKey: "storm.worker"] = "\(index)" }

        if !configuration.store.runsGateway {
            // --role consumer: history to PostgreSQL, and /healthz, /readyz, /metrics on --listen.
            try await StoreServices.runConsumerRole(configuration: configuration, logger: logger)
            return
        }
        let broker: any MessageBroker
        if configuration.natsURLs.isEmpty {
            broker = MemoryBroker()
        } else {
            var nats = NATSBrokerConfiguration()
            nats.urls = configuration.natsURLs
            nats.subjectPrefix = configuration.natsSubjectPrefix
            nats.tls = configuration.tls.nats
            nats.connectionName = "stormd \(configuration.listen)"
            if configuration.jetStream {
                nats.jetStream?.stream = configuration.stream
            } else {
                nats.jetStream = nil
            }
            broker = NATSBroker(configuration: nats, logger: logger)
        }
        // --otlp-endpoint: spans for publishes and fan-out, exported by a service run beside the gateway.
        let tracing = try OTLPTracing.make(endpoint: configuration.otlpEndpoint, logger: logger)
        // One PostgreSQL client for the process: the gateway and the consumer share it.
        let postgres = StoreServices.makeClient(configuration: configuration, logger: logger)
        let gateway = Gateway(configuration: configuration, broker: broker, logger: logger, postgres: postgres, tracer: tracing?.tracer)
        do {
            try await gateway.start()
        } catch let error as StormError where error.code == .configuration {
            FileHandle.standardError.write(Data("stormd: configuration error: \(error.message)\n".utf8))
            throw ExitCode(78)
        } catch {
            FileHandle.standardError.write(Data("stormd: cannot start on \(configuration.listen): \(error)\n".utf8))
            throw ExitCode(69)
        }
        let address = gateway.localAddress.map { "\($0.ipAddress ?? configuration.listen.host):\($0.port ?? configuration.listen.port)" } ?? configuration.listen.description
        let (http, ws) = configuration.tls.enabled ? ("https", "wss") : ("http", "ws")
        if WorkerSupervisor.currentWorkerIndex == nil { print("stormd \(StormVersion.current) listening on \(http)://\(address) (broker: \(broker.endpointDescription)); WebSocket \(ws)://\(address)/ws, SSE /events, metrics /metrics") }
        if let warning = configuration.plainTextWarning {
            logger.warning("\(warning)", metadata: ["storm.listen": "\(configuration.listen)"])
        }
        if !configuration.listen.isLoopback, !configuration.auth.enabled {
            logger.warning("INSECURE: listening on a non-loopback address with no authentication (--insecure): every client on the network can publish, subscribe and use the admin API", metadata: ["storm.listen": "\(configuration.listen)"])
            FileHandle.standardError.write(Data("stormd: WARNING: --insecure: \(configuration.listen) is reachable from the network and no token key is configured; anyone can publish, subscribe and administer\n".utf8))
        } else if configuration.auth.enabled {
            logger.info("authentication on", metadata: ["storm.auth.keys": "\(configuration.auth.keys.count)", "storm.auth.anonymous": "\(configuration.auth.allowAnonymous)"])
        }
        fflush(nil)
        // With --postgres: the history consumer beside the gateway, its metrics on the gateway's /metrics.
        let storage = try StoreServices.start(configuration: configuration, postgres: postgres, registry: gateway.context.metrics.registry, logger: logger, tracer: tracing?.tracer)
        gateway.context.consumer.withLockedValue { $0 = storage.consumer }
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [.init(service: gateway)] + storage.services.map { .init(service: $0) }
        // Started with the gateway, stopped after it, so the last spans are flushed.
        if let exporter = tracing?.service { services.insert(.init(service: exporter), at: 0) }
        if let notifier {
            notifier.ready(status: "listening on \(http)://\(address), broker \(broker.endpointDescription)")
            // After the gateway: it says STOPPING=1 to systemd before the gateway starts draining.
            services.append(.init(service: SystemdNotifierService(notifier: notifier)))
        }
        // SIGHUP: reload the TLS certificate and key (new connections get them; open ones keep theirs).
        let hangup = Self.onHangup(gateway: gateway, logger: logger)
        defer { hangup.cancel() }
        let group = ServiceGroup(configuration: .init(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        do {
            try await group.run()
        } catch {
            await postgres?.shutdown()
            throw error
        }
        // After every role stopped: the gateway and the consumer no longer use it.
        await postgres?.shutdown()
    }

    /// Installs the SIGHUP handler: `TLSCertificateStore.reload()`, or a note that there is nothing to
    /// reload. Either way SIGHUP no longer ends the process.
    static func onHangup(gateway: Gateway, logger: Logger) -> any DispatchSourceSignal {
        signal(SIGHUP, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: SIGHUP, queue: .global())
        source.setEventHandler {
            if let tls = gateway.tls {
                tls.reload()
            } else {
                logger.notice("SIGHUP: nothing to reload (no --tls-cert)")
            }
        }
        source.resume()
        return source
    }

}

/// Every setting of `stormd`, shared by `serve` and `migrate` so that both read the same config file.
struct StormdOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Address to listen on, HOST:PORT. [STORM_LISTEN, default 127.0.0.1:8080]", valueName: "host:port"))
    var listen: String?

    @Option(help: ArgumentHelp("NATS server URL(s), comma-separated; without it the in-memory broker is used. [STORM_NATS_URL]", valueName: "url"))
    var nats: String?

    @Option(help: ArgumentHelp("Prefix of the NATS subjects channels map to. [STORM_NATS_SUBJECT_PREFIX, default storm.ch]", valueName: "prefix"))
    var natsSubjectPrefix: String?

    @Option(help: ArgumentHelp("Largest message payload (bytes, or with KiB/MiB). [STORM_MAX_MESSAGE_SIZE, default 64KiB]", valueName: "size"))
    var maxMessageSize: String?

    @Option(help: ArgumentHelp("Outbound bytes a client may have pending before it is disconnected as slow. [STORM_CLIENT_BUFFER, default 1MiB]", valueName: "size"))
    var clientBuffer: String?

    @Option(help: ArgumentHelp("Subscriptions one connection may hold. [STORM_MAX_CHANNELS_PER_CONNECTION, default 128]", valueName: "n"))
    var maxChannelsPerConnection: String?

    @Option(help: ArgumentHelp("Distinct channels this gateway serves at once; a subscribe past it is too_many_channels. [STORM_MAX_CHANNELS, default 20000]", valueName: "n"))
    var maxChannels: String?

    @Option(help: ArgumentHelp("Publishes per second one WebSocket connection may make (burst as many); past it, rate_limited. 0 is unlimited. [STORM_CLIENT_PUBLISH_RATE, default 1000]", valueName: "n"))
    var clientPublishRate: String?

    @Option(help: ArgumentHelp("Silence before a WebSocket client is pinged; twice that and it is dropped. [STORM_WS_PING_INTERVAL, default 20s]", valueName: "duration"))
    var wsPingInterval: String?

    @Option(help: ArgumentHelp("Interval of SSE heartbeat comments. [STORM_SSE_HEARTBEAT, default 15s]", valueName: "duration"))
    var sseHeartbeat: String?

    @Option(help: ArgumentHelp("Delay that batches deliveries into one write per connection. [STORM_FLUSH_INTERVAL, default 1ms]", valueName: "duration"))
    var flushInterval: String?

    @Option(help: ArgumentHelp("Longest the adaptive batch delay grows to under heavy load. [STORM_MAX_FLUSH_INTERVAL, default 50ms]", valueName: "duration"))
    var maxFlushInterval: String?

    @Option(help: ArgumentHelp("Event loop threads. [STORM_EVENT_LOOPS, default: number of cores]", valueName: "n"))
    var eventLoops: String?

    @Option(help: ArgumentHelp("Listen backlog. [STORM_BACKLOG, default 4096]", valueName: "n"))
    var backlog: String?

    @Option(help: ArgumentHelp("Connections this process holds; past it only /healthz, /readyz and /metrics are answered (a reserve of 32), others get 503 too_many_connections. Clamped to the open-files limit minus 256. [STORM_MAX_CONNECTIONS, default auto: that bound]", valueName: "n|auto"))
    var maxConnections: String?

    @Option(help: ArgumentHelp("Connections one source address may hold; past it, 503 too_many_connections. 0 is unlimited. [STORM_MAX_CONNECTIONS_PER_IP, default 1000]", valueName: "n"))
    var maxConnectionsPerIp: String?

    @Option(help: ArgumentHelp("New connections per second one source address may open (burst as many); past it, 503 connect_rate_limited with Retry-After. 0 is off. [STORM_CONNECT_RATE_PER_IP, default 200]", valueName: "n"))
    var connectRatePerIp: String?

    @Option(help: ArgumentHelp("Apply --max-connections-per-ip and --connect-rate-per-ip to loopback clients too (a proxy on the same host makes every client 127.0.0.1). [STORM_LIMIT_LOOPBACK, default off]", valueName: "on|off"))
    var limitLoopback: String?

    @Option(help: ArgumentHelp("Time a connection has to send a complete request head; then 408 and close. [STORM_HEADER_TIMEOUT, default 10s]", valueName: "duration"))
    var headerTimeout: String?

    @Option(help: ArgumentHelp("Time a kept-alive HTTP connection may stay silent before its next request (or upgrade); WebSocket and SSE sessions use their ping/heartbeat. [STORM_IDLE_TIMEOUT, default 60s]", valueName: "duration"))
    var idleTimeout: String?

    @Option(help: ArgumentHelp("Seconds shutdown waits for clients to close. [STORM_DRAIN_TIMEOUT, default 5]", valueName: "seconds"))
    var drainTimeout: String?

    @Option(help: ArgumentHelp("trace, debug, info, notice, warning, error or critical. [STORM_LOG_LEVEL, default info]", valueName: "level"))
    var logLevel: String?

    @Option(help: ArgumentHelp("Log lines as text or json (one object per line, metadata as dotted keys). [STORM_LOG_FORMAT, default text]", valueName: "text|json"))
    var logFormat: String?

    @Option(help: ArgumentHelp("OTLP/HTTP collector to export traces to, e.g. http://127.0.0.1:4318 (builds with the OTLP trait). [STORM_OTLP_ENDPOINT, default: no tracing]", valueName: "url"))
    var otlpEndpoint: String?

    @Option(help: ArgumentHelp("Gateway processes sharing the listening port (SO_REUSEPORT); each holds its own connections and NATS connection. [STORM_WORKERS, default 1]", valueName: "n"))
    var workers: String?

    @Option(help: ArgumentHelp("Serve the live web page at / and /ui/: on or off. [STORM_WEB_UI, default on]", valueName: "on|off"))
    var webUi: String?

    @Option(help: ArgumentHelp("With NATS: store every message in JetStream before acknowledging it (offsets, history, recovery); off for core NATS only. [STORM_JETSTREAM, default on]", valueName: "on|off"))
    var jetstream: String?

    @Option(help: ArgumentHelp("Copies of the JetStream stream in a NATS cluster (1-5); used when the stream is created, or with --stream-update. [STORM_STREAM_REPLICAS, default 1]", valueName: "n"))
    var streamReplicas: String?

    // Unconditional, so that -1 (unlimited) is read as the value, not as an option.
    @Option(parsing: .unconditional, help: ArgumentHelp("Cap on the stream's storage (bytes, or with KiB/MiB/GiB; -1 for none); at the cap --stream-discard applies. [STORM_STREAM_MAX_BYTES, default -1, unlimited]", valueName: "size"))
    var streamMaxBytes: String?

    // Unconditional, so that -1 (unlimited) is read as the value, not as an option.
    @Option(parsing: .unconditional, help: ArgumentHelp("Cap on the messages the stream holds (-1 for none). [STORM_STREAM_MAX_MESSAGES, default -1, unlimited]", valueName: "n"))
    var streamMaxMessages: String?

    @Option(help: ArgumentHelp("How long the stream keeps a message (0 for ever). [STORM_STREAM_MAX_AGE, default 24h]", valueName: "duration"))
    var streamMaxAge: String?

    @Option(help: ArgumentHelp("At a cap: old drops the oldest messages, new refuses publishes (storage_full, HTTP 507). [STORM_STREAM_DISCARD, default old]", valueName: "old|new"))
    var streamDiscard: String?

    @Flag(help: "Update an existing stream whose settings differ from the --stream-* options (without it, it is left as it is and each difference logged); replicas are lowered only when --stream-replicas is given. [STORM_STREAM_UPDATE]")
    var streamUpdate = false

    @Option(help: ArgumentHelp("What this process runs: gateway, consumer (history to PostgreSQL) or all (the gateway, plus the consumer when --postgres is set). [STORM_ROLE, default all]", valueName: "role"))
    var role: String?

    @Option(help: ArgumentHelp("PostgreSQL for history: libpq conninfo or URI; keep passwords out of argv (STORM_POSTGRES_URL, the config file, PGPASSWORD or ~/.pgpass). [STORM_POSTGRES_URL]", valueName: "url"))
    var postgres: String?

    @Option(help: ArgumentHelp("Apply schema migrations at start when --postgres is set: true or false. [STORM_MIGRATE_ON_START, default true]", valueName: "bool"))
    var migrateOnStart: String?

    @Option(help: ArgumentHelp("Default history kept per channel, by age. [STORM_HISTORY_MAX_AGE, default 7d]", valueName: "duration"))
    var historyMaxAge: String?

    @Option(help: ArgumentHelp("Default history kept per channel, by count. [STORM_HISTORY_MAX_COUNT, default 10000]", valueName: "n"))
    var historyMaxCount: String?

    @Option(help: ArgumentHelp("Redis for presence, routing and the gateway registry, redis://HOST:PORT[/DB]; without it presence is in memory (this process only). [STORM_REDIS_URL]", valueName: "url"))
    var redis: String?

    @Option(help: ArgumentHelp("First part of every Redis key, so clusters can share a Redis. [STORM_REDIS_PREFIX, default storm]", valueName: "prefix"))
    var redisPrefix: String?

    @Option(help: ArgumentHelp("Channels that record presence: comma list of *, chat.* (prefix) or exact names. [STORM_PRESENCE_CHANNELS, default none]", valueName: "patterns"))
    var presenceChannels: String?

    @Option(help: ArgumentHelp("Channels whose subscribers receive join/leave messages, same patterns. [STORM_PRESENCE_EVENTS, default none]", valueName: "patterns"))
    var presenceEvents: String?

    @Option(help: ArgumentHelp("How long a crashed gateway's presence survives it; heartbeats every third of it. [STORM_PRESENCE_TTL, default 30s]", valueName: "duration"))
    var presenceTtl: String?

    @Option(help: ArgumentHelp("URL other gateways and stormctl reach this gateway at, for the registry. [STORM_ADVERTISE_URL, default http://LISTEN]", valueName: "url"))
    var advertiseUrl: String?

    @Option(help: ArgumentHelp("HS256 token secret(s) read from a file, [KID=]FILE, comma list; at least 32 bytes. The secret itself may come from STORM_JWT_SECRET, never argv. [STORM_JWT_SECRET_FILE]", valueName: "[kid=]file"))
    var jwtSecretFile: String?

    @Option(help: ArgumentHelp("PEM public key verifying RS256, ES256 or EdDSA tokens, [KID=]FILE; repeat for several keys. [STORM_JWT_PUBLIC_KEY, comma list]", valueName: "[kid=]file"))
    var jwtPublicKey: [String] = []

    @Option(help: ArgumentHelp("Audience tokens must name in 'aud'. [STORM_JWT_AUDIENCE, default: not checked]", valueName: "aud"))
    var jwtAudience: String?

    @Option(help: ArgumentHelp("Issuer tokens must name in 'iss'. [STORM_JWT_ISSUER, default: not checked]", valueName: "iss"))
    var jwtIssuer: String?

    @Option(help: ArgumentHelp("Let clients without a token in (public channels only): on or off. [STORM_ALLOW_ANONYMOUS, default: on without keys, off with]", valueName: "on|off"))
    var allowAnonymous: String?

    @Flag(help: "Serve a non-loopback --listen with no authentication (anyone on the network may publish and subscribe). [STORM_INSECURE]")
    var insecure = false

    @Option(help: ArgumentHelp("Browser origins allowed besides the gateway's own: comma list of scheme://host[:port], or * for every origin. [STORM_ALLOWED_ORIGINS, default: own origin only]", valueName: "origins"))
    var allowedOrigins: String?

    @Option(help: ArgumentHelp("Host names the gateway answers to: on a loopback listen besides localhost/127.x/[::1], elsewhere the only ones (plus IP addresses); * for every Host. [STORM_ALLOWED_HOSTS, default: loopback names on loopback, any elsewhere]", valueName: "hosts"))
    var allowedHosts: String?

    @Option(help: ArgumentHelp("PEM certificate chain for HTTPS and WSS on the listen port (with --tls-key); reloaded on SIGHUP. [STORM_TLS_CERT, default: plain HTTP]", valueName: "file"))
    var tlsCert: String?

    @Option(help: ArgumentHelp("PEM private key of --tls-cert; reloaded on SIGHUP. [STORM_TLS_KEY]", valueName: "file"))
    var tlsKey: String?

    @Option(help: ArgumentHelp("PEM CA certificate(s) the NATS server's certificate must chain to; implies TLS to NATS (as tls:// URLs do). [STORM_NATS_CA, default: system trust store]", valueName: "file"))
    var natsCa: String?

    @Option(help: ArgumentHelp("PEM client certificate for NATS servers that verify clients (with --nats-key). [STORM_NATS_CERT]", valueName: "file"))
    var natsCert: String?

    @Option(help: ArgumentHelp("PEM private key of --nats-cert. [STORM_NATS_KEY]", valueName: "file"))
    var natsKey: String?

    @Option(help: ArgumentHelp("URL the gateway POSTs each WebSocket connection to before upgrading it; the answer allows (with user and channels) or denies. [STORM_CONNECT_HOOK, default none]", valueName: "url"))
    var connectHook: String?

    @Option(help: ArgumentHelp("URL the gateway POSTs each subscribe to (WebSocket, once per new channel; SSE streams; channel history and presence); allow or deny. [STORM_SUBSCRIBE_HOOK, default none]", valueName: "url"))
    var subscribeHook: String?

    @Option(help: ArgumentHelp("URL the gateway POSTs each publish to (WebSocket, POST /publish, broadcast, batch); allow, deny, or allow with replacement data. [STORM_PUBLISH_HOOK, default none]", valueName: "url"))
    var publishHook: String?

    @Option(help: ArgumentHelp("Longest a hook call may take, waiting for a slot included; then it fails. [STORM_HOOK_TIMEOUT, default 2s]", valueName: "duration"))
    var hookTimeout: String?

    @Option(help: ArgumentHelp("Hook calls in flight at once, per hook (one connection each); up to 1024 more wait. [STORM_HOOK_CONCURRENCY, default 16]", valueName: "n"))
    var hookConcurrency: String?

    @Option(help: ArgumentHelp("Hooks whose failure (error, timeout, overload) lets the request through instead of refusing it: comma list of connect, subscribe, publish. [STORM_HOOK_FAIL_OPEN, default none]", valueName: "hooks"))
    var hookFailOpen: String?

    @Option(help: ArgumentHelp("File holding the secret sent to hooks as X-Storm-Hook-Secret; or STORM_HOOK_SECRET, never argv. [STORM_HOOK_SECRET_FILE, default none]", valueName: "file"))
    var hookSecretFile: String?

    @Option(help: ArgumentHelp("Config file of key = value lines. [STORM_CONFIG]", valueName: "file"))
    var config: String?

    func sources() throws(StormError) -> ConfigurationSources {
        let flags: [Setting: String?] = [
            .listen: listen, .nats: nats, .natsSubjectPrefix: natsSubjectPrefix, .maxMessageSize: maxMessageSize,
            .clientBuffer: clientBuffer, .maxChannels: maxChannelsPerConnection, .maxGatewayChannels: maxChannels,
            .clientPublishRate: clientPublishRate, .wsPingInterval: wsPingInterval,
            .sseHeartbeat: sseHeartbeat, .flushInterval: flushInterval, .maxFlushInterval: maxFlushInterval, .eventLoops: eventLoops, .backlog: backlog,
            .maxConnections: maxConnections, .maxConnectionsPerIP: maxConnectionsPerIp, .connectRatePerIP: connectRatePerIp, .limitLoopback: limitLoopback,
            .headerTimeout: headerTimeout, .idleTimeout: idleTimeout,
            .drainTimeout: drainTimeout, .logLevel: logLevel, .logFormat: logFormat, .otlpEndpoint: otlpEndpoint, .workers: workers, .webUI: webUi, .jetStream: jetstream,
            .streamReplicas: streamReplicas, .streamMaxBytes: streamMaxBytes, .streamMaxMessages: streamMaxMessages,
            .streamMaxAge: streamMaxAge, .streamDiscard: streamDiscard, .streamUpdate: streamUpdate ? "on" : nil,
            .role: role, .postgres: postgres, .migrateOnStart: migrateOnStart, .historyMaxAge: historyMaxAge,
            .historyMaxCount: historyMaxCount,
            .redis: redis, .redisPrefix: redisPrefix, .presenceChannels: presenceChannels, .presenceEvents: presenceEvents,
            .presenceTTL: presenceTtl, .advertiseURL: advertiseUrl,
            .jwtSecretFile: jwtSecretFile, .jwtPublicKey: jwtPublicKey.isEmpty ? nil : jwtPublicKey.joined(separator: ","),
            .jwtAudience: jwtAudience, .jwtIssuer: jwtIssuer, .allowAnonymous: allowAnonymous, .insecure: insecure ? "on" : nil,
            .allowedOrigins: allowedOrigins, .allowedHosts: allowedHosts,
            .tlsCert: tlsCert, .tlsKey: tlsKey, .natsCA: natsCa, .natsCert: natsCert, .natsKey: natsKey,
            .connectHook: connectHook, .subscribeHook: subscribeHook, .publishHook: publishHook, .hookTimeout: hookTimeout,
            .hookConcurrency: hookConcurrency, .hookFailOpen: hookFailOpen, .hookSecretFile: hookSecretFile,
        ]
        let environment = ProcessInfo.processInfo.environment
        var fileValues: [String: ConfigurationSources.Value] = [:]
        if let path = config ?? environment["STORM_CONFIG"] {
            fileValues = try ConfigurationSources.parseFile(at: path)
        }
        return ConfigurationSources(flags: flags.compactMapValues { $0 }, environment: environment, fileValues: fileValues)
    }
}
