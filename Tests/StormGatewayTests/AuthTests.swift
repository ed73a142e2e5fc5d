import Crypto
import Foundation
import JWTKit
import Logging
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

/// Tokens, permissions, disabling users, expiry and the admin API, against real gateways on port 0.
private enum AuthFixture {
    static let secret = String(repeating: "k", count: 40)

    static func ring() async throws -> TokenKeyring {
        try await TokenKeyring.load([TokenKeySource.fromSecret(Array(secret.utf8), kid: nil, origin: "test")], signing: true)
    }

    /// A signed HS256 token; `ttl` seconds from now.
    static func token(
        _ user: String, subscribe: [String]? = nil, publish: [String]? = nil, admin: Bool = false, ttl: Double = 300, notBefore: Double? = nil
    ) async throws -> String {
        let now = Date().timeIntervalSince1970
        let claims = TokenClaims(
            subject: user, expires: now + ttl, notBefore: notBefore.map { now + $0 }, issuedAt: now,
            storm: .init(subscribe: subscribe, publish: publish, admin: admin ? true : nil))
        return try await ring().sign(claims, kid: nil)
    }

    static func configure(_ configuration: inout GatewayConfiguration, anonymous: Bool = false) {
        var environment = ["STORM_JWT_SECRET": secret]
        if anonymous { environment["STORM_ALLOW_ANONYMOUS"] = "on" }
        configuration.auth = (try? AuthConfiguration(sources: ConfigurationSources(environment: environment), listen: configuration.listen)) ?? AuthConfiguration()
    }

    static func bearer(_ token: String) -> [String] { ["Authorization: Bearer \(token)"] }

    static func http(_ gateway: Gateway, _ method: String, _ target: String, token: String?, body: String = "") async throws -> TestHTTPResponse {
        let connection = try await RawConnection.connect(port: gateway.port)
        return try await cleaningUp({ await connection.close() }) {
            // As stormctl does: a JSON body says so (the JSON API refuses any other body with 415).
            let type = body.isEmpty ? [] : ["Content-Type: application/json"]
            return try await connection.request(method, target, body: Array(body.utf8), headers: (token.map(bearer) ?? []) + type)
        }
    }

    /// The close code of the next close frame (other frames are skipped).
    static func closeCode(_ socket: TestWebSocket, seconds: Double) async throws -> UInt16? {
        let deadline = ContinuousClock.now + .seconds(seconds)
        while ContinuousClock.now < deadline {
            let frame = try await socket.readFrame(seconds: seconds)
            if frame.opcode == 0x8 { return frame.closeCode }
        }
        return nil
    }
}

@Suite("Auth: tokens")
struct TokenTests {
    @Test("HS256 tokens verify; every bad kind is refused with its reason")
    func badTokens() async throws {
        let ring = try await AuthFixture.ring()
        let good = try await AuthFixture.token("alice", subscribe: ["chat.*"])
        #expect(try ring.verify(good).subject == "alice")

        func reason(_ token: String) -> TokenRejectionReason? {
            do { _ = try ring.verify(token) } catch { return error.reason }
            return nil
        }
        let parts = good.split(separator: ".").map(String.init)
        func header(_ json: String) -> String { TokenKeyring.base64URLEncode(Array(json.utf8)) }
        #expect(reason(header(#"{"alg":"none","typ":"JWT"}"#) + "." + parts[1] + ".") == .algNone)
        #expect(reason(header(#"{"alg":"RS256","typ":"JWT"}"#) + "." + parts[1] + "." + parts[2]) == .algMismatch)
        #expect(reason(header(#"{"alg":"HS256","kid":"nope"}"#) + "." + parts[1] + "." + parts[2]) == .unknownKID)
        #expect(reason(parts[0] + "." + parts[1] + "." + String(parts[2].reversed())) == .badSignature)
        #expect(reason("not.a-token") == .malformed)
        #expect(reason("abc") == .malformed)
        #expect(reason(try await AuthFixture.token("alice", ttl: -5)) == .expired)
        #expect(reason(try await AuthFixture.token("alice", notBefore: 60)) == .notYetValid)
        let noSub = try ring.sign(TokenClaims(subject: nil, expires: Date().timeIntervalSince1970 + 60), kid: nil)
        #expect(reason(noSub) == .missingClaim)
        let noExp = try ring.sign(TokenClaims(subject: "a", expires: nil), kid: nil)
        #expect(reason(noExp) == .missingClaim)
    }

    @Test("ES256 and EdDSA public keys from PEM, selected by kid (RS256: scripts/test-jwt-interop)")
    func asymmetricKeys() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("storm-auth-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let es = ES256PrivateKey()
        let ed = try EdDSA.PrivateKey()
        try es.pemRepresentation.write(to: directory.appendingPathComponent("es.pem"), atomically: true, encoding: .utf8)
        try es.publicKey.pemRepresentation.write(to: directory.appendingPathComponent("es.pub"), atomically: true, encoding: .utf8)
        try ed.publicKey.pemRepresentation.write(to: directory.appendingPathComponent("ed.pub"), atomically: true, encoding: .utf8)
        try ed.pemRepresentation.write(to: directory.appendingPathComponent("ed.pem"), atomically: true, encoding: .utf8)

        let verify = try await TokenKeyring.load([
            try TokenKeySource.load(spec: "e1=\(directory.path)/es.pub", secret: false, origin: "test"),
            try TokenKeySource.load(spec: "d1=\(directory.path)/ed.pub", secret: false, origin: "test"),
        ])
        #expect(verify.keys.map(\.algorithm) == [.es256, .edDSA])
        let claims = TokenClaims(subject: "carol", expires: Date().timeIntervalSince1970 + 60)
        let esSigner = try await TokenKeyring.load([try TokenKeySource.load(spec: "e1=\(directory.path)/es.pem", secret: false, origin: "test")], signing: true)
        let edSigner = try await TokenKeyring.load([try TokenKeySource.load(spec: "d1=\(directory.path)/ed.pem", secret: false, origin: "test")], signing: true)
        #expect(try verify.verify(try esSigner.sign(claims, kid: "e1")).subject == "carol")
        #expect(try verify.verify(try edSigner.sign(claims, kid: "d1")).subject == "carol")
        // The ES256 token presented under the EdDSA key's id: refused before any signature check.
        let wrong = try esSigner.sign(claims, kid: "e1").replacingOccurrences(of: TokenKeyring.base64URLEncode(Array(#"{"alg":"ES256","kid":"e1","typ":"JWT"}"#.utf8)), with: TokenKeyring.base64URLEncode(Array(#"{"alg":"ES256","kid":"d1","typ":"JWT"}"#.utf8)))
        #expect(throws: TokenRejection.self) { try verify.verify(wrong) }
    }

    @Test("An HS256 secret under 32 bytes is a configuration error, not a trap")
    func shortSecret() {
        #expect(throws: StormError.self) {
            _ = try AuthConfiguration(sources: ConfigurationSources(environment: ["STORM_JWT_SECRET": "short"]), listen: .init(host: "127.0.0.1", port: 0))
        }
    }

    @Test("A non-loopback listen without a key needs --insecure")
    func insecure() throws {
        #expect(throws: StormError.self) {
            _ = try GatewayConfiguration(sources: ConfigurationSources(flags: [.listen: "0.0.0.0:0"]))
        }
        _ = try GatewayConfiguration(sources: ConfigurationSources(flags: [.listen: "0.0.0.0:0", .insecure: "on"]))
        _ = try GatewayConfiguration(sources: ConfigurationSources(flags: [.listen: "0.0.0.0:0"], environment: ["STORM_JWT_SECRET": AuthFixture.secret]))
    }
}

@Suite("Auth: gateway")
struct AuthGatewayTests {
    @Test("No token, a bad token, or a token for another channel: 401/403 on HTTP, WebSocket upgrade and SSE")
    func refusals() async throws {
        try await TestGateway.with(configure: { AuthFixture.configure(&$0, anonymous: true) }) { gateway in
            // Anonymous is allowed here, but a presented token that fails is never downgraded.
            let anonymous = try await AuthFixture.http(gateway, "POST", "/publish?subject=open.a", token: nil, body: "1")
            #expect(anonymous.status == 200)
            let bad = try await AuthFixture.http(gateway, "POST", "/publish?subject=open.a", token: "x.y.z", body: "1")
            #expect(bad.status == 401)
            #expect(bad.text.contains("unauthorized"))
            // WebSocket upgrade with a bad token: 401 with a JSON body, no upgrade.
            let connection = try await RawConnection.connect(port: gateway.port)
            try await connection.send(
                "GET /ws?token=bad.bad.bad HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
            let refused = try await connection.readResponse()
            #expect(refused.status == 401)
            #expect(refused.text.contains("\"code\":\"unauthorized\""))
            await connection.close()
            #expect(try await gateway.metric("storm_auth_failures_total{reason=\"malformed\"}") ?? 0 >= 2)
        }
        try await TestGateway.with(configure: { AuthFixture.configure(&$0) }) { gateway in
            let missing = try await AuthFixture.http(gateway, "POST", "/publish?subject=open.a", token: nil, body: "1")
            #expect(missing.status == 401)
            let stream = try await TestEventStream.connect(port: gateway.port, channels: ["chat.a"])
            #expect(stream.head.status == 401)
            await stream.close()
            #expect(try await gateway.metric("storm_auth_failures_total{reason=\"missing\"}") == 2)
        }
    }

    @Test("Permission matrix: token patterns and channel rules over WebSocket subscribe/publish, SSE and HTTP publish")
    func matrix() async throws {
        try await TestGateway.with(configure: { AuthFixture.configure(&$0, anonymous: true) }) { gateway in
            let store = gateway.context.auth.store
            _ = try await store.createChannel(pattern: "chat.locked", options: ChannelPolicy(publish: ["alice"], subscribe: ["alice"]))
            _ = try await store.createChannel(pattern: "private.*", options: ChannelPolicy(public: false))
            try await gateway.context.auth.refresh()
            let alice = try await AuthFixture.token("alice", subscribe: ["chat.*", "private.*"], publish: ["chat.*"])
            let bob = try await AuthFixture.token("bob", subscribe: ["chat.*"], publish: [])
            let admin = try await AuthFixture.token("root", admin: true)
            // (who, action, channel, allowed)
            let cases: [(String?, String, String, Bool)] = [
                (alice, "pub", "chat.a", true), (alice, "sub", "chat.a", true), (alice, "pub", "news.a", false), (alice, "sub", "news.a", false),
                (alice, "pub", "chat.locked", true), (alice, "sub", "chat.locked", true), (alice, "sub", "private.x", true),
                (bob, "pub", "chat.a", false), (bob, "sub", "chat.a", true), (bob, "sub", "chat.locked", false), (bob, "sub", "private.x", false),
                (nil, "pub", "open.a", true), (nil, "sub", "open.a", true), (nil, "sub", "private.x", false),
                (admin, "pub", "chat.locked", true), (admin, "sub", "private.x", true),
            ]
            for (token, action, channel, allowed) in cases {
                let who = token.map { _ in "token" } ?? "anonymous"
                if action == "pub" {
                    let http = try await AuthFixture.http(gateway, "POST", "/publish?subject=\(channel)", token: token, body: "1")
                    #expect((http.status == 200) == allowed, "HTTP publish \(channel) by \(who): \(http.status) \(http.text)")
                    if !allowed { #expect(http.status == 403) }
                    let socket = try await TestWebSocket.connect(port: gateway.port, path: token.map { "/ws?token=\($0)" } ?? "/ws")
                    try await socket.send("{\"id\":1,\"op\":\"publish\",\"channel\":\"\(channel)\",\"data\":1}")
                    let frame = try await socket.readFrame()
                    #expect((frame.type == "reply") == allowed, "WS publish \(channel) by \(who): \(frame.text)")
                    await socket.close()
                } else {
                    let socket = try await TestWebSocket.connect(port: gateway.port, path: token.map { "/ws?token=\($0)" } ?? "/ws")
                    let frame = try await socket.subscribe([channel])
                    #expect((frame.type == "reply") == allowed, "WS subscribe \(channel) by \(who): \(frame.text)")
                    if !allowed { #expect(frame.text.contains("forbidden")) }
                    await socket.close()
                    let stream = try await TestEventStream.connect(port: gateway.port, channels: [channel], extraHeaders: token.map(AuthFixture.bearer) ?? [])
                    #expect((stream.head.status == 200) == allowed, "SSE \(channel) by \(who): \(stream.head.status)")
                    await stream.close()
                }
            }
            let refusal = try await AuthFixture.http(gateway, "POST", "/publish?subject=chat.locked", token: try await AuthFixture.token("carol", publish: ["chat.*"]), body: "1")
            #expect(refusal.text.contains("channel 'chat.locked' does not allow publishing for user 'carol'"))
        }
    }

    @Test("Admin API: refused without the admin capability; users and channels managed with it")
    func adminAPI() async throws {
        try await TestGateway.with(configure: { AuthFixture.configure(&$0) }) { gateway in
            let user = try await AuthFixture.token("alice", subscribe: ["*"], publish: ["*"])
            let admin = try await AuthFixture.token("root", admin: true)
            #expect(try await AuthFixture.http(gateway, "GET", "/api/v1/admin/users", token: user).status == 403)
            #expect(try await AuthFixture.http(gateway, "POST", "/api/v1/admin/users", token: user, body: #"{"id":"x"}"#).status == 403)
            #expect(try await AuthFixture.http(gateway, "POST", "/api/v1/admin/users/alice/disconnect", token: user).status == 403)
            #expect(try await AuthFixture.http(gateway, "GET", "/api/v1/admin/users", token: nil).status == 401)
            #expect(try await AuthFixture.http(gateway, "POST", "/api/v1/admin/users", token: admin, body: #"{"id":"alice","name":"Alice"}"#).status == 201)
            #expect(try await AuthFixture.http(gateway, "POST", "/api/v1/admin/users", token: admin, body: #"{"id":"alice"}"#).status == 409)
            #expect(try await AuthFixture.http(gateway, "GET", "/api/v1/admin/users/alice", token: admin).text.contains("\"name\":\"Alice\""))
            #expect(try await AuthFixture.http(gateway, "POST", "/api/v1/admin/channels", token: admin, body: #"{"pattern":"chat.*","options":{"public":false}}"#).status == 201)
            #expect(try await AuthFixture.http(gateway, "GET", "/api/v1/admin/channels/chat.*", token: admin).text.contains("\"public\":false"))
            #expect(try await AuthFixture.http(gateway, "DELETE", "/api/v1/admin/channels/chat.*", token: admin).status == 200)
            #expect(try await AuthFixture.http(gateway, "DELETE", "/api/v1/admin/users/alice", token: admin).status == 200)
            #expect(try await AuthFixture.http(gateway, "GET", "/api/v1/admin/users/alice", token: admin).status == 404)
        }
    }

    @Test("Disabling a user closes its open WebSocket (4001) and refuses its tokens")
    func disableCutsConnection() async throws {
        try await TestGateway.with(configure: { AuthFixture.configure(&$0) }) { gateway in
            let alice = try await AuthFixture.token("alice", subscribe: ["chat.*"], publish: ["chat.*"])
            let admin = try await AuthFixture.token("root", admin: true)
            #expect(try await AuthFixture.http(gateway, "POST", "/api/v1/admin/users", token: admin, body: #"{"id":"alice"}"#).status == 201)
            let socket = try await TestWebSocket.connect(port: gateway.port, path: "/ws?token=\(alice)")
            #expect(try await socket.subscribe(["chat.a"]).type == "reply")
            let started = ContinuousClock.now
            #expect(try await AuthFixture.http(gateway, "PATCH", "/api/v1/admin/users/alice", token: admin, body: #"{"disabled":true}"#).status == 200)
            #expect(try await AuthFixture.closeCode(socket, seconds: 30) == 4001)
            print("auth: a disabled user's socket was closed \(ContinuousClock.now - started) after the PATCH")
            await socket.close()
            let refused = try await AuthFixture.http(gateway, "POST", "/publish?subject=chat.a", token: alice, body: "1")
            #expect(refused.status == 401)
            #expect(refused.text.contains("disabled"))
            #expect(try await AuthFixture.http(gateway, "PATCH", "/api/v1/admin/users/alice", token: admin, body: #"{"disabled":false}"#).status == 200)
            #expect(try await AuthFixture.http(gateway, "POST", "/publish?subject=chat.a", token: alice, body: "1").status == 200)
        }
    }

    @Test("A WebSocket is closed with 4001 when its token expires; a refresh before that keeps it open")
    func expiryAndRefresh() async throws {
        try await TestGateway.with(configure: { AuthFixture.configure(&$0) }) { gateway in
            // Long enough for two upgrades and a refresh on a busy machine; the close is awaited, not timed.
            let short = try await AuthFixture.token("alice", subscribe: ["chat.*"], ttl: 8)
            let expiring = try await TestWebSocket.connect(port: gateway.port, path: "/ws?token=\(short)")
            let refreshed = try await TestWebSocket.connect(port: gateway.port, path: "/ws?token=\(short)")
            let longer = try await AuthFixture.token("alice", subscribe: ["chat.*"], ttl: 120)
            try await refreshed.send("{\"id\":7,\"op\":\"refresh\",\"token\":\"\(longer)\"}")
            #expect(try await refreshed.next("reply").text.contains("\"user\":\"alice\""))
            // Another user's token is refused and changes nothing.
            try await refreshed.send("{\"id\":8,\"op\":\"refresh\",\"token\":\"\(try await AuthFixture.token("bob", ttl: 120))\"}")
            #expect(try await refreshed.next("error").text.contains("another user"))
            #expect(try await AuthFixture.closeCode(expiring, seconds: 40) == 4001)
            try await refreshed.send(#"{"id":9,"op":"ping"}"#)
            #expect(try await refreshed.next("reply").text.contains("pong"))
            await expiring.close()
            await refreshed.close()
        }
    }
}

/// The admin API over the PostgreSQL store (the `users` and `channels` tables of migration 2).
/// Signed tokens whose claims no honest issuer writes: each must get a 401 with a reason, over a real
/// socket, and the gateway must go on delivering (issue #16: `exp` = 1e300 crashed stormd).
@Suite("Auth: absurd claims")
struct AbsurdClaimTests {
    /// An HS256 token over `payload` exactly as written (no encoder in between clamps the numbers).
    static func rawToken(_ payload: String) -> String {
        let header = TokenKeyring.base64URLEncode(Array(#"{"alg":"HS256","typ":"JWT"}"#.utf8))
        let body = TokenKeyring.base64URLEncode(Array(payload.utf8))
        let input = Array("\(header).\(body)".utf8)
        let mac = HMAC<SHA256>.authenticationCode(for: input, using: SymmetricKey(data: Array(AuthFixture.secret.utf8)))
        return "\(header).\(body).\(TokenKeyring.base64URLEncode(Array(mac)))"
    }

    static let grants = #""storm":{"sub":["*"],"pub":["*"]}"#

    @Test(
        "out-of-range time claims are refused with 401 and a reason, on HTTP publish, the upgrade and refresh",
        arguments: [
            #""exp":-1e300"#, #""exp":1e300"#, #""exp":9e18"#, #""exp":4102444800,"nbf":1e300"#, #""exp":4102444800,"iat":1e300"#,
            #""exp":4102444800,"nbf":-1e300"#, #""exp":4102444800,"iat":-5"#,
        ])
    func absurdTimes(claim: String) async throws {
        let token = Self.rawToken(#"{"sub":"alice",\#(claim),\#(Self.grants)}"#)
        try await TestGateway.with(configure: { AuthFixture.configure(&$0) }) { gateway in
            let refused = try await AuthFixture.http(gateway, "POST", "/publish?subject=chat.a", token: token, body: "1")
            #expect(refused.status == 401, "\(claim): \(refused.status) \(refused.text)")
            #expect(refused.text.contains("NumericDate") || refused.text.contains("expired"), "\(claim): \(refused.text)")
            let upgrade = try await RawConnection.connect(port: gateway.port)
            let head = try await upgrade.request(
                "GET", "/ws?token=\(token)",
                headers: ["Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13"])
            #expect(head.status == 401, "\(claim): upgrade answered \(head.status)")
            await upgrade.close()
            // A good connection refreshing with the absurd token gets an error and stays open.
            let good = try await AuthFixture.token("alice", subscribe: ["chat.*"], publish: ["chat.*"])
            let socket = try await TestWebSocket.connect(port: gateway.port, path: "/ws?token=\(good)")
            try await socket.send(#"{"id":3,"op":"refresh","token":"\#(token)"}"#)
            #expect(try await socket.next("error").text.contains("unauthorized"))
            #expect(try await socket.subscribe(["chat.a"], id: 4).type == "reply")
            let published = try await AuthFixture.http(gateway, "POST", "/publish?subject=chat.a", token: good, body: #"{"alive":true}"#)
            #expect(published.status == 200)
            #expect(try await socket.next("message").text.contains(#""alive":true"#))
            await socket.close()
        }
    }

    @Test("a fractional but sane exp (as jwt-kit writes it) is still accepted, and refresh answers whole seconds")
    func fractionalExp() async throws {
        let exp = Date().timeIntervalSince1970 + 600.25
        let token = Self.rawToken(#"{"sub":"alice","exp":\#(exp),\#(Self.grants)}"#)
        try await TestGateway.with(configure: { AuthFixture.configure(&$0) }) { gateway in
            let socket = try await TestWebSocket.connect(port: gateway.port, path: "/ws?token=\(token)")
            try await socket.send(#"{"id":1,"op":"refresh","token":"\#(token)"}"#)
            let reply = try await socket.next("reply")
            #expect(reply.text.contains("\"exp\":\(Int64(exp.rounded(.down)))"), "\(reply.text)")
            await socket.close()
        }
    }
}

@Suite("Auth: admin API on PostgreSQL (real server)", .enabled(if: AuthPostgres.shouldRun, "needs STORM_TEST_POSTGRES_URL: run ./scripts/test"))
struct AuthPostgresTests {
    @Test("Users and channel rules are created, listed, disabled and deleted in PostgreSQL; a disabled user is refused")
    func adminOnPostgres() async throws {
        guard let server = AuthPostgres.url else {
            Issue.record("STORM_TEST_POSTGRES_URL is not set: run ./scripts/test, which starts PostgreSQL")
            return
        }
        let url = try await AuthPostgres.freshDatabase(server)
        try await TestGateway.with(configure: {
            AuthFixture.configure(&$0)
            $0.store.postgresURL = url
        }) { gateway in
            let admin = try await AuthFixture.token("root", admin: true)
            #expect(try await AuthFixture.http(gateway, "POST", "/api/v1/admin/users", token: admin, body: #"{"id":"alice","name":"Alice"}"#).status == 201)
            #expect(try await AuthFixture.http(gateway, "POST", "/api/v1/admin/users", token: admin, body: #"{"id":"alice"}"#).status == 409)
            #expect(try await AuthFixture.http(gateway, "POST", "/api/v1/admin/channels", token: admin, body: #"{"pattern":"chat.>","options":{"publish":["alice"],"history_size":5}}"#).status == 201)
            let list = try await AuthFixture.http(gateway, "GET", "/api/v1/admin/channels", token: admin)
            #expect(list.text.contains("\"pattern\":\"chat.*\""))
            #expect(list.text.contains("\"history_size\":5"))
            let carol = try await AuthFixture.token("carol", publish: ["chat.*"])
            #expect(try await AuthFixture.http(gateway, "POST", "/publish?subject=chat.a", token: carol, body: "1").status == 403)
            let alice = try await AuthFixture.token("alice", publish: ["chat.*"])
            #expect(try await AuthFixture.http(gateway, "POST", "/publish?subject=chat.a", token: alice, body: "1").status == 200)
            #expect(try await AuthFixture.http(gateway, "PATCH", "/api/v1/admin/users/alice", token: admin, body: #"{"disabled":true}"#).text.contains("\"disabled\":true"))
            #expect(try await AuthFixture.http(gateway, "POST", "/publish?subject=chat.a", token: alice, body: "1").status == 401)
        }
        // The rows are really in PostgreSQL.
        let client = PostgresClient(conninfo: url, size: 1, logger: Logger(label: "auth-test"))
        let rows = try await client.withConnection { connection throws(StormError) in
            try connection.query("SELECT id, disabled FROM users ORDER BY id", doing: "read users")
        }
        #expect(rows.text(0, 0) == "alice")
        #expect(rows.text(0, 1) == "t")
        await client.shutdown()
    }
}

enum AuthPostgres {
    static var url: String? {
        ProcessInfo.processInfo.environment["STORM_TEST_POSTGRES_URL"].flatMap { $0.isEmpty ? nil : $0 }
    }

    static var shouldRun: Bool {
        let ci = ProcessInfo.processInfo.environment["CI"].map { !$0.isEmpty && $0 != "false" && $0 != "0" } ?? false
        return url != nil || ci
    }

    /// A new empty database on the test server, so this suite neither sees nor disturbs other rows.
    static func freshDatabase(_ server: String) async throws -> String {
        let name = "storm_auth\(UInt32.random(in: 0...UInt32.max))"
        let admin = PostgresClient(conninfo: server, size: 1, logger: Logger(label: "auth-test"))
        try await admin.withConnection { connection throws(StormError) in
            _ = try connection.execute("CREATE DATABASE \(name)", doing: "create a test database")
        }
        await admin.shutdown()
        guard let slash = server.lastIndex(of: "/") else { throw StormError(.configuration, "STORM_TEST_POSTGRES_URL has no /DATABASE") }
        return String(server[..<slash]) + "/" + name
    }
}

@Suite("Channel rules switch presence")
struct ChannelRulePresenceTests {
    @Test("a channel rule with presence on records subscribers even without --presence-channels; presence off hides them")
    func presenceFromRules() async throws {
        try await TestGateway.with { gateway in
            let store = gateway.context.auth.store
            _ = try await store.createChannel(pattern: "club.*", options: ChannelPolicy(presence: true))
            _ = try await store.createChannel(pattern: "quiet", options: ChannelPolicy(presence: false))
            try await gateway.context.auth.refresh()
            let ws = try await TestWebSocket.connect(port: gateway.port)
            #expect(try await ws.subscribe(["club.chess", "quiet"]).type == "reply")
            let connection = try await RawConnection.connect(port: gateway.port)
            var clients = ""
            for _ in 0..<100 {
                clients = try await connection.request("GET", "/api/v1/channels/club.chess/presence-stats").text
                if clients.contains("\"clients\":1") { break }
                try await Task.sleep(for: .milliseconds(20))
            }
            #expect(clients.contains("\"clients\":1"), "presence-stats said \(clients)")
            #expect(try await connection.request("GET", "/api/v1/channels/quiet/presence").status == 404)
            #expect(try await connection.request("GET", "/api/v1/channels/other/presence").status == 404)
            await connection.close()
            await ws.close()
        }
    }
}
