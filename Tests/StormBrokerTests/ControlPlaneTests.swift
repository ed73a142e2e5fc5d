import Foundation
import Logging
import NIOCore
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

/// Reserved `_` channels and the control plane: the disconnect attack of issue #14 (a non-admin token
/// publishing `{"disconnect":…}` on `_storm.gateway.<id>`) must fail on every path and in every
/// configuration, while the admin disconnect keeps working across gateways.
@Suite("Reserved channels and the control plane")
struct ControlPlaneTests {
    static let secret = String(repeating: "c", count: 40)

    /// The configurations the attack was tried in: no auth, auth with a broad `*` token, anonymous
    /// publishing allowed.
    enum Setup: String, CaseIterable, Sendable {
        case noAuth = "no auth"
        case wildcardToken = "a * token"
        case anonymous = "anonymous publishing"
    }

    private static func configure(_ setup: Setup, _ configuration: inout GatewayConfiguration) {
        guard setup != .noAuth else { return }
        var environment = ["STORM_JWT_SECRET": secret]
        if setup == .anonymous { environment["STORM_ALLOW_ANONYMOUS"] = "on" }
        configuration.auth = (try? AuthConfiguration(sources: ConfigurationSources(environment: environment), listen: configuration.listen)) ?? AuthConfiguration()
    }

    /// The `Authorization` header lines for `setup`: a non-admin token allowed everything on `*`.
    private static func headers(_ setup: Setup) async throws -> [String] {
        guard setup == .wildcardToken else { return [] }
        let ring = try await TokenKeyring.load([TokenKeySource.fromSecret(Array(secret.utf8), kid: nil, origin: "test")], signing: true)
        let now = Date().timeIntervalSince1970
        let token = try ring.sign(TokenClaims(subject: "mallory", expires: now + 600, issuedAt: now, storm: .init(subscribe: ["*"], publish: ["*"])), kid: nil)
        return ["Authorization: Bearer \(token)"]
    }

    private static func expectInvalidChannel(_ response: TestHTTPResponse, _ what: String) {
        #expect(response.status == 400, "\(what): \(response.status) \(response.text)")
        #expect(response.text.contains("\"invalid_channel\""), "\(what): \(response.text)")
        #expect(response.text.contains("reserved"), "\(what): \(response.text)")
    }

    @Test("every client path refuses channels that start with '_', and the disconnect attack fails", arguments: Setup.allCases)
    func attackFails(setup: Setup) async throws {
        let broker = MemoryBroker()
        try await TestGateway.with(broker: broker, configure: { Self.configure(setup, &$0) }) { attacker in
            try await TestGateway.with(broker: broker, configure: { Self.configure(setup, &$0) }) { victimGateway in
                let headers = try await Self.headers(setup)
                let auth = setup == .wildcardToken ? "?token=\(headers[0].dropFirst("Authorization: Bearer ".count))" : ""
                // The victim: a subscriber on the other gateway, entered in presence by its subscribe.
                let victim = try await TestWebSocket.connect(port: victimGateway.port, path: "/ws\(auth)")
                #expect(try await victim.subscribe(["room.a"]).type == "reply")
                let target = "_storm.gateway.\(victimGateway.ids.instanceID)"
                let attack = #"{"disconnect":{"client":"\#(victimGateway.ids.instanceID)-1"}}"#

                let connection = try await RawConnection.connect(port: attacker.port)
                Self.expectInvalidChannel(
                    try await connection.request("POST", "/publish?subject=\(target)", body: Array(attack.utf8), headers: headers), "HTTP publish")
                Self.expectInvalidChannel(
                    try await connection.request("GET", "/api/v1/channels/\(target)/history", headers: headers), "history")
                Self.expectInvalidChannel(
                    try await connection.request("GET", "/api/v1/channels/\(target)/presence", headers: headers), "presence")
                let sse = try await RawConnection.connect(port: attacker.port)
                Self.expectInvalidChannel(try await sse.request("GET", "/events?subject=\(target)", headers: headers), "SSE")
                await sse.close()

                let socket = try await TestWebSocket.connect(port: attacker.port, path: "/ws\(auth)")
                try await socket.send(#"{"id":1,"op":"publish","channel":"\#(target)","data":\#(attack)}"#)
                let published = try await socket.next("error")
                #expect(published.text.contains("invalid_channel") && published.text.contains("reserved"), "WebSocket publish: \(published.text)")
                try await socket.send(#"{"id":2,"op":"subscribe","channels":["\#(target)"]}"#)
                let subscribed = try await socket.next("error")
                #expect(subscribed.text.contains("invalid_channel"), "WebSocket subscribe: \(subscribed.text)")

                // The victim is still connected and still receives: the attack reached nobody.
                let check = try await connection.request("POST", "/publish?subject=room.a", body: Array(#"{"still":"here"}"#.utf8), headers: headers)
                #expect(check.status == 200, "\(check.text)")
                #expect(try await victim.next("message").text.contains(#""still":"here""#))
                await socket.close()
                await victim.close()
                await connection.close()
            }
        }
    }

    @Test(
        "the admin disconnect crosses gateways through the control plane, and nothing is stored for it (NATS JetStream)",
        .enabled(if: NATSTestEnvironment.shouldRun, "STORM_TEST_NATS_URL is not set: run ./scripts/test to start nats-server"))
    func adminDisconnectOverNATS() async throws {
        guard let url = TestEnvironment.requireNATS() else { return }
        let prefix = "ctl\(UInt32.random(in: 0...UInt32.max))"
        func broker(_ name: String) -> NATSBroker {
            var configuration = NATSBrokerConfiguration()
            configuration.urls = [url]
            configuration.connectionName = name
            configuration.subjectPrefix = prefix
            var logger = Logger(label: name)
            logger.logLevel = .warning
            return NATSBroker(configuration: configuration, logger: logger)
        }
        try await TestGateway.with(broker: broker("control-a")) { a in
            try await TestGateway.with(broker: broker("control-b")) { b in
                let victim = try await TestWebSocket.connect(port: b.port)
                #expect(try await victim.subscribe(["room.b"]).type == "reply")
                let stored = try await b.publish("room.b", "1")
                #expect(stored.status == 200)
                _ = try await victim.next("message")
                let channel = try ChannelName(validating: "room.b")
                let before = try await b.context.broker.history(of: channel, after: 0, limit: 1).brokerLatestOffset

                let connection = try await RawConnection.connect(port: a.port)
                let answer = try await connection.request("POST", "/api/v1/clients/\(b.ids.instanceID)-1/disconnect")
                #expect(answer.status == 200, "\(answer.text)")
                var closed = false
                for _ in 0..<20 where !closed {
                    guard let frame = try? await victim.readFrame(seconds: 10) else {
                        closed = true  // the connection ended
                        break
                    }
                    closed = frame.opcode == 0x8
                }
                #expect(closed, "the victim's WebSocket was not closed by the admin disconnect")
                let after = try await b.context.broker.history(of: channel, after: 0, limit: 1).brokerLatestOffset
                #expect(after == before, "the control request was stored in the stream (offset \(before) -> \(after))")
                await connection.close()
                await victim.close()
            }
        }
    }
}
