import Foundation
import StormCore

/// A gateway setting: its key (the long flag name and the config file key) and environment variable.
package enum Setting: String, CaseIterable, Sendable {
    case listen
    case nats
    case natsSubjectPrefix = "nats-subject-prefix"
    case maxMessageSize = "max-message-size"
    case clientBuffer = "client-buffer"
    case maxChannels = "max-channels-per-connection"
    case maxGatewayChannels = "max-channels"
    case clientPublishRate = "client-publish-rate"
    case wsPingInterval = "ws-ping-interval"
    case sseHeartbeat = "sse-heartbeat"
    case flushInterval = "flush-interval"
    case maxFlushInterval = "max-flush-interval"
    case eventLoops = "event-loops"
    case backlog
    case maxConnections = "max-connections"
    case maxConnectionsPerIP = "max-connections-per-ip"
    case connectRatePerIP = "connect-rate-per-ip"
    case limitLoopback = "limit-loopback"
    case headerTimeout = "header-timeout"
    case idleTimeout = "idle-timeout"
    case drainTimeout = "drain-timeout"
    case logLevel = "log-level"
    case logFormat = "log-format"
    case otlpEndpoint = "otlp-endpoint"
    case workers
    case webUI = "web-ui"
    case jetStream = "jetstream"
    case streamReplicas = "stream-replicas"
    case streamMaxBytes = "stream-max-bytes"
    case streamMaxMessages = "stream-max-messages"
    case streamMaxAge = "stream-max-age"
    case streamDiscard = "stream-discard"
    case streamUpdate = "stream-update"
    case role
    case postgres
    case migrateOnStart = "migrate-on-start"
    case historyMaxAge = "history-max-age"
    case historyMaxCount = "history-max-count"
    case redis
    case redisPrefix = "redis-prefix"
    case presenceChannels = "presence-channels"
    case presenceEvents = "presence-events"
    case presenceTTL = "presence-ttl"
    case advertiseURL = "advertise-url"
    case jwtSecretFile = "jwt-secret-file"
    case jwtPublicKey = "jwt-public-key"
    case jwtAudience = "jwt-audience"
    case jwtIssuer = "jwt-issuer"
    case allowAnonymous = "allow-anonymous"
    case insecure
    case allowedOrigins = "allowed-origins"
    case allowedHosts = "allowed-hosts"
    case tlsCert = "tls-cert"
    case tlsKey = "tls-key"
    case natsCA = "nats-ca"
    case natsCert = "nats-cert"
    case natsKey = "nats-key"
    case connectHook = "connect-hook"
    case subscribeHook = "subscribe-hook"
    case publishHook = "publish-hook"
    case hookTimeout = "hook-timeout"
    case hookConcurrency = "hook-concurrency"
    case hookFailOpen = "hook-fail-open"
    case hookSecretFile = "hook-secret-file"

    package var environmentVariable: String {
        switch self {
        case .nats: return "STORM_NATS_URL"
        case .postgres: return "STORM_POSTGRES_URL"
        case .redis: return "STORM_REDIS_URL"
        default: return "STORM_" + rawValue.uppercased().replacingOccurrences(of: "-", with: "_")
        }
    }
}

/// Where settings come from, highest precedence first: flags, environment, config file.
package struct ConfigurationSources: Sendable {
    package struct Value: Sendable {
        package var value: String
        /// Where it came from, for error messages: "--listen", "STORM_LISTEN", "/etc/storm.conf:3".
        package var origin: String

        package init(value: String, origin: String) {
            self.value = value
            self.origin = origin
        }
    }

    package var flags: [Setting: String] = [:]
    package var environment: [String: String] = [:]
    package var fileValues: [String: Value] = [:]

    package init(flags: [Setting: String] = [:], environment: [String: String] = [:], fileValues: [String: Value] = [:]) {
        self.flags = flags
        self.environment = environment
        self.fileValues = fileValues
    }

    package func value(_ setting: Setting) -> Value? {
        if let flag = flags[setting] { return Value(value: flag, origin: "--\(setting.rawValue)") }
        if let env = environment[setting.environmentVariable], !env.isEmpty {
            return Value(value: env, origin: setting.environmentVariable)
        }
        return fileValues[setting.rawValue]
    }

    package func unknownKeys() -> [(String, String)] {
        fileValues.filter { Setting(rawValue: $0.key) == nil }.map { ($0.key, $0.value.origin) }.sorted { $0.0 < $1.0 }
    }

    /// Reads a config file: one `key = value` per line, `#` starts a comment, keys are the long flag
    /// names (`listen = 0.0.0.0:8080`).
    package static func parseFile(at path: String) throws(StormError) -> [String: Value] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw StormError(.configuration, "cannot read config file '\(path)'")
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw StormError(.configuration, "config file '\(path)' is not UTF-8 text")
        }
        var values: [String: Value] = [:]
        for (number, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = rawLine.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first.map { $0.trimmingSpaces() } ?? ""
            if line.isEmpty { continue }
            guard let equals = line.firstIndex(of: "=") else {
                throw StormError(.configuration, "\(path):\(number + 1): expected 'key = value', found '\(line.prefix(60))'")
            }
            let key = line[..<equals].trimmingSpaces()
            let value = line[line.index(after: equals)...].trimmingSpaces()
            values[key] = Value(value: value, origin: "\(path):\(number + 1)")
        }
        return values
    }
}
