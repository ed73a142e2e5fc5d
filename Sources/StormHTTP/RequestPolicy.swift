import Foundation
import NIOHTTP1
import StormCore

/// What a policy decided about a request: let it through, or answer it with this error (and headers).
package enum PolicyDecision: Equatable, Sendable {
    case allow
    case refuse(StormError)

    package var error: StormError? {
        if case .refuse(let error) = self { return error }
        return nil
    }
}

/// Which `Host` headers the gateway answers (docs/security.md, "Hosts"): the defence against DNS
/// rebinding, where a hostile page makes a name of its own resolve to the gateway's address.
///
/// - On a loopback listen (127.0.0.0/8, `::1`, `localhost`): loopback names and addresses only
///   (`localhost`, `*.localhost`, `127.x.x.x`, `[::1]`, with or without port), plus `--allowed-hosts`.
/// - On any other listen: every Host, unless `--allowed-hosts` is given; then the listed names, loopback
///   names, and IP address literals (a rebinding attack needs a name, so an address cannot be one).
/// - A request without `Host` (HTTP/1.0 tools) is let through: browsers always send it.
package struct HostPolicy: Equatable, Sendable {
    /// `--allowed-hosts`: lowercased names without port; `*` lets every Host through.
    package var allowedHosts: [String]
    /// Whether Host is checked at all.
    package var restricted: Bool
    /// Whether the listen address is loopback (then IP literals other than loopback are refused too).
    package var loopbackListen: Bool

    package init(listenIsLoopback: Bool, allowedHosts: [String] = []) {
        self.allowedHosts = allowedHosts.map { Self.normalizedName($0) }
        self.loopbackListen = listenIsLoopback
        self.restricted = !self.allowedHosts.contains("*") && (listenIsLoopback || !self.allowedHosts.isEmpty)
    }

    package func evaluate(host: String?) -> PolicyDecision {
        guard restricted, let host else { return .allow }
        if let name = Self.hostName(of: host) {
            if Self.isLoopback(name) || allowedHosts.contains(name) { return .allow }
            if !loopbackListen, Self.isIPLiteral(name) { return .allow }
        }
        let name = Self.hostName(of: host).map { String($0.prefix(100)) } ?? "NAME"
        let accepted = loopbackListen ? "this gateway listens on loopback and answers only loopback names (localhost, 127.0.0.1, [::1]) and --allowed-hosts" : "this gateway answers only the names in --allowed-hosts"
        return .refuse(
            StormError(.hostNotAllowed, "Host '\(host.prefix(100))' is refused: \(accepted); to serve this name, start stormd with --allowed-hosts \(name) (or STORM_ALLOWED_HOSTS)"))
    }

    /// The name part of a Host header, lowercased, without port or trailing dot; `[::1]` keeps its
    /// brackets. Nil when the header is not a valid host[:port].
    package static func hostName(of header: String) -> String? {
        let text = header.trimmingCharacters(in: .whitespaces).lowercased()
        var name: Substring
        var port: Substring?
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { return nil }
            name = text[...close]
            let rest = text[text.index(after: close)...]
            if !rest.isEmpty {
                guard rest.first == ":" else { return nil }
                port = rest.dropFirst()
            }
        } else if let colon = text.firstIndex(of: ":") {
            name = text[..<colon]
            port = text[text.index(after: colon)...]
        } else {
            name = Substring(text)
        }
        if let port {
            guard (1...5).contains(port.count), port.allSatisfy({ $0.isASCII && $0.isNumber }) else { return nil }
        }
        if name.hasSuffix("."), !name.hasPrefix("[") { name = name.dropLast() }
        guard !name.isEmpty, !name.contains(where: { $0 == " " || $0 == "/" || $0 == "@" }) else { return nil }
        return String(name)
    }

    /// A configured name, normalised the way `hostName(of:)` normalises Host headers.
    package static func normalizedName(_ entry: String) -> String {
        let trimmed = entry.trimmingCharacters(in: .whitespaces).lowercased()
        if trimmed == "*" { return "*" }
        return hostName(of: trimmed) ?? trimmed
    }

    /// `localhost`, `*.localhost` (RFC 6761: browsers resolve them to loopback themselves), `127.x.x.x`
    /// and `[::1]`.
    package static func isLoopback(_ name: String) -> Bool {
        if name == "localhost" || name.hasSuffix(".localhost") || name == "[::1]" || name == "::1" { return true }
        guard let octets = ipv4Octets(name) else { return false }
        return octets[0] == 127
    }

    package static func isIPLiteral(_ name: String) -> Bool {
        if ipv4Octets(name) != nil { return true }
        guard name.hasPrefix("["), name.hasSuffix("]"), name.count > 2 else { return false }
        return name.dropFirst().dropLast().allSatisfy { $0.isHexDigit || $0 == ":" || $0 == "." }
    }

    /// The four octets of a dotted-quad IPv4 address; nil for anything else (never traps).
    package static func ipv4Octets(_ name: String) -> [UInt8]? {
        let parts = name.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var octets: [UInt8] = []
        for part in parts {
            guard (1...3).contains(part.count), part.allSatisfy({ $0.isASCII && $0.isNumber }), let octet = UInt8(part) else { return nil }
            octets.append(octet)
        }
        return octets
    }
}

/// Which browser origins may use the gateway (docs/security.md, "Origins"): a request with an `Origin`
/// header is let through only from the gateway's own origin (`http://` or `https://` followed by the
/// request's Host, once `HostPolicy` accepted that Host) or from an origin in `--allowed-origins`.
/// `--allowed-origins '*'` lets every origin in, `null` included. Requests without `Origin` (command-line
/// tools, servers) are not concerned.
package struct OriginPolicy: Equatable, Sendable {
    package enum Allowed: Equatable, Sendable {
        /// Only the gateway's own origin (the default).
        case sameOrigin
        /// `*`: every origin.
        case any
        /// The gateway's own origin and these, normalised (`scheme://host[:port]`, default port dropped).
        case list([String])
    }

    package var allowed: Allowed

    package init(_ allowed: Allowed = .sameOrigin) {
        self.allowed = allowed
    }

    /// Parses `--allowed-origins`: `*`, or a comma list of `scheme://host[:port]`.
    package static func parse(_ text: String) throws(StormError) -> OriginPolicy {
        let entries = text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        if entries == ["*"] { return OriginPolicy(.any) }
        var origins: [String] = []
        for entry in entries {
            guard entry != "*" else { throw StormError(.configuration, "'*' in allowed-origins must stand alone (it allows every origin)") }
            guard let origin = normalized(entry) else {
                throw StormError(.configuration, "'\(entry.prefix(100))' is not an origin: expected scheme://host[:port] with http or https, no path (for example https://app.example.com or http://localhost:3000)")
            }
            origins.append(origin)
        }
        return OriginPolicy(origins.isEmpty ? .sameOrigin : .list(origins))
    }

    /// As `--print-config` shows it: empty for the default, `*`, or the list.
    package var rendered: String {
        switch allowed {
        case .sameOrigin: return ""
        case .any: return "*"
        case .list(let origins): return origins.joined(separator: ",")
        }
    }

    /// `scheme://host[:port]` lowercased, the scheme's default port dropped; nil when it is not one.
    package static func normalized(_ origin: String) -> String? {
        guard let (scheme, authority) = split(origin) else { return nil }
        return "\(scheme)://\(authority)"
    }

    /// Scheme and authority (host[:port], default port dropped) of an origin.
    private static func split(_ origin: String) -> (String, String)? {
        var text = origin.lowercased()
        if text.hasSuffix("/") { text.removeLast() }
        let scheme: String
        if text.hasPrefix("http://") {
            scheme = "http"
        } else if text.hasPrefix("https://") {
            scheme = "https"
        } else {
            return nil
        }
        let authority = String(text.dropFirst(scheme.count + 3))
        guard let name = HostPolicy.hostName(of: authority), !authority.contains("/") else { return nil }
        return (scheme, withoutDefaultPort(authority, name: name, scheme: scheme))
    }

    private static func withoutDefaultPort(_ authority: String, name: String, scheme: String) -> String {
        let defaultPort = scheme == "https" ? ":443" : ":80"
        return authority.hasSuffix(defaultPort) && authority.count == name.count + defaultPort.count ? name : authority
    }

    /// `origin`: the request's Origin header; `host`: its Host header, when `HostPolicy` accepted it.
    package func evaluate(origin: String?, host: String?) -> PolicyDecision {
        guard let origin else { return .allow }
        if allowed == .any { return .allow }
        if let (scheme, authority) = Self.split(origin) {
            if let host, let name = HostPolicy.hostName(of: host),
                authority == Self.withoutDefaultPort(host.trimmingCharacters(in: .whitespaces).lowercased(), name: name, scheme: scheme)
            {
                return .allow
            }
            if case .list(let origins) = allowed, origins.contains("\(scheme)://\(authority)") { return .allow }
        }
        return .refuse(
            StormError(
                .originNotAllowed,
                "browser origin '\(origin.prefix(100))' is not allowed: only the gateway's own origin is, unless listed in --allowed-origins (start stormd with --allowed-origins \(Self.normalized(origin).map { String($0.prefix(100)) } ?? "https://app.example.com") or STORM_ALLOWED_ORIGINS; '*' allows every origin)"
            ))
    }
}

/// The checks every HTTP request passes before its route, WebSocket upgrades and event streams
/// included: Host, then Origin.
package struct RequestPolicy: Equatable, Sendable {
    package var hosts: HostPolicy
    package var origins: OriginPolicy

    package init(hosts: HostPolicy = HostPolicy(listenIsLoopback: true), origins: OriginPolicy = OriginPolicy()) {
        self.hosts = hosts
        self.origins = origins
    }

    package func evaluate(_ head: HTTPRequestHead) -> PolicyDecision {
        let hostValues = head.headers["host"]
        // Two Host headers are a smuggling attempt or a broken proxy: neither can be trusted.
        guard hostValues.count <= 1 else { return .refuse(StormError(.badRequest, "the request has \(hostValues.count) Host headers; send exactly one")) }
        let host = hostValues.first
        if case .refuse(let error) = hosts.evaluate(host: host) { return .refuse(error) }
        let originValues = head.headers["origin"]
        guard originValues.count <= 1 else { return .refuse(StormError(.originNotAllowed, "the request has \(originValues.count) Origin headers")) }
        return origins.evaluate(origin: originValues.first, host: host)
    }

    /// A body sent to the JSON API (`/api/v1/...`: the admin API and the disconnect requests) must be
    /// `Content-Type: application/json` (parameters allowed), so that no cross-site "simple request"
    /// (a form post, `text/plain`) can reach it. `POST /publish` takes any payload and is not concerned.
    package static func checkJSONBody(path: String, head: HTTPRequestHead) -> PolicyDecision {
        guard path.hasPrefix("/api/v1/") || path == "/api/v1" else { return .allow }
        let lengths = head.headers["content-length"]
        let hasBody = head.headers.contains(name: "transfer-encoding") || lengths.contains { $0.trimmingCharacters(in: .whitespaces) != "0" }
        guard hasBody else { return .allow }
        let types = head.headers["content-type"]
        // The batch publish takes NDJSON, one message a line (docs/protocol.md).
        let ndjson = path == "/api/v1/publish/batch"
        if types.count == 1, let type = types.first,
            let media = type.split(separator: ";", maxSplits: 1, omittingEmptySubsequences: false).first?.trimmingCharacters(in: .whitespaces).lowercased(),
            media == "application/json" || (ndjson && media == "application/x-ndjson")
        {
            return .allow
        }
        let given = types.isEmpty ? "none" : "'\(types.joined(separator: ", ").prefix(100))'"
        if ndjson {
            return .refuse(StormError(.unsupportedMediaType, "\(head.method) \(path) takes NDJSON: send Content-Type: application/x-ndjson (given: \(given))"))
        }
        return .refuse(StormError(.unsupportedMediaType, "\(head.method) \(path) takes a JSON body: send Content-Type: application/json (given: \(given))"))
    }
}

/// RFC 6455 section 4.2.1's requirements on an opening handshake, checked before the upgrade: GET,
/// HTTP/1.1 or later, `Connection: Upgrade`, `Sec-WebSocket-Version: 13`, and a `Sec-WebSocket-Key`
/// that is the base64 of exactly 16 bytes.
package enum WebSocketHandshakeCheck {
    package enum Outcome: Equatable, Sendable {
        /// Not a WebSocket upgrade at all (no `Upgrade: websocket`): the HTTP routes answer it.
        case notAnUpgrade
        /// A valid opening handshake.
        case valid
        /// Refused; `headers` go on the error answer (`Sec-WebSocket-Version: 13` with 426).
        case refused(StormError, headers: [(String, String)])

        package static func == (lhs: Outcome, rhs: Outcome) -> Bool {
            switch (lhs, rhs) {
            case (.notAnUpgrade, .notAnUpgrade), (.valid, .valid): return true
            case (.refused(let a, let x), .refused(let b, let y)): return a == b && x.elementsEqual(y, by: { $0 == $1 })
            default: return false
            }
        }
    }

    package static func evaluate(_ head: HTTPRequestHead) -> Outcome {
        let upgrade = tokens(head.headers["upgrade"])
        guard upgrade.contains("websocket") else { return .notAnUpgrade }
        func refuse(_ reason: String) -> Outcome {
            .refused(StormError(.badRequest, "WebSocket handshake refused: \(reason) (RFC 6455 section 4.2.1)"), headers: [])
        }
        guard head.method == .GET else { return refuse("the upgrade must be a GET request, not \(head.method.rawValue.prefix(20))") }
        guard head.version.major > 1 || (head.version.major == 1 && head.version.minor >= 1) else {
            return refuse("the upgrade needs HTTP/1.1 or later, not HTTP/\(head.version.major).\(head.version.minor)")
        }
        guard tokens(head.headers["connection"]).contains("upgrade") else { return refuse("'Connection: Upgrade' is missing") }
        let versions = head.headers["sec-websocket-version"]
        guard !versions.isEmpty else { return refuse("'Sec-WebSocket-Version: 13' is missing") }
        guard versions.count == 1, versions.first?.trimmingCharacters(in: .whitespaces) == "13" else {
            return .refused(
                StormError(.unsupportedWebSocketVersion, "WebSocket version '\(versions.joined(separator: ", ").prefix(40))' is not supported: this gateway speaks version 13 (RFC 6455)"),
                headers: [("Sec-WebSocket-Version", "13")])
        }
        let keys = head.headers["sec-websocket-key"]
        guard keys.count == 1, let key = keys.first?.trimmingCharacters(in: .whitespaces) else {
            return refuse(keys.isEmpty ? "'Sec-WebSocket-Key' is missing" : "the request has \(keys.count) Sec-WebSocket-Key headers")
        }
        guard isValidKey(key) else { return refuse("'Sec-WebSocket-Key' must be the base64 of exactly 16 random bytes (24 characters ending in ==)") }
        return .valid
    }

    /// The base64 of exactly 16 bytes: 24 characters, the last two `=`.
    package static func isValidKey(_ key: String) -> Bool {
        guard key.utf8.count == 24, let data = Data(base64Encoded: key) else { return false }
        return data.count == 16
    }

    /// Comma-separated header tokens, lowercased.
    private static func tokens(_ values: [String]) -> [String] {
        values.flatMap { $0.split(separator: ",") }.map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
    }
}
