import ArgumentParser
import CHiredis
import CLibPQ
import CNATS
import Foundation
import Logging
import NIOCore
import ServiceLifecycle
import StormCore

/// `stormd`: the STORM daemon. With no flags it serves on 127.0.0.1:8080 with the in-memory broker.
@main
struct Stormd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stormd",
        abstract: "The STORM gateway: HTTP publish, WebSocket and SSE fan-out, Prometheus metrics.",
        discussion: """
            With no flags stormd serves on 127.0.0.1:8080 with the in-memory broker (one node). Give it a
            NATS server to run several gateways as one cluster. Every option can also come from a STORM_*
            environment variable or a config file (key = value lines, keys as the long options); flags win
            over the environment, which wins over the file.

            Examples:
              stormd
              stormd --listen 0.0.0.0:8080 --nats nats://127.0.0.1:4222
              STORM_NATS_URL=nats://10.0.0.5:4222 stormd --config /etc/storm/storm.conf
              stormd --config /etc/storm/storm.conf --check-config

            Exit codes: 0 after a clean shutdown (SIGTERM/SIGINT), 78 for a configuration error, 69 when the
            listening address or the broker cannot be used, 70 for an internal error.
            """,
        version: "stormd \(StormVersion.current)"
    )

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

    @Option(help: ArgumentHelp("Seconds shutdown waits for clients to close. [STORM_DRAIN_TIMEOUT, default 5]", valueName: "seconds"))
    var drainTimeout: String?

    @Option(help: ArgumentHelp("trace, debug, info, notice, warning, error or critical. [STORM_LOG_LEVEL, default info]", valueName: "level"))
    var logLevel: String?

    @Option(help: ArgumentHelp("Gateway processes sharing the listening port (SO_REUSEPORT); each holds its own connections and NATS connection. [STORM_WORKERS, default 1]", valueName: "n"))
    var workers: String?

    @Option(help: ArgumentHelp("Config file of key = value lines. [STORM_CONFIG]", valueName: "file"))
    var config: String?

    @Flag(help: "Validate the configuration and exit (0 when valid, 78 otherwise).")
    var checkConfig = false

    @Flag(help: "Print the effective configuration and exit.")
    var printConfig = false

    func run() async throws {
        let configuration: GatewayConfiguration
        do {
            configuration = try GatewayConfiguration(sources: try sources())
        } catch {
            FileHandle.standardError.write(Data("stormd: configuration error: \(error.message)\n".utf8))
            throw ExitCode(78)
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
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        var logger = Logger(label: "stormd")
        ResourceLimits.raiseOpenFilesLimit(logger: logger)
        if configuration.workers > 1, WorkerSupervisor.currentWorkerIndex == nil {
            print("stormd \(StormVersion.current) starting \(configuration.workers) workers on http://\(configuration.listen) (broker: \(configuration.natsURLs.joined(separator: ",")))")
            fflush(nil)
            let supervisor = WorkerSupervisor(count: configuration.workers, arguments: Array(CommandLine.arguments.dropFirst()), logger: logger)
            let status = try await supervisor.run()
            if status != 0 { throw ExitCode(status) }
            return
        }
        if let index = WorkerSupervisor.currentWorkerIndex { logger[metadataKey: "storm.worker"] = "\(index)" }

        let broker: any MessageBroker
        if configuration.natsURLs.isEmpty {
            broker = MemoryBroker()
        } else {
            var nats = NATSBrokerConfiguration()
            nats.urls = configuration.natsURLs
            nats.subjectPrefix = configuration.natsSubjectPrefix
            nats.connectionName = "stormd \(configuration.listen)"
            broker = NATSBroker(configuration: nats, logger: logger)
        }
        let gateway = Gateway(configuration: configuration, broker: broker, logger: logger)
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
        if WorkerSupervisor.currentWorkerIndex == nil { print("stormd \(StormVersion.current) listening on http://\(address) (broker: \(broker.endpointDescription)); WebSocket ws://\(address)/ws, SSE /events, metrics /metrics") }
        if !configuration.listen.isLoopback {
            logger.warning("listening on a non-loopback address: every client on the network can publish and subscribe", metadata: ["storm.listen": "\(configuration.listen)"])
        }
        fflush(nil)
        let group = ServiceGroup(
            configuration: .init(services: [.init(service: gateway)], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }

    private func sources() throws(StormError) -> ConfigurationSources {
        let flags: [Setting: String?] = [
            .listen: listen, .nats: nats, .natsSubjectPrefix: natsSubjectPrefix, .maxMessageSize: maxMessageSize,
            .clientBuffer: clientBuffer, .maxChannels: maxChannelsPerConnection, .wsPingInterval: wsPingInterval,
            .sseHeartbeat: sseHeartbeat, .flushInterval: flushInterval, .maxFlushInterval: maxFlushInterval, .eventLoops: eventLoops, .backlog: backlog,
            .drainTimeout: drainTimeout, .logLevel: logLevel, .workers: workers,
        ]
        let environment = ProcessInfo.processInfo.environment
        var fileValues: [String: ConfigurationSources.Value] = [:]
        if let path = config ?? environment["STORM_CONFIG"] {
            fileValues = try ConfigurationSources.parseFile(at: path)
        }
        return ConfigurationSources(flags: flags.compactMapValues { $0 }, environment: environment, fileValues: fileValues)
    }
}

/// Versions of the C libraries stormd links, for `stormd --version` style diagnostics and bug reports.
enum LinkedLibraries {
    static var summary: String {
        let nats = String(cString: nats_GetVersion())
        let pq = Int(PQlibVersion())
        let hiredis = String(cString: storm_hiredis_version())
        return "nats.c \(nats), libpq \(pq / 10000).\(pq % 100), hiredis \(hiredis)"
    }
}

extension GatewayConfiguration {
    /// `--print-config`: the effective configuration as config-file lines.
    func rendered() -> String {
        """
        listen = \(listen)
        nats = \(natsURLs.joined(separator: ","))
        nats-subject-prefix = \(natsSubjectPrefix)
        max-message-size = \(limits.maxMessageSize)
        client-buffer = \(limits.clientBufferBytes)
        max-channels-per-connection = \(limits.maxChannelsPerConnection)
        ws-ping-interval = \(limits.webSocketPingInterval.nanoseconds / 1_000_000)ms
        sse-heartbeat = \(limits.sseHeartbeatInterval.nanoseconds / 1_000_000)ms
        flush-interval = \(limits.flushDelay.nanoseconds / 1_000_000)ms
        max-flush-interval = \(limits.maxFlushDelay.nanoseconds / 1_000_000)ms
        event-loops = \(eventLoops)
        backlog = \(backlog)
        drain-timeout = \(drainSeconds)
        log-level = \(logLevel)
        workers = \(workers)
        # linked: \(LinkedLibraries.summary)
        """
    }
}
