import Foundation
import NIOCore
import NIOHTTP1
import StormCore
import StormTestSupport
import Testing

@testable import StormBroker
@testable import StormConfiguration
@testable import StormConsumer
@testable import StormGateway
@testable import StormNATS
@testable import StormObservability
@testable import StormPresence
@testable import StormStore

/// The rules of `RequestPolicy`, `HostPolicy`, `OriginPolicy` and `WebSocketHandshakeCheck`, one
/// decision at a time, without sockets.
@Suite("HTTP security policies")
struct HTTPSecurityPolicyTests {
    private func head(_ headers: [(String, String)], method: HTTPMethod = .GET, uri: String = "/ws", version: HTTPVersion = .http1_1) -> HTTPRequestHead {
        HTTPRequestHead(version: version, method: method, uri: uri, headers: HTTPHeaders(headers))
    }

    private static let upgrade = [("Host", "127.0.0.1:8080"), ("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="), ("Sec-WebSocket-Version", "13")]

    @Test("Host on a loopback listen: loopback names and addresses, and --allowed-hosts")
    func loopbackHosts() {
        let policy = HostPolicy(listenIsLoopback: true)
        for host in ["localhost", "localhost:8080", "LOCALHOST", "localhost.", "app.localhost:3000", "127.0.0.1", "127.0.0.1:8080", "127.255.3.4:1", "[::1]", "[::1]:8080"] {
            #expect(policy.evaluate(host: host) == .allow, "\(host)")
        }
        #expect(policy.evaluate(host: nil) == .allow)
        for host in ["attacker.example", "attacker.example:8080", "10.0.0.1", "128.0.0.1", "127.0.0.256", "127.0.0", "[::2]", "localhost.attacker.example", "", "localhost:99999999999999999999", "local host", "[::1"] {
            #expect(policy.evaluate(host: host).error?.code == .hostNotAllowed, "\(host)")
        }
        #expect(policy.evaluate(host: "attacker.example").error?.message.contains("--allowed-hosts attacker.example") == true)
        let allowing = HostPolicy(listenIsLoopback: true, allowedHosts: ["Storm.Test"])
        #expect(allowing.evaluate(host: "storm.test:8080") == .allow)
        #expect(allowing.evaluate(host: "other.test").error?.code == .hostNotAllowed)
        #expect(HostPolicy(listenIsLoopback: true, allowedHosts: ["*"]).evaluate(host: "anything.example") == .allow)
    }

    @Test("Host on other listens: free unless --allowed-hosts is given")
    func networkHosts() {
        #expect(HostPolicy(listenIsLoopback: false).evaluate(host: "anything.example") == .allow)
        let policy = HostPolicy(listenIsLoopback: false, allowedHosts: ["storm.example.com"])
        #expect(policy.evaluate(host: "storm.example.com") == .allow)
        #expect(policy.evaluate(host: "localhost:8080") == .allow)
        #expect(policy.evaluate(host: "10.1.2.3:8080") == .allow)
        #expect(policy.evaluate(host: "[fd00::1]:8080") == .allow)
        #expect(policy.evaluate(host: "rebound.attacker.example").error?.code == .hostNotAllowed)
    }

    @Test("Origin: the gateway's own, listed ones, or all with *")
    func origins() throws {
        let own = OriginPolicy()
        #expect(own.evaluate(origin: nil, host: "127.0.0.1:8080") == .allow)
        #expect(own.evaluate(origin: "http://127.0.0.1:8080", host: "127.0.0.1:8080") == .allow)
        #expect(own.evaluate(origin: "https://storm.example.com", host: "storm.example.com") == .allow)
        #expect(own.evaluate(origin: "http://storm.example.com:80", host: "storm.example.com") == .allow)
        #expect(own.evaluate(origin: "http://LOCALHOST:8080", host: "localhost:8080") == .allow)
        for origin in ["https://evil.example", "null", "http://127.0.0.1:8081", "http://127.0.0.1", "file://", "", "http://127.0.0.1:8080/path"] {
            let decision = own.evaluate(origin: origin, host: "127.0.0.1:8080")
            #expect(decision.error?.code == .originNotAllowed, "\(origin)")
            #expect(decision.error?.message.contains("--allowed-origins") == true)
        }
        #expect(own.evaluate(origin: "http://127.0.0.1:8080", host: nil).error?.code == .originNotAllowed)

        let listed = try OriginPolicy.parse("https://app.example.com, http://localhost:3000/")
        #expect(listed.allowed == .list(["https://app.example.com", "http://localhost:3000"]))
        #expect(listed.evaluate(origin: "https://app.example.com", host: "127.0.0.1:8080") == .allow)
        #expect(listed.evaluate(origin: "https://app.example.com:443", host: "127.0.0.1:8080") == .allow)
        #expect(listed.evaluate(origin: "http://localhost:3000", host: "127.0.0.1:8080") == .allow)
        #expect(listed.evaluate(origin: "http://app.example.com", host: "127.0.0.1:8080").error?.code == .originNotAllowed)
        #expect(listed.evaluate(origin: "http://127.0.0.1:8080", host: "127.0.0.1:8080") == .allow)

        let all = try OriginPolicy.parse("*")
        #expect(all.evaluate(origin: "https://evil.example", host: "127.0.0.1") == .allow)
        #expect(all.evaluate(origin: "null", host: "127.0.0.1") == .allow)
        for bad in ["*,https://a.example", "app.example.com", "ftp://a.example", "https://a.example/path"] {
            #expect(throws: StormError.self, "\(bad)") { try OriginPolicy.parse(bad) }
        }
    }

    @Test("RequestPolicy: Host before Origin; one of each at most")
    func requestPolicy() {
        let policy = RequestPolicy()
        #expect(policy.evaluate(head([("Host", "127.0.0.1:8080"), ("Origin", "http://127.0.0.1:8080")], uri: "/")) == .allow)
        // A rebinding page's origin matches its Host: the Host refusal is what stops it.
        #expect(policy.evaluate(head([("Host", "attacker.example:8080"), ("Origin", "http://attacker.example:8080")], method: .POST, uri: "/api/v1/admin/users")).error?.code == .hostNotAllowed)
        #expect(policy.evaluate(head([("Host", "127.0.0.1"), ("Host", "attacker.example")], uri: "/")).error?.code == .badRequest)
        #expect(policy.evaluate(head([("Host", "127.0.0.1"), ("Origin", "http://127.0.0.1"), ("Origin", "https://evil.example")], uri: "/")).error?.code == .originNotAllowed)
    }

    @Test("JSON API bodies need Content-Type: application/json; /publish takes anything")
    func contentType() {
        func check(_ path: String, _ headers: [(String, String)]) -> StormError.Code? {
            RequestPolicy.checkJSONBody(path: path, head: head(headers, method: .POST, uri: path)).error?.code
        }
        #expect(check("/api/v1/admin/users", [("Content-Length", "2"), ("Content-Type", "application/json")]) == nil)
        #expect(check("/api/v1/admin/users", [("Content-Length", "2"), ("Content-Type", "Application/JSON; charset=utf-8")]) == nil)
        #expect(check("/api/v1/admin/users", [("Content-Length", "2"), ("Content-Type", "text/plain")]) == .unsupportedMediaType)
        #expect(check("/api/v1/admin/users", [("Content-Length", "2")]) == .unsupportedMediaType)
        #expect(check("/api/v1/admin/users", [("Transfer-Encoding", "chunked"), ("Content-Type", "application/x-www-form-urlencoded")]) == .unsupportedMediaType)
        #expect(check("/api/v1/users/bob/disconnect", [("Content-Length", "2"), ("Content-Type", "multipart/form-data; boundary=x")]) == .unsupportedMediaType)
        #expect(check("/api/v1/admin/users", [("Content-Length", "2"), ("Content-Type", "application/json"), ("Content-Type", "text/plain")]) == .unsupportedMediaType)
        // No body: nothing to interpret (a disconnect request from a tool).
        #expect(check("/api/v1/users/bob/disconnect", [("Content-Length", "0")]) == nil)
        #expect(check("/api/v1/users/bob/disconnect", []) == nil)
        #expect(check("/publish", [("Content-Length", "2"), ("Content-Type", "text/plain")]) == nil)
    }

    @Test("WebSocket handshake: RFC 6455 section 4.2.1, step by step")
    func handshake() {
        #expect(WebSocketHandshakeCheck.evaluate(head(Self.upgrade)) == .valid)
        #expect(WebSocketHandshakeCheck.evaluate(head([("Host", "127.0.0.1")])) == .notAnUpgrade)
        #expect(WebSocketHandshakeCheck.evaluate(head(Self.upgrade.map { $0.0 == "Upgrade" ? ("Upgrade", "WebSocket") : $0 })) == .valid)

        func refusal(_ change: (inout [(String, String)]) -> Void = { _ in }, method: HTTPMethod = .GET, version: HTTPVersion = .http1_1) -> (StormError, [(String, String)])? {
            var headers = Self.upgrade
            change(&headers)
            guard case .refused(let error, let extra) = WebSocketHandshakeCheck.evaluate(head(headers, method: method, version: version)) else { return nil }
            return (error, extra)
        }
        func replacing(_ name: String, _ value: String?) -> (inout [(String, String)]) -> Void {
            { headers in
                headers.removeAll { $0.0 == name }
                if let value { headers.append((name, value)) }
            }
        }
        let post = refusal(method: .POST)
        #expect(post?.0.code == .badRequest)
        #expect(post?.0.message.contains("GET") == true)
        #expect(refusal(version: .http1_0)?.0.message.contains("HTTP/1.1") == true)
        #expect(refusal(version: HTTPVersion(major: 0, minor: 9))?.0.code == .badRequest)
        #expect(refusal(version: HTTPVersion(major: 2, minor: 0)) == nil)
        #expect(refusal(replacing("Connection", "keep-alive"))?.0.code == .badRequest)
        #expect(refusal(replacing("Connection", "keep-alive, Upgrade")) == nil)
        let badKeys = ["abc", "dGhlIHNhbXBsZSBub25jZQ", "dGhlIHNhbXBsZSBub25jZQ=", "dGhlIHNhbXBsZSBub25j", "dGhlIHNhbXBsZSBub25jZSE=", "!!!!!!!!!!!!!!!!!!!!!!==", String(repeating: "A", count: 10_000)]
        for key in badKeys {
            let refused = refusal(replacing("Sec-WebSocket-Key", key))
            #expect(refused?.0.code == .badRequest, "\(key.prefix(30))")
            #expect(refused?.0.message.contains("16") == true)
        }
        #expect(refusal(replacing("Sec-WebSocket-Key", nil))?.0.message.contains("missing") == true)
        let twoKeys: (inout [(String, String)]) -> Void = { $0.append(("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")) }
        #expect(refusal(twoKeys)?.0.code == .badRequest)
        #expect(refusal(replacing("Sec-WebSocket-Version", nil))?.0.code == .badRequest)
        for version in ["8", "14", "13, 8", "abc"] {
            let refused = refusal(replacing("Sec-WebSocket-Version", version))
            #expect(refused?.0.code == .unsupportedWebSocketVersion, "\(version)")
            #expect(refused?.0.code.httpStatus == 426)
            let header = refused?.1.first
            #expect(header?.0 == "Sec-WebSocket-Version")
            #expect(header?.1 == "13")
        }
    }

    @Test("allowed-origins and allowed-hosts: flags, environment, file, --print-config")
    func configuration() throws {
        let defaults = try GatewayConfiguration(sources: ConfigurationSources())
        #expect(defaults.allowedOrigins == OriginPolicy())
        #expect(defaults.allowedHosts.isEmpty)
        #expect(defaults.requestPolicy.hosts.restricted)
        let configured = try GatewayConfiguration(
            sources: ConfigurationSources(
                flags: [.allowedOrigins: "https://app.example.com"], environment: ["STORM_ALLOWED_HOSTS": "Storm.Example.com, 10.0.0.5"]))
        #expect(configured.allowedOrigins.allowed == .list(["https://app.example.com"]))
        #expect(configured.allowedHosts == ["storm.example.com", "10.0.0.5"])
        let rendered = configured.rendered()
        #expect(rendered.contains("allowed-origins = https://app.example.com\n"))
        #expect(rendered.contains("allowed-hosts = storm.example.com,10.0.0.5\n"))
        let file = try GatewayConfiguration(sources: ConfigurationSources(fileValues: ["allowed-origins": .init(value: "*", origin: "storm.conf:1")]))
        #expect(file.allowedOrigins.allowed == .any)
        for (setting, bad) in [(Setting.allowedOrigins, "evil.example"), (.allowedOrigins, "*,http://a.example"), (.allowedHosts, "http://storm.example.com"), (.allowedHosts, "a b")] {
            #expect(throws: StormError.self, "\(setting) = \(bad)") { try GatewayConfiguration(sources: ConfigurationSources(flags: [setting: bad])) }
        }
        #expect(Setting.allowedOrigins.environmentVariable == "STORM_ALLOWED_ORIGINS")
        #expect(Setting.allowedHosts.environmentVariable == "STORM_ALLOWED_HOSTS")
    }
}

/// The same rules over real sockets: each bad input gets its status and JSON code, and the daemon still
/// delivers afterwards.
@Suite("HTTP security over sockets")
struct HTTPSecurityTests {
    private func expectGatewayStillWorks(_ gateway: Gateway) async throws {
        let ws = try await TestWebSocket.connect(port: gateway.port)
        #expect(try await ws.subscribe(["still.alive"]).type == "reply")
        #expect(try await gateway.publish("still.alive", "yes").status == 200)
        #expect(try await ws.next("message").string("channel") == "still.alive")
        await ws.close()
    }

    /// Sends an upgrade request to `/ws` with these header lines and returns the connection and the
    /// response head (its body, for a refusal, read too).
    private func upgrade(
        _ gateway: Gateway, method: String = "GET", version: String = "HTTP/1.1", host: String? = nil, key: String = "dGhlIHNhbXBsZSBub25jZQ==", wsVersion: String = "13",
        extra: [String] = []
    ) async throws -> (RawConnection, TestHTTPResponse) {
        let connection = try await RawConnection.connect(port: gateway.port)
        var lines = ["\(method) /ws \(version)", "Host: \(host ?? "127.0.0.1:\(gateway.port)")", "Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Key: \(key)", "Sec-WebSocket-Version: \(wsVersion)"]
        lines += extra
        try await connection.send(lines.joined(separator: "\r\n") + "\r\n\r\n")
        var head = try await connection.readResponseHead()
        if head.status != 101 {
            let length = Int(head.header("content-length") ?? "0") ?? 0
            head.body = try await connection.read("a \(length)-byte body") { $0.readBytes(length: length) }
        }
        return (connection, head)
    }

    private func errorCode(_ response: TestHTTPResponse) -> String? {
        guard let error = try? JSONScanner.objectMembers(response.body)["error"], let code = try? JSONScanner.objectMembers(error)["code"] else { return nil }
        return try? JSONScanner.string(code)
    }

    @Test("Origin: foreign and null refused with 403 on upgrade, SSE and publish; own, listed and * allowed")
    func origins() async throws {
        try await TestGateway.with { gateway in
            for origin in ["https://evil.example", "null"] {
                let (connection, refused) = try await upgrade(gateway, extra: ["Origin: \(origin)"])
                #expect(refused.status == 403, "\(origin)")
                #expect(errorCode(refused) == "origin_not_allowed")
                #expect(refused.text.contains("--allowed-origins"))
                await connection.close()
            }
            let sse = try await TestEventStream.connect(port: gateway.port, channels: ["news"], extraHeaders: ["Origin: https://evil.example"])
            #expect(sse.head.status == 403)
            await sse.close()
            let http = try await RawConnection.connect(port: gateway.port)
            let publish = try await http.request("POST", "/publish?subject=news", body: Array("x".utf8), headers: ["Origin: https://evil.example"])
            #expect(publish.status == 403)
            #expect(errorCode(publish) == "origin_not_allowed")
            // Refused before its body was read, so the connection closes.
            try await http.waitUntilClosed()

            let (own, accepted) = try await upgrade(gateway, extra: ["Origin: http://127.0.0.1:\(gateway.port)"])
            #expect(accepted.status == 101)
            let ws = TestWebSocket(connection: own)
            #expect(try await ws.subscribe(["same.origin"]).type == "reply")
            #expect(try await gateway.publish("same.origin", "hello").status == 200)
            #expect(try await ws.next("message").string("channel") == "same.origin")
            await ws.close()
            try await expectGatewayStillWorks(gateway)
        }
        try await TestGateway.with(configure: { $0.allowedOrigins = OriginPolicy(.list(["https://app.example.com"])) }) { gateway in
            let (listed, accepted) = try await upgrade(gateway, extra: ["Origin: https://app.example.com"])
            #expect(accepted.status == 101)
            await listed.close()
            let (other, refused) = try await upgrade(gateway, extra: ["Origin: https://evil.example"])
            #expect(refused.status == 403)
            await other.close()
            try await expectGatewayStillWorks(gateway)
        }
        try await TestGateway.with(configure: { $0.allowedOrigins = OriginPolicy(.any) }) { gateway in
            for origin in ["https://evil.example", "null"] {
                let (connection, accepted) = try await upgrade(gateway, extra: ["Origin: \(origin)"])
                #expect(accepted.status == 101, "\(origin)")
                await connection.close()
            }
            try await expectGatewayStillWorks(gateway)
        }
    }

    @Test("Host: a foreign name on a loopback listen is refused with 421 and creates nothing")
    func hosts() async throws {
        try await TestGateway.with { gateway in
            // The zero-config gateway: no keys, so the admin API is open to loopback clients.
            let body = Array(#"{"id":"mallory"}"#.utf8)
            let connection = try await RawConnection.connect(port: gateway.port)
            try await connection.send(
                Array("POST /api/v1/admin/users HTTP/1.1\r\nHost: attacker.example\r\nOrigin: http://attacker.example\r\nContent-Type: application/json\r\nContent-Length: \(body.count)\r\n\r\n".utf8) + body)
            let refused = try await connection.readResponse()
            #expect(refused.status == 421)
            #expect(errorCode(refused) == "host_not_allowed")
            #expect(refused.text.contains("--allowed-hosts"))
            await connection.close()
            let (socket, upgradeRefused) = try await upgrade(gateway, host: "attacker.example:\(gateway.port)")
            #expect(upgradeRefused.status == 421)
            await socket.close()

            let check = try await RawConnection.connect(port: gateway.port)
            let users = try await check.request("GET", "/api/v1/admin/users")
            #expect(users.status == 200)
            #expect(!users.text.contains("mallory"))
            await check.close()

            let (local, accepted) = try await upgrade(gateway, host: "localhost:\(gateway.port)", extra: ["Origin: http://localhost:\(gateway.port)"])
            #expect(accepted.status == 101)
            let ws = TestWebSocket(connection: local)
            #expect(try await ws.subscribe(["via.localhost"]).type == "reply")
            let publisher = try await RawConnection.connect(port: gateway.port)
            try await publisher.send("POST /publish?subject=via.localhost HTTP/1.1\r\nHost: localhost:\(gateway.port)\r\nContent-Length: 2\r\n\r\nhi")
            #expect(try await publisher.readResponse().status == 200)
            #expect(try await ws.next("message").string("channel") == "via.localhost")
            await publisher.close()
            await ws.close()
            try await expectGatewayStillWorks(gateway)
        }
        try await TestGateway.with(configure: { $0.allowedHosts = ["storm.test"] }) { gateway in
            let (connection, accepted) = try await upgrade(gateway, host: "storm.test:\(gateway.port)", extra: ["Origin: http://storm.test:\(gateway.port)"])
            #expect(accepted.status == 101)
            await connection.close()
        }
    }

    @Test("JSON API: a text/plain body is refused with 415; application/json passes; /publish takes any type")
    func contentType() async throws {
        try await TestGateway.with { gateway in
            let connection = try await RawConnection.connect(port: gateway.port)
            let refused = try await connection.request("POST", "/api/v1/admin/users", body: Array(#"{"id":"eve"}"#.utf8), headers: ["Content-Type: text/plain"])
            #expect(refused.status == 415)
            #expect(errorCode(refused) == "unsupported_media_type")
            await connection.close()
            let json = try await RawConnection.connect(port: gateway.port)
            let created = try await json.request("POST", "/api/v1/admin/users", body: Array(#"{"id":"eve"}"#.utf8), headers: ["Content-Type: application/json; charset=utf-8"])
            #expect(created.status == 201)
            let users = try await json.request("GET", "/api/v1/admin/users")
            #expect(users.text.contains("\"eve\""))
            let published = try await json.request("POST", "/publish?subject=plain", body: Array("text".utf8), headers: ["Content-Type: text/plain"])
            #expect(published.status == 200)
            await json.close()
            try await expectGatewayStillWorks(gateway)
        }
    }

    @Test("bodies over --max-message-size: 413 before the body is sent (Content-Length) or as soon as it passes (chunked)")
    func oversizedBodies() async throws {
        try await TestGateway.with(configure: { $0.limits.maxMessageSize = 1024 }) { gateway in
            let announced = try await RawConnection.connect(port: gateway.port)
            try await announced.send("POST /publish?subject=big HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000000000\r\n\r\n")
            // Not a byte of body has been sent: the answer comes from the head alone.
            let refused = try await announced.readResponse()
            #expect(refused.status == 413)
            #expect(errorCode(refused) == "message_too_large")
            #expect(refused.header("connection")?.lowercased() == "close")
            try await announced.waitUntilClosed()

            let chunked = try await RawConnection.connect(port: gateway.port)
            try await chunked.send("POST /publish?subject=big HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n")
            // 600 bytes: under the limit, no answer yet; the second 600 pass it.
            try await chunked.send("258\r\n" + String(repeating: "a", count: 600) + "\r\n")
            try await chunked.send("258\r\n" + String(repeating: "b", count: 600) + "\r\n")
            let chunkedRefused = try await chunked.readResponse()
            #expect(chunkedRefused.status == 413)
            #expect(errorCode(chunkedRefused) == "message_too_large")
            try await chunked.waitUntilClosed()

            let small = try await RawConnection.connect(port: gateway.port)
            try await small.send("POST /publish?subject=small HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n258\r\n" + String(repeating: "a", count: 600) + "\r\n0\r\n\r\n")
            #expect(try await small.readResponse().status == 200)
            await small.close()
            try await expectGatewayStillWorks(gateway)
        }
    }

    @Test("WebSocket handshake: bad key, POST, HTTP/1.0 get 400; version 8 gets 426; HTTP/0.9 at most one answer")
    func handshake() async throws {
        try await TestGateway.with { gateway in
            for (name, method, version, key) in [
                ("bad key", "GET", "HTTP/1.1", "not-a-key"), ("15-byte key", "GET", "HTTP/1.1", "AAAAAAAAAAAAAAAAAAAA"),
                ("POST", "POST", "HTTP/1.1", "dGhlIHNhbXBsZSBub25jZQ=="), ("HTTP/1.0", "GET", "HTTP/1.0", "dGhlIHNhbXBsZSBub25jZQ=="),
            ] {
                let (connection, refused) = try await upgrade(gateway, method: method, version: version, key: key)
                #expect(refused.status == 400, "\(name): \(refused.status)")
                #expect(errorCode(refused) == "bad_request", "\(name)")
                #expect(refused.text.contains("RFC 6455"), "\(name)")
                await connection.close()
            }
            let (old, refused) = try await upgrade(gateway, wsVersion: "8")
            #expect(refused.status == 426)
            #expect(refused.header("sec-websocket-version") == "13")
            #expect(errorCode(refused) == "unsupported_websocket_version")
            await old.close()

            let ancient = try await RawConnection.connect(port: gateway.port)
            try await ancient.send("GET /ws\r\n\r\n")
            let answered = try await ancient.readUntilClosed()
            let answers = String(decoding: answered, as: UTF8.self).components(separatedBy: "HTTP/1.").count - 1
            #expect(answers <= 1, "HTTP/0.9 request answered \(answers) times: \(String(decoding: answered, as: UTF8.self))")
            try await expectGatewayStillWorks(gateway)
        }
    }
}
