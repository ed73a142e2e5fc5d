import ArgumentParser
import Foundation
import Logging
import Prometheus
import ServiceLifecycle
import StormConsumer
import StormCore
import StormGateway
import StormHTTP
import StormNATS
import StormObservability
import StormStore
import StormWeb
import Tracing

/// The store side of `stormd serve`: with `--postgres`, the history consumer and the retention prune
/// (and, for `--role consumer`, the shared HTTP server with the consumer's routes: probes and metrics).
package struct StoreServices {
    package let postgres: PostgresClient?
    package let consumer: HistoryConsumer?
    package let retention: HistoryRetention?

    /// The services to run beside the gateway (none without `--postgres` or without NATS).
    package var services: [any Service] {
        var services: [any Service] = []
        if let consumer { services.append(consumer) }
        if let retention { services.append(retention) }
        return services
    }

    /// The process's one PostgreSQL client for `--role all` with `--postgres`: the gateway (users,
    /// channel rules, the history archive) and the consumer (writes, retention) share its pool, whose
    /// size is the sum of what each had alone (1 + 2; 1 when no consumer runs). Nil without `--postgres`.
    package static func makeClient(configuration: GatewayConfiguration, logger: Logger) -> PostgresClient? {
        let size = configuration.store.runsConsumer ? 3 : 1
        return configuration.store.postgresURL.map { PostgresClient(conninfo: $0, size: size, logger: logger) }
    }

    /// Builds the consumer for `--role all` when PostgreSQL is configured, on the process's client
    /// (`makeClient`); registers its metrics into the gateway's registry. The gateway applied the
    /// migrations at its start (`--migrate-on-start`), so the consumer does not apply them again.
    package static func start(
        configuration: GatewayConfiguration, postgres: PostgresClient?, registry: PrometheusCollectorRegistry, logger: Logger, tracer: (any Tracer)? = nil
    ) throws -> StoreServices {
        let store = configuration.store
        guard store.runsConsumer, let postgres else {
            if store.postgresURL != nil, !store.natsConfigured {
                logger.warning("--postgres is set without --nats: the history consumer reads JetStream, so it does not run")
            }
            return StoreServices(postgres: nil, consumer: nil, retention: nil)
        }
        warnAboutPasswordInArguments(logger: logger)
        let metrics = ConsumerMetrics(registry: registry)
        var consumerConfiguration = configuration.historyConsumer
        consumerConfiguration.migrateOnStart = false
        let consumer = HistoryConsumer(
            configuration: consumerConfiguration, postgres: postgres, metrics: metrics, logger: logger, tracing: tracer.map(StormTracing.init))
        let retention = HistoryRetention(postgres: postgres, maxAge: store.historyMaxAge, maxCount: store.historyMaxCount, metrics: metrics, logger: logger)
        logger.info("history consumer enabled", metadata: ["postgres.server": "\(postgres.endpoint)"])
        return StoreServices(postgres: postgres, consumer: consumer, retention: retention)
    }

    /// `--role consumer`: the consumer, the prune and `/healthz`, `/readyz`, `/metrics` on `--listen`,
    /// until SIGTERM or SIGINT.
    package static func runConsumerRole(configuration: GatewayConfiguration, logger: Logger) async throws {
        let store = configuration.store
        guard let url = store.postgresURL else {
            FileHandle.standardError.write(Data("stormd: configuration error: --role consumer needs --postgres\n".utf8))
            throw ExitCode(78)
        }
        warnAboutPasswordInArguments(logger: logger)
        let metrics = ConsumerMetrics()
        let postgres = PostgresClient(conninfo: url, size: 2, logger: logger)
        let tracing = try OTLPTracing.make(endpoint: configuration.otlpEndpoint, logger: logger)
        let consumer = HistoryConsumer(
            configuration: configuration.historyConsumer, postgres: postgres, metrics: metrics, logger: logger, tracing: tracing.map { StormTracing($0.tracer) })
        let retention = HistoryRetention(postgres: postgres, maxAge: store.historyMaxAge, maxCount: store.historyMaxCount, metrics: metrics, logger: logger)
        // The gateway's HTTP server with the consumer's routes: the same Host/Origin policy, connection
        // limits, timeouts and body limit, from the same settings.
        let settings = HTTPServerSettings(
            requestPolicy: configuration.requestPolicy, connectionLimits: configuration.connections, maxBodySize: configuration.limits.maxMessageSize,
            metrics: UncountedHTTPServer(), connectionIDs: ConnectionIDs(instanceID: "consumer"), logger: logger)
        let server = ConsumerRoutes.server(
            host: configuration.listen.host, port: configuration.listen.port, settings: settings, consumer: consumer, registry: metrics.registry)
        do {
            try await server.start()
        } catch {
            FileHandle.standardError.write(Data("stormd: cannot listen on \(configuration.listen): \(error)\n".utf8))
            throw ExitCode(69)
        }
        let address = server.localAddress.map { "\($0.ipAddress ?? configuration.listen.host):\($0.port ?? configuration.listen.port)" } ?? configuration.listen.description
        if WorkerSupervisor.currentWorkerIndex == nil {
            print("stormd \(StormVersion.current) consumer: JetStream \(configuration.natsURLs.map(redactedNATSURL).joined(separator: ",")) to PostgreSQL \(postgres.endpoint); /healthz, /readyz, /metrics on http://\(address)")
        }
        fflush(nil)
        let group = ServiceGroup(
            configuration: .init(
                services: (tracing.map { [ServiceGroupConfiguration.ServiceConfiguration(service: $0.service)] } ?? []) + [.init(service: server), .init(service: consumer), .init(service: retention)],
                gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
        await postgres.shutdown()
    }
    /// `ps` shows argv to every user of the machine: say so when `--postgres` carries a password.
    private static func warnAboutPasswordInArguments(logger: Logger) {
        let arguments = CommandLine.arguments
        for (index, argument) in arguments.enumerated() {
            let value: String?
            if argument == "--postgres" {
                value = index + 1 < arguments.count ? arguments[index + 1] : nil
            } else if argument.hasPrefix("--postgres=") {
                value = String(argument.dropFirst("--postgres=".count))
            } else {
                value = nil
            }
            if let value, redactedPostgresConnectionString(value) != value {
                logger.warning("--postgres carries a password on the command line, where any local user can read it: use STORM_POSTGRES_URL, the config file, PGPASSWORD or ~/.pgpass")
            }
        }
    }
}
