import Foundation
import Logging
import NIOCore
import StormBroker
import StormCore
import StormObservability

/// The gateway's backend hooks (docs/hooks.md): for each configured hook a `HookClient`, the outcome
/// counters (`storm_hook_calls_total{hook,outcome}`, made once with fixed labels), and the one way a
/// session asks: `ask(...)`, whose future completes on the session's loop with the changes to apply, or
/// fails with the error to answer (a deny, or `hook_unavailable` when the hook fails closed).
package final class GatewayHooks: Sendable {
    package let configuration: HookConfiguration
    private let clients: [HookConfiguration.Kind: HookClient]
    private let counters: [HookConfiguration.Kind: [HookOutcome: GatewayMetrics.AuthCounter]]
    private let logger: Logger

    package init(configuration: HookConfiguration, metrics: GatewayMetrics, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
        var clients: [HookConfiguration.Kind: HookClient] = [:]
        var counters: [HookConfiguration.Kind: [HookOutcome: GatewayMetrics.AuthCounter]] = [:]
        for (kind, target) in configuration.targets {
            clients[kind] = HookClient(kind: kind, target: target, configuration: configuration)
            var byOutcome: [HookOutcome: GatewayMetrics.AuthCounter] = [:]
            for outcome in HookOutcome.allCases { byOutcome[outcome] = metrics.hookCallCounter(hook: kind.rawValue, outcome: outcome.rawValue) }
            counters[kind] = byOutcome
        }
        self.clients = clients
        self.counters = counters
    }

    /// No hook at all (tests and the zero-config default).
    package static func disabled(metrics: GatewayMetrics, logger: Logger) -> GatewayHooks {
        GatewayHooks(configuration: HookConfiguration(), metrics: metrics, logger: logger)
    }

    package func isEnabled(_ kind: HookConfiguration.Kind) -> Bool { clients[kind] != nil }

    /// Asks the `kind` hook about `request`; a hook that is not configured allows with no changes at once.
    package func ask(_ kind: HookConfiguration.Kind, _ request: HookRequest, eventLoop: any EventLoop) -> EventLoopFuture<HookChanges> {
        guard let client = clients[kind] else { return eventLoop.makeSucceededFuture(HookChanges()) }
        let promise = eventLoop.makePromise(of: HookChanges.self)
        let failOpen = configuration.failOpen.contains(kind)
        let timeoutMilliseconds = configuration.timeout.nanoseconds / 1_000_000
        let counters = self.counters[kind]
        let logger = self.logger
        let body = request.encoded()
        Task {
            let result = await client.call(body, traceparent: request.traceparent)
            let (verdict, outcome) = HookDecision.decide(kind, result, failOpen: failOpen, url: client.target.url, timeoutMilliseconds: timeoutMilliseconds)
            counters?[outcome]?.increment()
            switch outcome {
            case .error, .timeout, .overloaded:
                logger.warning(
                    "backend hook failed", metadata: ["storm.hook": "\(kind.rawValue)", "storm.hook.outcome": "\(outcome.rawValue)", "storm.hook.fail_open": "\(failOpen)"])
            case .allow, .deny:
                break
            }
            switch verdict {
            case .allow(let changes): promise.succeed(changes)
            case .deny(let error): promise.fail(error)
            }
        }
        return promise.futureResult
    }

    package func shutdown() async {
        for client in clients.values { await client.shutdown() }
    }
}

/// The JSON a hook receives (docs/hooks.md), written with StormCore's JSON writer: the payload goes in
/// as the client sent it, byte for byte.
///
/// `{"hook":"publish","client":"gw-c7","transport":"websocket","user":"alice","claims":{…},
/// "channel":"chat.a","data":…,"encoding":"text","traceparent":"00-…"}`
package struct HookRequest: Sendable {
    package var kind: HookConfiguration.Kind
    package var client: String
    package var transport: GatewayMetrics.Transport
    package var principal: Principal
    package var channel: ChannelName?
    /// Publish: the payload and how it is carried.
    package var payload: [UInt8]?
    package var encoding: PayloadEncoding?
    /// W3C trace context of the request, forwarded as the `traceparent` header too.
    package var traceparent: String?

    package init(
        kind: HookConfiguration.Kind, client: String, transport: GatewayMetrics.Transport, principal: Principal, channel: ChannelName? = nil,
        payload: [UInt8]? = nil, encoding: PayloadEncoding? = nil, traceparent: String? = nil
    ) {
        self.kind = kind
        self.client = client
        self.transport = transport
        self.principal = principal
        self.channel = channel
        self.payload = payload
        self.encoding = encoding
        self.traceparent = traceparent
    }

    package func encoded() -> [UInt8] {
        var out = "{\"hook\":" + JSONWriter.quoted(kind.rawValue) + ",\"client\":" + JSONWriter.quoted(client)
        out += ",\"transport\":" + JSONWriter.quoted(transport.rawValue)
        if let user = principal.user {
            out += ",\"user\":" + JSONWriter.quoted(user)
            out += ",\"claims\":{\"sub\":" + JSONWriter.quoted(user)
            if let expires = principal.expires { out += ",\"exp\":\(TokenClaims.wholeSeconds(expires))" }
            out += ",\"storm\":{\"sub\":" + Self.list(principal.subscribe.description) + ",\"pub\":" + Self.list(principal.publish.description)
            out += ",\"admin\":\(principal.admin)"
            if !principal.channels.isEmpty { out += ",\"channels\":[" + principal.channels.map(JSONWriter.quoted).joined(separator: ",") + "]" }
            out += "}}"
        } else {
            out += ",\"user\":null,\"claims\":null"
        }
        if let channel { out += ",\"channel\":" + JSONWriter.quoted(channel.rawValue) }
        if let traceparent { out += ",\"traceparent\":" + JSONWriter.quoted(traceparent) }
        var bytes = Array(out.utf8)
        if let payload {
            bytes += Array(",\"data\":".utf8)
            switch encoding ?? PayloadEncoding.classify(payload) {
            case .json:
                bytes += payload
            case .text:
                JSONWriter.appendString(utf8: payload, to: &bytes)
                bytes += Array(",\"encoding\":\"text\"".utf8)
            case .base64:
                JSONWriter.appendString(utf8: Array(Data(payload).base64EncodedString().utf8), to: &bytes)
                bytes += Array(",\"encoding\":\"base64\"".utf8)
            }
        }
        bytes.append(UInt8(ascii: "}"))
        return bytes
    }

    private static func list(_ patterns: String) -> String {
        "[" + patterns.split(separator: ",").map { JSONWriter.quoted(String($0)) }.joined(separator: ",") + "]"
    }
}
