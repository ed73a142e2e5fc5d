import Foundation
import NIOCore
import StormConfiguration
import StormCore

/// Backend hooks (docs/hooks.md): URLs the gateway asks before it lets a connection, a subscription or a
/// publish through. One `Sendable` struct, every field with its documented default:
///
/// | key | environment | default |
/// |---|---|---|
/// | `connect-hook` (URL) | `STORM_CONNECT_HOOK` | none: connections are not asked about |
/// | `subscribe-hook` (URL) | `STORM_SUBSCRIBE_HOOK` | none |
/// | `publish-hook` (URL) | `STORM_PUBLISH_HOOK` | none |
/// | `hook-timeout` (duration) | `STORM_HOOK_TIMEOUT` | 2 s: the whole call, waiting for a slot included |
/// | `hook-concurrency` (count) | `STORM_HOOK_CONCURRENCY` | 16 calls at once per hook (one connection each) |
/// | `hook-fail-open` (list of connect, subscribe, publish) | `STORM_HOOK_FAIL_OPEN` | none: a failing hook refuses |
/// | `hook-secret-file` (file) | `STORM_HOOK_SECRET_FILE` | none; the secret itself may come from `STORM_HOOK_SECRET` |
///
/// The secret is sent as `X-Storm-Hook-Secret` so the application can tell the gateway's calls from
/// anyone else's; like every secret it never comes from argv.
package struct HookConfiguration: Sendable {
    package enum Kind: String, CaseIterable, Sendable {
        case connect, subscribe, publish
    }

    /// Where one hook is called.
    package struct Target: Sendable, Equatable {
        package var url: String
        package var endpoint: StormEndpoint
        /// The request target: path and query, `/` when the URL has none.
        package var path: String
    }

    package var targets: [Kind: Target] = [:]
    package var timeout: TimeAmount = .seconds(2)
    package var concurrency = 16
    package var failOpen: Set<Kind> = []
    package var secret: String?
    package var secretFile: String?
    /// Calls that may wait for a slot per hook; past it a call fails at once (`overloaded`).
    package var maxWaiting = 1024

    package init() {}

    package var enabled: Bool { !targets.isEmpty }

    package init(sources: ConfigurationSources) throws(StormError) {
        for (kind, setting) in [(Kind.connect, Setting.connectHook), (.subscribe, .subscribeHook), (.publish, .publishHook)] {
            guard let value = sources.value(setting), !value.value.isEmpty else { continue }
            targets[kind] = try Self.parseTarget(value)
        }
        if let value = sources.value(.hookTimeout) { timeout = try ConfigurationSources.parseDuration(value, range: .milliseconds(10)...TimeAmount.seconds(60)) }
        if let value = sources.value(.hookConcurrency) { concurrency = try ConfigurationSources.parseInt(value, range: 1...1024) }
        if let value = sources.value(.hookFailOpen) {
            for name in value.value.split(separator: ",").map({ $0.trimmingSpaces().lowercased() }) where !name.isEmpty && name != "none" {
                guard let kind = Kind(rawValue: name) else {
                    throw StormError(.configuration, "\(value.origin): '\(name.prefix(40))' is not a hook (expected a comma list of connect, subscribe, publish)")
                }
                failOpen.insert(kind)
            }
        }
        if let secret = sources.environment["STORM_HOOK_SECRET"], !secret.isEmpty { self.secret = secret }
        if let value = sources.value(.hookSecretFile), !value.value.isEmpty {
            guard let data = FileManager.default.contents(atPath: value.value), let text = String(data: data, encoding: .utf8) else {
                throw StormError(.configuration, "\(value.origin): cannot read the hook secret file '\(value.value)'")
            }
            let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
            guard !trimmed.isEmpty, !trimmed.contains(where: { $0 == "\r" || $0 == "\n" }) else {
                throw StormError(.configuration, "\(value.origin): the hook secret file '\(value.value)' must hold one line, the secret")
            }
            secret = trimmed
            secretFile = value.value
        }
    }

    /// `http://HOST:PORT/PATH` or `https://…`; the path (and query) is where the JSON is posted.
    package static func parseTarget(_ value: ConfigurationSources.Value) throws(StormError) -> Target {
        let url = value.value.trimmingCharacters(in: .whitespaces)
        let lower = url.lowercased()
        guard lower.hasPrefix("http://") || lower.hasPrefix("https://"), !url.contains(" ") else {
            throw StormError(.configuration, "\(value.origin): '\(url.prefix(100))' is not a hook URL (expected http://HOST:PORT/PATH or https://…)")
        }
        let endpoint: StormEndpoint
        do {
            endpoint = try StormEndpoint(url: url)
        } catch {
            throw StormError(.configuration, "\(value.origin): \(error.message)")
        }
        let start = url.range(of: "://")?.upperBound ?? url.startIndex
        let afterScheme = url[start...]
        let path = afterScheme.firstIndex(of: "/").map { String(afterScheme[$0...]) } ?? "/"
        return Target(url: url, endpoint: endpoint, path: path)
    }

    /// `--print-config` lines (the secret never; only whether there is one).
    package var rendered: String {
        """
        connect-hook = \(targets[.connect]?.url ?? "")
        subscribe-hook = \(targets[.subscribe]?.url ?? "")
        publish-hook = \(targets[.publish]?.url ?? "")
        hook-timeout = \(timeout.nanoseconds / 1_000_000)ms
        hook-concurrency = \(concurrency)
        hook-fail-open = \(Kind.allCases.filter(failOpen.contains).map(\.rawValue).joined(separator: ","))
        hook-secret-file = \(secretFile ?? "")  # secret: \(secret == nil ? "none" : "set")
        """
    }
}
