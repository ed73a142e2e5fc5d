import ArgumentParser
import Foundation
import Logging
import StormCore
import StormGateway
import StormStore
import StormWeb

/// `stormd migrate`: applies pending PostgreSQL schema migrations and exits. Safe to run while stormd
/// serves, and from several hosts at once (an advisory lock serialises them).
struct Migrate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "migrate",
        abstract: "Apply the PostgreSQL schema migrations (messages, users, channels) and exit.",
        discussion: """
            Reads the same options, environment and config file as `stormd serve`; only --postgres
            (STORM_POSTGRES_URL) and --log-level matter here. Prints the versions applied, or that the
            schema is up to date. Exit codes: 0 on success, 78 for a configuration error, 69 when PostgreSQL
            cannot be reached or refuses a migration.

            Examples:
              STORM_POSTGRES_URL=postgresql://storm@127.0.0.1:5432/storm stormd migrate
              stormd migrate --config /etc/storm/storm.conf
            """
    )

    @OptionGroup var options: StormdOptions

    func run() async throws {
        let configuration: GatewayConfiguration
        do {
            configuration = try GatewayConfiguration(sources: try options.sources())
        } catch {
            FileHandle.standardError.write(Data("stormd migrate: configuration error: \(error.message)\n".utf8))
            throw ExitCode(78)
        }
        guard let url = configuration.store.postgresURL else {
            FileHandle.standardError.write(Data("stormd migrate: configuration error: no database: give --postgres URL or set STORM_POSTGRES_URL\n".utf8))
            throw ExitCode(78)
        }
        var logger = Logger(label: "stormd.migrate")
        logger.logLevel = Logger.Level(rawValue: configuration.logLevel) ?? .info
        let client = PostgresClient(conninfo: url, size: 1, logger: logger)
        do {
            let applied = try await Migrations.apply(using: client, logger: logger)
            let version = try await Migrations.currentVersion(using: client)
            if applied.isEmpty {
                print("schema is up to date (version \(version)) on \(client.endpoint)")
            } else {
                print("applied migrations \(applied.map(String.init).joined(separator: ", ")); schema is at version \(version) on \(client.endpoint)")
            }
            await client.shutdown()
        } catch {
            await client.shutdown()
            FileHandle.standardError.write(Data("stormd migrate: \(error.message)\n".utf8))
            throw ExitCode(69)
        }
    }
}
