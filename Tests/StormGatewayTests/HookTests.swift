import Foundation
import StormCore
import StormTestSupport
import Testing

@testable import StormConfiguration
@testable import StormGateway

@Suite("Hooks: HookDecision")
struct HookDecisionTests {
    static func decide(_ kind: HookConfiguration.Kind, _ result: HookCallResult, failOpen: Bool = false) -> (HookVerdict, HookOutcome) {
        let (verdict, outcome) = HookDecision.decide(kind, result, failOpen: failOpen, url: "http://app/hook", timeoutMilliseconds: 2000)
        return (verdict, outcome)
    }

    static func answer(_ json: String, status: Int = 200) -> HookCallResult { .answered(status: status, body: Array(json.utf8)) }

    @Test("allow, with the changes each hook may make")
    func allow() {
        #expect(Self.decide(.subscribe, Self.answer(#"{"decision":"allow"}"#)) == (.allow(HookChanges()), .allow))
        let connect = Self.decide(.connect, Self.answer(#"{"decision":"allow","user":"bob","channels":["a","b"]}"#))
        #expect(connect == (.allow(HookChanges(user: "bob", channels: ["a", "b"])), .allow))
        let publish = Self.decide(.publish, Self.answer(#"{"decision":"allow","data":{"x":1}}"#))
        #expect(publish == (.allow(HookChanges(data: ["data": Array(#"{"x":1}"#.utf8)])), .allow))
        // A subscribe hook cannot change anything: extra members are ignored.
        #expect(Self.decide(.subscribe, Self.answer(#"{"decision":"allow","user":"x"}"#)).0 == .allow(HookChanges()))
    }

    @Test("deny keeps a client-facing code and the reason; other codes become forbidden")
    func deny() {
        let (verdict, outcome) = Self.decide(.publish, Self.answer(#"{"decision":"deny","code":"rate_limited","reason":"slow down"}"#))
        #expect(outcome == .deny)
        #expect(verdict == .deny(StormError(.rateLimited, "refused by the publish hook: slow down")))
        let (internalCode, _) = Self.decide(.publish, Self.answer(#"{"decision":"deny","code":"internal"}"#))
        #expect(internalCode == .deny(StormError(.forbidden, "refused by the publish hook: no reason given")))
    }

    @Test("no usable answer refuses with hook_unavailable, or lets through when failing open")
    func failures() {
        let cases: [(HookCallResult, HookOutcome)] = [
            (Self.answer("{}", status: 500), .error), (Self.answer("not json"), .error), (Self.answer(#"{"decision":"maybe"}"#), .error),
            (.failed("connection refused"), .error), (.timedOut, .timeout), (.overloaded, .overloaded),
        ]
        for (result, expected) in cases {
            let (closed, outcome) = Self.decide(.subscribe, result)
            #expect(outcome == expected)
            guard case .deny(let error) = closed else {
                Issue.record("\(result) did not refuse")
                continue
            }
            #expect(error.code == .hookUnavailable && error.message.contains("--hook-fail-open subscribe"))
            #expect(Self.decide(.subscribe, result, failOpen: true) == (.allow(HookChanges()), expected))
        }
        let (badUser, _) = Self.decide(.connect, Self.answer(#"{"decision":"allow","user":7}"#))
        #expect(badUser != .allow(HookChanges()))
    }

    @Test("configuration: URLs, timeout, concurrency, fail-open list, secret")
    func configuration() throws {
        let sources = ConfigurationSources(
            flags: [.publishHook: "http://127.0.0.1:9/hooks/publish?x=1", .hookTimeout: "250ms", .hookConcurrency: "3", .hookFailOpen: "connect, subscribe"],
            environment: ["STORM_HOOK_SECRET": "s3cret"])
        let hooks = try HookConfiguration(sources: sources)
        #expect(hooks.targets[.publish]?.path == "/hooks/publish?x=1")
        #expect(hooks.targets[.publish]?.endpoint.port == 9)
        #expect(hooks.timeout == .milliseconds(250) && hooks.concurrency == 3)
        #expect(hooks.failOpen == [.connect, .subscribe])
        #expect(hooks.secret == "s3cret" && !hooks.rendered.contains("s3cret"))
        #expect(throws: StormError.self) { try HookConfiguration(sources: ConfigurationSources(flags: [.connectHook: "ftp://x"])) }
        #expect(throws: StormError.self) { try HookConfiguration(sources: ConfigurationSources(flags: [.hookFailOpen: "everything"])) }
    }
}

/// Hooks end to end: a real gateway calling a real HTTP server the test starts on port 0.
@Suite("Hooks: against a real hook server")
struct HookServerTests {
    static func hooks(_ server: TestHookServer, _ flags: [Setting: String]) throws -> HookConfiguration {
        try HookConfiguration(sources: ConfigurationSources(flags: flags, environment: ["STORM_HOOK_SECRET": "hook-secret-1"]))
    }

    /// Runs `body` with a hook server and a gateway using `flags` (URLs given as paths on the server).
    static func with(_ flags: [Setting: String], behaviours: [String: TestHookServer.Behaviour], _ body: (Gateway, TestHookServer) async throws -> Void) async throws {
        let server = try await TestHookServer.start(behaviours)
        do {
            var resolved = flags
            for setting in [Setting.connectHook, .subscribeHook, .publishHook] { if let path = flags[setting] { resolved[setting] = server.url(path) } }
            let hooks = try Self.hooks(server, resolved)
            try await TestGateway.with(configure: { $0.hooks = hooks }) { gateway in try await body(gateway, server) }
            await server.stop()
        } catch {
            await server.stop()
            throw error
        }
    }

    static func data(_ frame: TestFrame) -> String { String(decoding: frame.json["data"] ?? [], as: UTF8.self) }

    @Test("publish hook: deny is answered, allow with data replaces the message; the hook sees the request and the secret")
    func publishHook() async throws {
        try await Self.with([.publishHook: "/publish"], behaviours: ["/publish": .answer(status: 200, body: #"{"decision":"deny","reason":"no swearing"}"#)]) { gateway, server in
            let socket = try await TestWebSocket.connect(port: gateway.port)
            #expect(try await socket.subscribe(["hook.pub"]).type == "reply")
            try await socket.send(#"{"id":2,"op":"publish","channel":"hook.pub","data":{"text":"darn"}}"#)
            let refused = try await socket.next("error")
            #expect(refused.text.contains("forbidden") && refused.text.contains("refused by the publish hook: no swearing"))
            let request = try #require(server.received(on: "/publish").first)
            #expect(request.headers.first(name: "x-storm-hook-secret") == "hook-secret-1")
            #expect(request.headers.first(name: "x-storm-hook") == "publish")
            #expect(request.text.contains(#""hook":"publish""#) && request.text.contains(#""channel":"hook.pub""#) && request.text.contains(#""data":{"text":"darn"}"#))
            #expect(request.text.contains(#""transport":"websocket""#) && request.text.contains(#""user":null"#))

            server.set("/publish", .answer(status: 200, body: #"{"decision":"allow","data":{"text":"d***"}}"#))
            try await socket.send(#"{"id":3,"op":"publish","channel":"hook.pub","data":{"text":"darn"}}"#)
            #expect(Self.data(try await socket.next("message")) == #"{"text":"d***"}"#)
            let http = try await gateway.publish("hook.pub", "plain")
            #expect(http.status == 200)
            #expect(Self.data(try await socket.next("message")) == #"{"text":"d***"}"#)
            #expect(server.received(on: "/publish").last?.text.contains(#""data":"plain","encoding":"text""#) == true)
            #expect(try await gateway.metric(#"storm_hook_calls_total{hook="publish",outcome="deny"}"#) == 1)
            #expect(try await gateway.metric(#"storm_hook_calls_total{hook="publish",outcome="allow"}"#) == 2)
            await socket.close()
        }
    }

    @Test("a hung hook times out: fail-closed refuses with hook_unavailable, counted as timeout")
    func timeoutFailsClosed() async throws {
        try await Self.with([.publishHook: "/slow", .hookTimeout: "300ms"], behaviours: ["/slow": .hang]) { gateway, server in
            let response = try await gateway.publish("hook.slow", "x")
            #expect(response.status == 503 && response.text.contains("hook_unavailable") && response.text.contains("did not answer within 300 ms"))
            #expect(try await gateway.metric(#"storm_hook_calls_total{hook="publish",outcome="timeout"}"#) == 1)
        }
    }

    @Test("past the slots and the line a call fails at once (overloaded); a hung call ends at the timeout")
    func overloaded() async throws {
        let server = try await TestHookServer.start(["/hang": .hang])
        do {
            // Generous: the second publish must meet the first still hung, even on a busy machine.
            var hooks = try HookConfiguration(sources: ConfigurationSources(flags: [.publishHook: server.url("/hang"), .hookConcurrency: "1", .hookTimeout: "5s"]))
            hooks.maxWaiting = 0
            try await TestGateway.with(configure: { $0.hooks = hooks }) { gateway in
                let hung = try await RawConnection.connect(port: gateway.port)
                try await hung.send("POST /publish?subject=hook.busy HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1\r\n\r\nx")
                #expect(await eventually { server.received(on: "/hang").count == 1 })
                let refused = try await gateway.publish("hook.busy", "y")
                #expect(refused.status == 503 && refused.text.contains("too many calls in flight"))
                let timedOut = try await hung.readResponse()
                #expect(timedOut.status == 503 && timedOut.text.contains("did not answer within 5000 ms"))
                await hung.close()
                #expect(try await gateway.metric(#"storm_hook_calls_total{hook="publish",outcome="overloaded"}"#) == 1)
                #expect(try await gateway.metric(#"storm_hook_calls_total{hook="publish",outcome="timeout"}"#) == 1)
            }
            await server.stop()
        } catch {
            await server.stop()
            throw error
        }
    }

    @Test("the subscribe hook also decides event streams and a channel's history and presence")
    func subscribeHookOnHTTP() async throws {
        try await Self.with([.subscribeHook: "/subscribe"], behaviours: ["/subscribe": .answer(status: 200, body: #"{"decision":"deny","reason":"members only"}"#)]) { gateway, server in
            try await gateway.publish("hook.feed", "stored")
            let refusedStream = try await TestEventStream.connect(port: gateway.port, channels: ["hook.feed"])
            #expect(refusedStream.head.status == 403)
            await refusedStream.close()
            let connection = try await RawConnection.connect(port: gateway.port)
            let history = try await connection.request("GET", "/api/v1/channels/hook.feed/history")
            await connection.close()
            #expect(history.status == 403 && history.text.contains("members only"))
            #expect(server.received(on: "/subscribe").contains { $0.text.contains(#""transport":"sse""#) })

            server.set("/subscribe", .answer(status: 200, body: #"{"decision":"allow"}"#))
            let stream = try await TestEventStream.connect(port: gateway.port, channels: ["hook.feed"])
            #expect(stream.head.status == 200)
            await stream.close()
            let again = try await RawConnection.connect(port: gateway.port)
            let allowed = try await again.request("GET", "/api/v1/channels/hook.feed/history")
            await again.close()
            #expect(allowed.status == 200 && allowed.text.contains("stored"))
        }
    }

    @Test("fail-open lets requests through when the hook cannot be reached")
    func failOpen() async throws {
        // A port nothing listens on: the server is stopped before the gateway calls it.
        let server = try await TestHookServer.start()
        let url = server.url("/gone")
        await server.stop()
        let hooks = try HookConfiguration(sources: ConfigurationSources(flags: [.publishHook: url, .subscribeHook: url, .hookFailOpen: "publish"]))
        try await TestGateway.with(configure: { $0.hooks = hooks }) { gateway in
            #expect(try await gateway.publish("hook.open", "x").status == 200)
            #expect(try await gateway.metric(#"storm_hook_calls_total{hook="publish",outcome="error"}"#) == 1)
            // The subscribe hook fails closed.
            let socket = try await TestWebSocket.connect(port: gateway.port)
            let reply = try await socket.subscribe(["hook.open"])
            #expect(reply.type == "error" && reply.text.contains("hook_unavailable"))
            await socket.close()
        }
    }

    @Test("connect hook: a deny is answered before the upgrade; an allow sets the user and subscribes channels; the subscribe hook decides per channel")
    func connectAndSubscribe() async throws {
        try await Self.with(
            [.connectHook: "/connect", .subscribeHook: "/subscribe"],
            behaviours: [
                "/connect": .answer(status: 200, body: #"{"decision":"deny","code":"unauthorized","reason":"log in first"}"#),
                "/subscribe": .answer(status: 200, body: #"{"decision":"allow"}"#),
            ]
        ) { gateway, server in
            let connection = try await RawConnection.connect(port: gateway.port)
            try await connection.send(
                "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
            let refused = try await connection.readResponse()
            #expect(refused.status == 401 && refused.text.contains("refused by the connect hook: log in first"))
            await connection.close()

            server.set("/connect", .answer(status: 200, body: #"{"decision":"allow","user":"hooked-user","channels":["hook.home"]}"#))
            let socket = try await TestWebSocket.connect(port: gateway.port)
            let subscribed = try await socket.next("subscribed")
            #expect(subscribed.text.contains(#""channels":["hook.home"]"#))
            try await gateway.publish("hook.home", "welcome")
            #expect(Self.data(try await socket.next("message")) == "\"welcome\"")

            server.set("/subscribe", .answer(status: 200, body: #"{"decision":"deny","reason":"not a member"}"#))
            let denied = try await socket.subscribe(["hook.club"], id: 5)
            #expect(denied.type == "error" && denied.text.contains("not a member"))
            let asked = try #require(server.received(on: "/subscribe").last)
            #expect(asked.text.contains(#""user":"hooked-user""#) && asked.text.contains(#""channel":"hook.club""#))
            server.set("/subscribe", .answer(status: 200, body: #"{"decision":"allow"}"#))
            #expect(try await socket.subscribe(["hook.club"], id: 6).type == "reply")
            await socket.close()
        }
    }
}
