import Foundation
import Logging
import StormCore
import StormTestSupport
import Testing

@testable import StormBroker
@testable import StormConfiguration
@testable import StormGateway
@testable import StormNATS

/// Issue #18 part 2: exclude_self, since "latest", server-side subscriptions, broadcast and batch
/// publish, end to end over real sockets.
private enum Features {
    static func data(_ frame: TestFrame) -> String { String(decoding: frame.json["data"] ?? [], as: UTF8.self) }

    static func http(_ gateway: Gateway, _ method: String, _ target: String, body: String = "", headers: [String]) async throws -> TestHTTPResponse {
        let connection = try await RawConnection.connect(port: gateway.port)
        do {
            let response = try await connection.request(method, target, body: Array(body.utf8), headers: headers)
            await connection.close()
            return response
        } catch {
            await connection.close()
            throw error
        }
    }

    static let json = ["Content-Type: application/json"]
    static let ndjson = ["Content-Type: application/x-ndjson"]
}

@Suite("Channel features: exclude_self and since latest")
struct PublisherFeaturesTests {
    @Test("exclude_self is not delivered back to its publisher; other connections get it")
    func excludeSelf() async throws {
        try await TestGateway.with { gateway in
            let publisher = try await TestWebSocket.connect(port: gateway.port)
            let other = try await TestWebSocket.connect(port: gateway.port)
            #expect(try await publisher.subscribe(["chat.ex"]).type == "reply")
            #expect(try await other.subscribe(["chat.ex"]).type == "reply")
            try await publisher.send(#"{"id":2,"op":"publish","channel":"chat.ex","data":"first","exclude_self":true}"#)
            try await publisher.send(#"{"id":3,"op":"publish","channel":"chat.ex","data":"second"}"#)
            #expect(Features.data(try await other.next("message")) == "\"first\"")
            #expect(Features.data(try await other.next("message")) == "\"second\"")
            // The publisher's first message frame is the second message: the first skipped it.
            #expect(Features.data(try await publisher.next("message")) == "\"second\"")
            try await publisher.send(#"{"id":4,"op":"publish","channel":"chat.ex","data":1,"exclude_self":"yes"}"#)
            let refused = try await publisher.next("error")
            #expect(refused.text.contains("bad_request"))
            await publisher.close()
            await other.close()
        }
    }

    @Test("since latest: the newest stored message, then live ones, none older")
    func sinceLatest() async throws {
        try await TestGateway.with { gateway in
            try await gateway.publish("news.latest", #"{"n":1}"#)
            try await gateway.publish("news.latest", #"{"n":2}"#)
            let socket = try await TestWebSocket.connect(port: gateway.port)
            try await socket.send(#"{"id":1,"op":"subscribe","channels":["news.latest","news.empty"],"since":"latest"}"#)
            let reply = try await socket.next("reply")
            #expect(reply.text.contains("\"recovered\":true"))
            #expect(Features.data(try await socket.next("message")) == #"{"n":2}"#)
            try await gateway.publish("news.latest", #"{"n":3}"#)
            try await gateway.publish("news.empty", #"{"e":1}"#)
            #expect(Features.data(try await socket.next("message")) == #"{"n":3}"#)
            #expect(Features.data(try await socket.next("message")) == #"{"e":1}"#)
            await socket.close()
        }
    }
}

@Suite("Channel features: broadcast and batch publish")
struct BroadcastBatchTests {
    @Test("broadcast publishes once per channel and answers each offset")
    func broadcast() async throws {
        try await TestGateway.with { gateway in
            let socket = try await TestWebSocket.connect(port: gateway.port)
            #expect(try await socket.subscribe(["b.one", "b.two"]).type == "reply")
            let response = try await Features.http(
                gateway, "POST", "/api/v1/broadcast", body: #"{"channels":["b.one","b.two","b.one"],"data":{"x":1}}"#, headers: Features.json)
            #expect(response.status == 200)
            #expect(response.text.contains(#""channel":"b.one""#) && response.text.contains(#""channel":"b.two""#))
            #expect(response.text.components(separatedBy: "\"offset\":").count == 3)
            var seen: Set<String> = []
            for _ in 0..<2 { seen.insert(try await socket.next("message").string("channel") ?? "") }
            #expect(seen == ["b.one", "b.two"])
            let reserved = try await Features.http(gateway, "POST", "/api/v1/broadcast", body: #"{"channels":["b.one","_STORM.x"],"data":1}"#, headers: Features.json)
            #expect(reserved.status == 400 && reserved.text.contains("invalid_channel"))
            let many = (0...PublishRoutes.maxBroadcastChannels).map { "\"m.c\($0)\"" }.joined(separator: ",")
            let tooMany = try await Features.http(gateway, "POST", "/api/v1/broadcast", body: "{\"channels\":[\(many)],\"data\":1}", headers: Features.json)
            #expect(tooMany.status == 400)
            let noData = try await Features.http(gateway, "POST", "/api/v1/broadcast", body: #"{"channels":["b.one"]}"#, headers: Features.json)
            #expect(noData.status == 400)
            await socket.close()
        }
    }

    @Test("batch: one answer line per message, refused lines named, the rest stored in order")
    func batch() async throws {
        try await TestGateway.with(configure: { $0.limits.maxMessageSize = 64 }) { gateway in
            let socket = try await TestWebSocket.connect(port: gateway.port)
            #expect(try await socket.subscribe(["batch.a"]).type == "reply")
            let big = String(repeating: "x", count: 100)
            let body = [
                #"{"channel":"batch.a","data":{"n":1},"idempotency_key":"k-1"}"#,
                "",
                #"{"channel":"_reserved","data":1}"#,
                #"{"channel":"batch.a","data":"two"}"#,
                "{\"channel\":\"batch.a\",\"data\":\"\(big)\"}",
                "not json",
                #"{"channel":"batch.a","data":{"n":1},"idempotency_key":"k-1"}"#,
            ].joined(separator: "\n")
            let response = try await Features.http(gateway, "POST", "/api/v1/publish/batch", body: body, headers: Features.ndjson)
            #expect(response.status == 200)
            #expect(response.header("content-type") == "application/x-ndjson")
            let lines = response.text.split(separator: "\n").map(String.init)
            #expect(lines.count == 6)
            if lines.count == 6 {
                #expect(lines[0].hasPrefix(#"{"line":1,"id":"k-1""#) && lines[0].contains("\"offset\":"))
                #expect(lines[1].hasPrefix(#"{"line":3,"#) && lines[1].contains("invalid_channel"))
                #expect(lines[2].hasPrefix(#"{"line":4,"#) && lines[2].contains("\"offset\":"))
                #expect(lines[3].hasPrefix(#"{"line":5,"#) && lines[3].contains("message_too_large"))
                #expect(lines[4].hasPrefix(#"{"line":6,"#) && lines[4].contains("bad_request"))
                #expect(lines[5].hasPrefix(#"{"line":7,"#) && lines[5].contains("\"duplicate\":true"))
            }
            #expect(Features.data(try await socket.next("message")) == #"{"n":1}"#)
            #expect(Features.data(try await socket.next("message")) == "\"two\"")
            let wrongType = try await Features.http(gateway, "POST", "/api/v1/publish/batch", body: body, headers: ["Content-Type: text/plain"])
            #expect(wrongType.status == 415)
            let tooMany = String(repeating: "{\"channel\":\"batch.b\",\"data\":1}\n", count: PublishRoutes.maxBatchLines + 1)
            let refused = try await Features.http(gateway, "POST", "/api/v1/publish/batch", body: tooMany, headers: Features.ndjson)
            #expect(refused.status == 400 && refused.text.contains("at most \(PublishRoutes.maxBatchLines)"))
            await socket.close()
        }
    }

    @Test("a draining gateway refuses broadcast and batch")
    func draining() async throws {
        try await TestGateway.with { gateway in
            gateway.context.state.beginDraining()
            let broadcast = try await Features.http(gateway, "POST", "/api/v1/broadcast", body: #"{"channels":["d.a"],"data":1}"#, headers: Features.json)
            #expect(broadcast.status == 503 && broadcast.text.contains("shutting_down"))
            let batch = try await Features.http(gateway, "POST", "/api/v1/publish/batch", body: #"{"channel":"d.a","data":1}"#, headers: Features.ndjson)
            #expect(batch.status == 503)
        }
    }
}

@Suite("Server-side subscriptions: ServerSubscriptions")
struct ServerSubscriptionsPlanTests {
    @Test("claimed then hook channels, deduplicated, refused ones named, bounded")
    func plan() {
        let plan = ServerSubscriptions.plan(claimed: ["a.x", "bad..name", "_STORM.c", "secret.y", "a.x"], added: ["b.z", "c.w"], limit: 2) {
            channel throws(StormError) in
            if channel.rawValue.hasPrefix("secret") { throw StormError(.forbidden, "no") }
        }
        #expect(plan.allowed.map(\.rawValue) == ["a.x", "b.z"])
        #expect(plan.refused.map(\.name) == ["bad..name", "_STORM.c", "secret.y", "c.w"])
        #expect(plan.refused.map(\.error.code) == [.invalidChannel, .invalidChannel, .forbidden, .tooManyChannels])
    }
}

@Suite("Server-side subscriptions: storm.channels")
struct ServerSideSubscriptionTests {
    static let secret = String(repeating: "s", count: 40)

    static func token(_ user: String, subscribe: [String], publish: [String] = [], channels: [String]) async throws -> String {
        let ring = try await TokenKeyring.load([TokenKeySource.fromSecret(Array(secret.utf8), kid: nil, origin: "test")], signing: true)
        let now = Date().timeIntervalSince1970
        return try ring.sign(
            TokenClaims(subject: user, expires: now + 300, issuedAt: now, storm: .init(subscribe: subscribe, publish: publish, channels: channels)), kid: nil)
    }

    static func configure(_ configuration: inout GatewayConfiguration) {
        configuration.auth = (try? AuthConfiguration(sources: ConfigurationSources(environment: ["STORM_JWT_SECRET": secret]), listen: configuration.listen)) ?? AuthConfiguration()
    }

    @Test("a WebSocket is subscribed to its token's storm.channels at connect; refused ones are error frames")
    func webSocket() async throws {
        try await TestGateway.with(configure: Self.configure) { gateway in
            let token = try await Self.token("ann", subscribe: ["chat.*"], channels: ["chat.home", "secret.x"])
            let publisher = try await Self.token("pub", subscribe: [], publish: ["*"], channels: [])
            let socket = try await TestWebSocket.connect(port: gateway.port, path: "/ws?token=\(token)")
            let refused = try await socket.next("error")
            #expect(refused.text.contains("forbidden") && refused.text.contains("secret.x") && refused.text.contains("\"id\":null"))
            let subscribed = try await socket.next("subscribed")
            #expect(subscribed.text.contains(#""channels":["chat.home"]"#))
            let response = try await Features.http(gateway, "POST", "/publish?subject=chat.home", body: "hello", headers: ["Authorization: Bearer \(publisher)"])
            #expect(response.status == 200)
            #expect(Features.data(try await socket.next("message")) == "\"hello\"")
            await socket.close()
        }
    }

    @Test("an event stream with no subject streams its token's storm.channels")
    func eventStream() async throws {
        try await TestGateway.with(configure: Self.configure) { gateway in
            let token = try await Self.token("sam", subscribe: ["feed.*"], channels: ["feed.me", "other.no"])
            let publisher = try await Self.token("pub", subscribe: [], publish: ["*"], channels: [])
            let stream = try await TestEventStream.connect(port: gateway.port, channels: [], extraHeaders: ["Authorization: Bearer \(token)"])
            #expect(stream.head.status == 200)
            // The stream's subscription is made once its head is out: publish until one arrives.
            let delivered = try await eventually {
                _ = try await Features.http(gateway, "POST", "/publish?subject=feed.me", body: "tick", headers: ["Authorization: Bearer \(publisher)"])
                return (try? await stream.nextMessage(seconds: 1))?.data.contains("\"tick\"") == true
            }
            #expect(delivered)
            await stream.close()
        }
    }
}

/// The same features over real NATS JetStream, two gateways sharing one stream: the exclusion is local
/// to the publisher's gateway, and the newest message comes from the stream.
@Suite(
    "Channel features over NATS",
    .enabled(if: NATSTestEnvironment.shouldRun, "STORM_TEST_NATS_URL is not set: run ./scripts/test to start nats-server"))
struct ChannelFeaturesNATSTests {
    static func broker(_ url: String, id: UInt32, name: String) -> NATSBroker {
        let prefix = "storm.test.cf\(id)"
        var configuration = NATSBrokerConfiguration(urls: [url], subjectPrefix: prefix, connectionName: name)
        configuration.jetStream?.stream = JetStreamStreamConfiguration(name: "STORMCF\(id)", subjectPrefix: prefix)
        var logger = Logger(label: "storm.test.\(name)")
        logger.logLevel = .warning
        return NATSBroker(configuration: configuration, logger: logger)
    }

    @Test("exclude_self across two gateways, and since latest from the stream")
    func twoGateways() async throws {
        let url = try NATSTestEnvironment.requireURL()
        let id = UInt32.random(in: 0...UInt32.max)
        let first = try await TestGateway.start(broker: Self.broker(url, id: id, name: "cf-a"))
        let second: Gateway
        do {
            second = try await TestGateway.start(broker: Self.broker(url, id: id, name: "cf-b"))
        } catch {
            await first.stop()
            throw error
        }
        do {
            let publisher = try await TestWebSocket.connect(port: first.port)
            let neighbour = try await TestWebSocket.connect(port: first.port)
            let remote = try await TestWebSocket.connect(port: second.port)
            for socket in [publisher, neighbour, remote] { #expect(try await socket.subscribe(["nats.ex"]).type == "reply") }
            try await publisher.send(#"{"id":2,"op":"publish","channel":"nats.ex","data":"first","exclude_self":true}"#)
            #expect(try await publisher.next("reply").text.contains("\"offset\":"))
            try await publisher.send(#"{"id":3,"op":"publish","channel":"nats.ex","data":"second"}"#)
            for socket in [neighbour, remote] {
                #expect(Features.data(try await socket.next("message")) == "\"first\"")
                #expect(Features.data(try await socket.next("message")) == "\"second\"")
            }
            #expect(Features.data(try await publisher.next("message")) == "\"second\"")

            let late = try await TestWebSocket.connect(port: second.port)
            try await late.send(#"{"id":1,"op":"subscribe","channel":"nats.ex","since":"latest"}"#)
            #expect(try await late.next("reply").text.contains("\"recovered\":true"))
            #expect(Features.data(try await late.next("message")) == "\"second\"")
            try await first.publish("nats.ex", "third")
            #expect(Features.data(try await late.next("message")) == "\"third\"")
            for socket in [publisher, neighbour, remote, late] { await socket.close() }
        } catch {
            await first.stop()
            await second.stop()
            throw error
        }
        await first.stop()
        await second.stop()
    }
}
