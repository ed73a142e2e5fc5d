import Foundation
import Logging
import NIOCore
import NIOPosix
import StormBroker
import StormCore
import StormNATS
import StormStore
import Testing

/// Where the integration tests find NATS. `./scripts/test` starts a nats-server and sets these.
package enum NATSTestEnvironment {
    package static var url: String? { nonEmpty("STORM_TEST_NATS_URL") }
    package static var serverBinary: String? { nonEmpty("STORM_TEST_NATS_SERVER_BIN") }

    /// CI must run the integration suites, never skip them: a missing server there is a failure.
    package static var isCI: Bool {
        guard let value = nonEmpty("CI")?.lowercased() else { return false }
        return value != "false" && value != "0"
    }

    /// Run the suite when there is a server, and in CI even without one, so that it fails loudly there.
    package static var shouldRun: Bool { url != nil || isCI }

    package static func requireURL() throws -> String {
        // Thrown, not recorded: the test fails once, with this message, at its first line.
        guard let url else { throw MissingServer(variable: "STORM_TEST_NATS_URL") }
        return url
    }

    /// The nats-server binary, for suites that start a private server of their own (to kill or
    /// restart it). Thrown, like `requireURL`, when ./scripts/test did not provide it.
    package static func requireServerBinary() throws -> String {
        guard let serverBinary else { throw MissingServer(variable: "STORM_TEST_NATS_SERVER_BIN") }
        return serverBinary
    }

    package struct MissingServer: Error, CustomStringConvertible {
        package var variable: String
        package var description: String { "\(variable) is not set: run ./scripts/test, which starts nats-server" }
    }

    private static func nonEmpty(_ name: String) -> String? {
        guard let value = ProcessInfo.processInfo.environment[name], !value.isEmpty else { return nil }
        return value
    }
}

/// A loopback port that nothing listens on (it was free a moment ago).
package func unusedPort() async throws -> Int {
    let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
        .bind(host: "127.0.0.1", port: 0).get()
    let port = channel.localAddress?.port ?? 0
    try await channel.close()
    return port
}

package func acceptsConnections(port: Int) async -> Bool {
    do {
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connectTimeout(.milliseconds(200))
            .connect(host: "127.0.0.1", port: port).get()
        try? await channel.close()
        return true
    } catch {
        return false
    }
}

/// A private nats-server the test can kill and restart, for reconnect behaviour.
package final class PrivateNATSServer {
    package let binary: String
    package let port: Int
    private var process: Process?

    package init(binary: String, port: Int) {
        self.binary = binary
        self.port = port
    }

    package var url: String { "nats://127.0.0.1:\(port)" }

    package func start() throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        // JetStream on, with a store that outlives a restart, as in production: the broker's stream is
        // still there when the server comes back.
        let store = FileManager.default.temporaryDirectory.appendingPathComponent("storm-nats-\(port)").path
        process.arguments = ["-a", "127.0.0.1", "-p", "\(port)", "-js", "-sd", store]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        self.process = process
    }

    package func waitUntilReady() async -> Bool {
        let deadline = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < deadline {
            if await acceptsConnections(port: port) { return true }
            try? await Task.sleep(for: .milliseconds(50))
        }
        return false
    }

    /// Sends `signal` (SIGSTOP, SIGCONT) to the server this test started: a stopped server keeps its
    /// sockets open and answers nothing, like a hung stream node.
    package func signal(_ signal: Int32) {
        guard let process, process.isRunning else { return }
        kill(process.processIdentifier, signal)
    }

    /// SIGKILL: the broker sees the connection drop the way it does when a server crashes.
    package func stop() {
        guard let process else { return }
        if process.isRunning {
            kill(process.processIdentifier, SIGCONT)
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        self.process = nil
    }

    deinit { stop() }
}

// MARK: - Tests that need no server
