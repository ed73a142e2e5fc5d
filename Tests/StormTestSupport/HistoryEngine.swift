import Foundation
import Logging
import NIOCore
import NIOPosix
import StormBroker
import StormCore
import StormNATS
import StormStore
import Testing

/// The two engines history and recovery run on: the in-memory window, and JetStream on a real nats-server.
package enum HistoryEngine: String, CaseIterable, CustomTestStringConvertible, Sendable {
    case memory
    case jetStream

    /// The engines a run can test: JetStream only with a nats-server (always in CI, where a missing
    /// server then fails the test), so a run without one lists the memory engine's cases only instead
    /// of passing JetStream cases that tested nothing.
    package static var available: [HistoryEngine] {
        NATSTestEnvironment.shouldRun ? allCases : [.memory]
    }

    package var testDescription: String { rawValue }

    /// A broker factory for one test: gateways made from it share one broker (memory) or one stream
    /// (JetStream, under a name and prefix of its own so tests never see each other's messages).
    package func makeFactory() -> (@Sendable (String) -> any MessageBroker)? {
        switch self {
        case .memory:
            let shared = MemoryBroker()
            return { _ in shared }
        case .jetStream:
            guard let url = TestEnvironment.requireNATS() else { return nil }
            let tag = "h\(UInt32.random(in: 0...UInt32.max))"
            return { name in
                var configuration = NATSBrokerConfiguration()
                configuration.urls = [url]
                configuration.connectionName = name
                configuration.subjectPrefix = "test.\(tag)"
                configuration.jetStream?.stream.name = tag.uppercased()
                configuration.jetStream?.stream.maxAge = .seconds(600)
                var logger = Logger(label: name)
                logger.logLevel = .warning
                return NATSBroker(configuration: configuration, logger: logger)
            }
        }
    }
}
