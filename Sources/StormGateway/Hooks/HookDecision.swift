import StormCore

/// How one hook call ended, as `storm_hook_calls_total{hook,outcome}` counts it.
package enum HookOutcome: String, CaseIterable, Sendable {
    /// The application answered `allow` (with or without changes).
    case allow
    /// The application answered `deny`.
    case deny
    /// No usable answer: connection refused or lost, a status other than 2xx, a body that is not a hook answer.
    case error
    /// No answer within `--hook-timeout` (waiting for a slot included).
    case timeout
    /// Every slot busy and the line full: the call was not made.
    case overloaded
}

/// What the transport brought back from one call.
package enum HookCallResult: Sendable, Equatable {
    case answered(status: Int, body: [UInt8])
    case failed(String)
    case timedOut
    case overloaded
}

/// What the application may change when it allows (docs/hooks.md).
package struct HookChanges: Sendable, Equatable {
    /// Connect: the user the connection acts as from now on.
    package var user: String?
    /// Connect: channels to subscribe the connection to (`ServerSubscriptions`).
    package var channels: [String] = []
    /// Publish: the replacement `data` (raw JSON) with its `encoding`, parsed as a publish's fields.
    package var data: [String: [UInt8]]?

    package init(user: String? = nil, channels: [String] = [], data: [String: [UInt8]]? = nil) {
        self.user = user
        self.channels = channels
        self.data = data
    }
}

/// The hook's decision for the request: let it through (with changes) or refuse it with this error.
package enum HookVerdict: Sendable, Equatable {
    case allow(HookChanges)
    case deny(StormError)
}

/// Turns a call's result into the verdict and the outcome counted, as plain values (no sockets, no
/// clock), unit-tested step by step.
///
/// An answer is `{"decision":"allow"}` (connect may add `"user"` and `"channels"`, publish `"data"` and
/// `"encoding"`) or `{"decision":"deny","code":"forbidden","reason":"…"}`. A deny's `code` is one of the
/// client-facing codes below (else `forbidden`). No usable answer (error, timeout, overloaded) refuses
/// with `hook_unavailable`, unless the hook fails open (`--hook-fail-open`), when the request goes
/// through unchanged.
package enum HookDecision {
    /// Codes a hook may deny with; anything else becomes `forbidden`.
    package static let denyCodes: Set<StormError.Code> = [.forbidden, .unauthorized, .badRequest, .rateLimited, .invalidChannel, .messageTooLarge]

    /// Longest `reason` kept from an answer.
    package static let maximumReason = 256

    package static func decide(
        _ kind: HookConfiguration.Kind, _ result: HookCallResult, failOpen: Bool, url: String, timeoutMilliseconds: Int64
    ) -> (verdict: HookVerdict, outcome: HookOutcome) {
        let failure: (HookOutcome, String)
        switch result {
        case .answered(let status, let body):
            guard (200..<300).contains(status) else {
                failure = (.error, "answered HTTP \(status)")
                break
            }
            switch parse(kind, body) {
            case .verdict(let verdict):
                if case .deny = verdict { return (verdict, .deny) }
                return (verdict, .allow)
            case .invalid(let why):
                failure = (.error, why)
            }
        case .failed(let why):
            failure = (.error, why)
        case .timedOut:
            failure = (.timeout, "did not answer within \(timeoutMilliseconds) ms (--hook-timeout)")
        case .overloaded:
            failure = (.overloaded, "has too many calls in flight (--hook-concurrency) and waiting")
        }
        if failOpen { return (.allow(HookChanges()), failure.0) }
        let message = "the \(kind.rawValue) hook (\(url.prefix(200))) \(failure.1): refused, as the hook fails closed (--hook-fail-open \(kind.rawValue) would let it through)"
        return (.deny(StormError(.hookUnavailable, message)), failure.0)
    }

    /// An answer body read: the application's verdict, or what is wrong with the body.
    package enum Parsed: Equatable, Sendable {
        case verdict(HookVerdict)
        case invalid(String)
    }

    /// Reads an answer body.
    package static func parse(_ kind: HookConfiguration.Kind, _ body: [UInt8]) -> Parsed {
        guard let members = try? JSONScanner.objectMembers(JSONScanner.compacted(body)) else {
            return .invalid("answered something that is not a JSON object (expected {\"decision\":\"allow\"} or {\"decision\":\"deny\",…})")
        }
        guard let rawDecision = members["decision"], let decision = try? JSONScanner.string(rawDecision) else {
            return .invalid("answered without a \"decision\" string (allow or deny)")
        }
        switch decision {
        case "deny":
            var code = StormError.Code.forbidden
            if let raw = members["code"], let text = try? JSONScanner.string(raw), denyCodes.contains(StormError.Code(rawValue: text)) {
                code = StormError.Code(rawValue: text)
            }
            let reason = members["reason"].flatMap { try? JSONScanner.string($0) }.map { String($0.prefix(maximumReason)) } ?? "no reason given"
            return .verdict(.deny(StormError(code, "refused by the \(kind.rawValue) hook: \(reason)")))
        case "allow":
            var changes = HookChanges()
            switch kind {
            case .connect:
                if let raw = members["user"] {
                    guard let user = try? JSONScanner.string(raw), (1...256).contains(user.utf8.count) else {
                        return .invalid("answered a \"user\" that is not a string of 1 to 256 bytes")
                    }
                    changes.user = user
                }
                if let raw = members["channels"] {
                    guard let channels = try? JSONScanner.stringArray(raw) else { return .invalid("answered \"channels\" that is not an array of strings") }
                    changes.channels = Array(channels.prefix(ServerSubscriptions.maximumClaimed))
                }
            case .publish:
                if let data = members["data"] {
                    var fields: [String: [UInt8]] = ["data": data]
                    if let encoding = members["encoding"] { fields["encoding"] = encoding }
                    changes.data = fields
                }
            case .subscribe:
                break
            }
            return .verdict(.allow(changes))
        default:
            return .invalid("answered the decision '\(decision.prefix(32))' (expected allow or deny)")
        }
    }
}
