/// The one error type that crosses STORM's boundaries: HTTP answers, WebSocket error replies and close
/// frames, and `stormctl` messages all render it the same way.
///
/// The `code` is stable and machine-readable; the `message` is for the operator and names what was wrong
/// and, where it helps, what to do. Messages never contain secrets (tokens, passwords).
public struct StormError: Error, Sendable, Equatable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, RawRepresentable, CustomStringConvertible {
        public let rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }
        public var description: String { rawValue }

        public static let badRequest = Code(rawValue: "bad_request")
        public static let invalidChannel = Code(rawValue: "invalid_channel")
        public static let messageTooLarge = Code(rawValue: "message_too_large")
        public static let notFound = Code(rawValue: "not_found")
        public static let methodNotAllowed = Code(rawValue: "method_not_allowed")
        public static let tooManyChannels = Code(rawValue: "too_many_channels")
        public static let brokerUnavailable = Code(rawValue: "broker_unavailable")
        public static let slowClient = Code(rawValue: "slow_client")
        public static let shuttingDown = Code(rawValue: "shutting_down")
        public static let configuration = Code(rawValue: "configuration")
        public static let connection = Code(rawValue: "connection")
        public static let protocolViolation = Code(rawValue: "protocol_violation")
        public static let internalError = Code(rawValue: "internal")
        /// No valid token: missing where one is required, or presented and refused (bad signature,
        /// expired, unknown key…). HTTP 401, WebSocket close 4001.
        public static let unauthorized = Code(rawValue: "unauthorized")
        /// A valid token that does not allow this: the token's patterns, the channel's rules, or no admin
        /// capability. HTTP 403; on a WebSocket an error reply (close 4003 when it ends the connection).
        public static let forbidden = Code(rawValue: "forbidden")
        /// The thing to create exists already (a user id, a channel pattern). HTTP 409.
        public static let conflict = Code(rawValue: "conflict")
        /// A connection publishes faster than `--client-publish-rate`: this publish was refused, the
        /// connection stays open. HTTP 429; on a WebSocket an error reply.
        public static let rateLimited = Code(rawValue: "rate_limited")
        /// A browser request from an origin the gateway does not allow (`--allowed-origins`). HTTP 403.
        public static let originNotAllowed = Code(rawValue: "origin_not_allowed")
        /// A `Host` the gateway does not answer to (DNS rebinding; `--allowed-hosts`). HTTP 421.
        public static let hostNotAllowed = Code(rawValue: "host_not_allowed")
        /// A JSON API request whose body is not `Content-Type: application/json`. HTTP 415.
        public static let unsupportedMediaType = Code(rawValue: "unsupported_media_type")
        /// A WebSocket upgrade asking for a version other than 13. HTTP 426, with
        /// `Sec-WebSocket-Version: 13`.
        public static let unsupportedWebSocketVersion = Code(rawValue: "unsupported_websocket_version")
        /// JetStream refused the message for lack of room: the stream reached `--stream-max-bytes` or
        /// `--stream-max-messages` with `--stream-discard new`, or the server's storage is exhausted. Not
        /// transient like `broker_unavailable`: retrying helps only once an operator made room. HTTP 507;
        /// on a WebSocket an error reply (close 1013, try again later, if it ends the connection).
        public static let storageFull = Code(rawValue: "storage_full")
        /// The gateway holds as many connections as it takes: `--max-connections` for the process (past
        /// it only `/healthz`, `/readyz` and `/metrics` are answered) or `--max-connections-per-ip` for
        /// the client's address. HTTP 503 with `Retry-After`; the connection is closed.
        public static let tooManyConnections = Code(rawValue: "too_many_connections")
        /// The client's address opens connections faster than `--connect-rate-per-ip`: back off for
        /// `Retry-After` seconds. HTTP 503; the connection is closed.
        public static let connectRateLimited = Code(rawValue: "connect_rate_limited")
        /// The request head did not arrive within `--header-timeout`. HTTP 408; the connection is closed.
        public static let requestTimeout = Code(rawValue: "request_timeout")

        /// The history store (PostgreSQL) cannot be reached or refuses writes: the consumer's `/readyz`
        /// during a PostgreSQL outage. Transient; HTTP 503.
        public static let storeUnavailable = Code(rawValue: "store_unavailable")
        /// The history consumer works, but rows are known to be missing until JetStream redelivers
        /// messages a stopped consumer left unacknowledged (after the ack wait). HTTP 503.
        public static let catchingUp = Code(rawValue: "catching_up")
        /// Presence cannot answer truthfully now: its store (Redis) is down, or was just reconnected
        /// and not yet fully rewritten. HTTP 503; retry shortly.
        public static let presenceUnavailable = Code(rawValue: "presence_unavailable")
        /// A backend hook (`--connect-hook`, `--subscribe-hook`, `--publish-hook`) failed, was too slow
        /// or too busy, and it fails closed: the request was refused. HTTP 503; on a WebSocket an error
        /// reply.
        public static let hookUnavailable = Code(rawValue: "hook_unavailable")

        /// The HTTP status this error answers with.
        public var httpStatus: Int {
            switch self {
            case .badRequest, .invalidChannel, .tooManyChannels, .protocolViolation: return 400
            case .messageTooLarge: return 413
            case .unauthorized: return 401
            case .forbidden, .originNotAllowed: return 403
            case .hostNotAllowed: return 421
            case .unsupportedMediaType: return 415
            case .unsupportedWebSocketVersion: return 426
            case .conflict: return 409
            case .rateLimited: return 429
            case .notFound: return 404
            case .methodNotAllowed: return 405
            case .brokerUnavailable, .shuttingDown, .connection, .storeUnavailable, .catchingUp, .presenceUnavailable, .tooManyConnections, .connectRateLimited, .hookUnavailable: return 503
            case .requestTimeout: return 408
            case .storageFull: return 507
            default: return 500
            }
        }

        /// The WebSocket close code used when this error ends a connection (RFC 6455 section 7.4, and in
        /// the private range 4001 for authentication, 4003 for permission and 4008 for slow clients).
        public var webSocketCloseCode: UInt16 {
            switch self {
            case .badRequest, .originNotAllowed, .hostNotAllowed: return 1008
            case .protocolViolation: return 1002
            case .messageTooLarge: return 1009
            case .slowClient: return 4008
            case .unauthorized: return 4001
            case .forbidden: return 4003
            case .shuttingDown: return 1001
            case .storageFull, .tooManyConnections, .connectRateLimited: return 1013
            default: return 1011
            }
        }
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code.rawValue): \(message)" }

    /// `{"error":{"code":"…","message":"…"}}`, the body of every HTTP error.
    public var jsonBody: String {
        var out = "{\"error\":{\"code\":"
        JSONWriter.appendString(code.rawValue, to: &out)
        out += ",\"message\":"
        JSONWriter.appendString(message, to: &out)
        out += "}}"
        return out
    }
}
