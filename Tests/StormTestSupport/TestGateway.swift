import Foundation
import Logging
import NIOCore
import StormBroker
import StormConfiguration
import StormConsumer
import StormCore
import StormGateway
import StormNATS
import StormObservability
import StormPresence
import StormStore
import Testing

/// Starts real gateways on port 0 for a test and stops them after it.
package enum TestGateway {
    package static func start(
        broker: any MessageBroker = MemoryBroker(),
        configure: (inout GatewayConfiguration) -> Void = { _ in }
    ) async throws -> Gateway {
        var configuration = try GatewayConfiguration(sources: ConfigurationSources())
        configuration.listen = .init(host: "127.0.0.1", port: 0)
        configuration.eventLoops = 2
        configuration.drainSeconds = 2
        configure(&configuration)
        var logger = Logger(label: "test-gateway")
        logger.logLevel = ProcessInfo.processInfo.environment["STORM_TEST_LOG"].flatMap(Logger.Level.init(rawValue:)) ?? .warning
        let gateway = Gateway(configuration: configuration, broker: broker, logger: logger)
        try await gateway.start()
        return gateway
    }

    /// Runs `body` with a started gateway and always stops it.
    package static func with<T>(
        broker: any MessageBroker = MemoryBroker(),
        configure: (inout GatewayConfiguration) -> Void = { _ in },
        _ body: (Gateway) async throws -> T
    ) async throws -> T {
        let gateway = try await start(broker: broker, configure: configure)
        do {
            let result = try await body(gateway)
            await gateway.stop()
            return result
        } catch {
            await gateway.stop()
            throw error
        }
    }
}

extension Gateway {
    package var port: Int { localAddress?.port ?? 0 }

    /// Publishes over HTTP and checks the gateway accepted it.
    @discardableResult
    package func publish(_ channel: String, _ body: String) async throws -> TestHTTPResponse {
        try await publish(channel, Array(body.utf8))
    }

    @discardableResult
    package func publish(_ channel: String, _ body: [UInt8]) async throws -> TestHTTPResponse {
        let connection = try await RawConnection.connect(port: port)
        return try await cleaningUp({ await connection.close() }) {
            return try await connection.request("POST", "/publish?subject=\(percentEncodeQueryValue(channel))", body: body)
        }
    }

    /// Reads `/metrics` and returns the value of the first sample line that starts with `prefix`.
    package func metric(_ prefix: String) async throws -> Double? {
        let connection = try await RawConnection.connect(port: port)
        return try await cleaningUp({ await connection.close() }) {
            let response = try await connection.request("GET", "/metrics")
            for line in response.text.split(separator: "\n") where line.hasPrefix(prefix) {
                return line.split(separator: " ").last.flatMap { Double($0) }
            }
            return nil
        }
    }
}

/// The NATS server the test script started; integration tests fail (never skip) in CI without it.
package enum TestEnvironment {
    package static var natsURL: String? {
        ProcessInfo.processInfo.environment["STORM_TEST_NATS_URL"].flatMap { $0.isEmpty ? nil : $0 }
    }

    package static var isCI: Bool { ProcessInfo.processInfo.environment["CI"] != nil }

    /// Returns the NATS URL, or records why it is missing: an issue in CI, a skip note elsewhere.
    package static func requireNATS() -> String? {
        if let natsURL { return natsURL }
        if isCI {
            Issue.record("STORM_TEST_NATS_URL is not set: run ./scripts/test, which starts nats-server")
        }
        return nil
    }
}
