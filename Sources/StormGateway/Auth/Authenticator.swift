import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import StormCore
import StormObservability
import StormStore

/// Who is on the other end of a connection or request, and what its token allows.
package struct Principal: Sendable {
    /// The token's `sub`; nil for an anonymous client.
    package var user: String?
    package var subscribe: ChannelPatterns
    package var publish: ChannelPatterns
    package var admin: Bool
    /// The token's `exp`, seconds since 1970; nil for anonymous clients.
    package var expires: Double?
    /// The token's `storm.channels`: subscribed at connect time (`ServerSubscriptions`), unchecked here.
    package var channels: [String] = []

    package var isAnonymous: Bool { user == nil }
    package var displayName: String { user.map { "user '\($0)'" } ?? "anonymous clients" }

    package static let anonymous = Principal(user: nil, subscribe: ChannelPatterns(), publish: ChannelPatterns(), admin: false, expires: nil)
}

/// Token verification, the users/channels snapshot, and every permission decision of a gateway.
///
/// Checks run on event loops, so they never wait: tokens are verified synchronously (jwt-kit's
/// algorithms), and users and channel rules come from a snapshot refreshed from the store every second,
/// so a disabled user is refused within about a second everywhere, without a restart.
package final class Authenticator: Sendable {
    package enum Action: String, Sendable {
        case subscribe
        case publish

        package var verb: String { self == .subscribe ? "subscribing" : "publishing" }
        package var claim: String { self == .subscribe ? "storm.sub" : "storm.pub" }
    }

    package struct Snapshot: Sendable {
        package var disabled: Set<String> = []
        /// Most specific first.
        package var rules: [ChannelRule] = []
    }

    package let configuration: AuthConfiguration
    package let store: any AuthStore
    private let keyring = NIOLockedValueBox(TokenKeyring())
    private let snapshot = NIOLockedValueBox(Snapshot())
    private let refresher = NIOLockedValueBox<Task<Void, Never>?>(nil)
    private let failures: [TokenRejectionReason: GatewayMetrics.AuthCounter]
    private let logger: Logger
    /// How often the snapshot is re-read (not a flag: the brief's bound is 2 s).
    package static let refreshInterval: Duration = .seconds(1)

    package init(configuration: AuthConfiguration, store: any AuthStore, metrics: GatewayMetrics, logger: Logger) {
        self.configuration = configuration
        self.store = store
        self.logger = logger
        var failures: [TokenRejectionReason: GatewayMetrics.AuthCounter] = [:]
        for reason in TokenRejectionReason.allCases { failures[reason] = metrics.authFailureCounter(reason: reason.rawValue) }
        self.failures = failures
    }

    package var enabled: Bool { configuration.enabled }

    /// Builds the keys and reads the store once, then keeps re-reading it.
    package func start() async throws(StormError) {
        let ring = try await TokenKeyring.load(configuration.keys)
        keyring.withLockedValue { $0 = ring }
        try await refresh()
        let task = Task { [weak self] in
            while !Task.isCancelled {
                try? await Task.sleep(for: Self.refreshInterval)
                guard let self else { return }
                do throws(StormError) {
                    try await self.refresh()
                } catch {
                    // A refresh cut short by shutdown (the store closing under it) is not news.
                    if Task.isCancelled { return }
                    self.logger.warning("cannot refresh users and channel rules; keeping the last ones", metadata: ["storm.store": "\(self.store.endpointDescription)", "error": "\(error.message)"])
                }
            }
        }
        refresher.withLockedValue { $0 = task }
    }

    package func stop() {
        refresher.withLockedValue { $0?.cancel() }
    }

    /// Re-reads users and channel rules now (after an admin change, so this gateway applies it at once).
    package func refresh() async throws(StormError) {
        let users = try await store.users()
        let rules = try await store.channels()
        let next = Snapshot(disabled: Set(users.filter(\.disabled).map(\.id)), rules: rules.sorted { $0.specificity > $1.specificity })
        snapshot.withLockedValue { $0 = next }
    }

    package func isDisabled(_ user: String) -> Bool {
        snapshot.withLockedValue { $0.disabled.contains(user) }
    }

    // MARK: Tokens

    /// The token of a request: `Authorization: Bearer …`, else `?token=` (EventSource and browser
    /// WebSockets cannot set headers). nil when there is none.
    package static func token(from head: HTTPRequestHead) -> String? {
        if let header = head.headers.first(name: "authorization") {
            let parts = header.split(separator: " ", maxSplits: 1)
            if parts.count == 2, parts[0].lowercased() == "bearer" { return parts[1].trimmingSpaces() }
            return header  // not Bearer: verified as is, so it fails loudly instead of being ignored
        }
        return RequestTarget(head.uri).values(of: "token").first
    }

    /// Who presents `token`. A missing token is anonymous only when allowed; a presented token that fails
    /// is refused, never downgraded to anonymous. Failures are counted by reason; the token is never logged.
    /// `counting: false` for a check that will be repeated (the WebSocket upgrade, whose refusal the
    /// HTTP routes answer and count).
    package func authenticate(_ token: String?, counting: Bool = true) -> Result<Principal, StormError> {
        let result = verify(token)
        if case .failure(let rejection) = result {
            if counting { failures[rejection.reason]?.increment() }
            logger.debug("token refused", metadata: ["storm.auth.reason": "\(rejection.reason.rawValue)"])
            return .failure(rejection.stormError)
        }
        return result.mapError { $0.stormError }
    }

    private func verify(_ token: String?) -> Result<Principal, TokenRejection> {
        guard let token, !token.isEmpty else {
            if !enabled || configuration.allowAnonymous { return .success(.anonymous) }
            return .failure(TokenRejection(.missing, "this gateway requires a token: send 'Authorization: Bearer <token>' (or ?token= where headers cannot be set)"))
        }
        guard enabled else {
            return .failure(TokenRejection(.unknownKID, "a token was presented but this gateway has no token keys configured: remove it, or configure the gateway's keys"))
        }
        let ring = keyring.withLockedValue { $0 }
        let claims: TokenClaims
        do {
            claims = try ring.verify(token, .init(audience: configuration.audience, issuer: configuration.issuer))
        } catch {
            return .failure(error)
        }
        let user = claims.subject ?? ""
        if isDisabled(user) {
            return .failure(TokenRejection(.disabled, "user '\(user)' is disabled: ask an administrator (stormctl user enable)"))
        }
        do {
            let subscribe = try ChannelPatterns(parsing: (claims.storm?.subscribe ?? []).joined(separator: ","), origin: "storm.sub")
            let publish = try ChannelPatterns(parsing: (claims.storm?.publish ?? []).joined(separator: ","), origin: "storm.pub")
            return .success(
                Principal(
                    user: user, subscribe: subscribe, publish: publish, admin: claims.storm?.admin ?? false, expires: claims.expires,
                    channels: Array((claims.storm?.channels ?? []).prefix(ServerSubscriptions.maximumClaimed))))
        } catch {
            return .failure(TokenRejection(.malformed, "token refused: a channel pattern in its storm claims is not valid (use *, chat.* or an exact name)"))
        }
    }

    /// An open connection closed because its token expired (counted as `expired`).
    package func countExpiredConnection() {
        failures[.expired]?.increment()
    }

    /// Counts a rejection and turns it into the error the client sees.
    package func reject(_ rejection: TokenRejection) -> StormError {
        failures[rejection.reason]?.increment()
        logger.debug("token refused", metadata: ["storm.auth.reason": "\(rejection.reason.rawValue)"])
        return rejection.stormError
    }

    /// A `refresh` op: the new token must be valid and name the same user.
    package func refresh(_ principal: Principal, with token: String) -> Result<Principal, StormError> {
        switch authenticate(token) {
        case .failure(let error): return .failure(error)
        case .success(let next):
            guard next.user == principal.user, next.user != nil else {
                return .failure(reject(TokenRejection(.wrongUser, "refresh refused: the new token is for another user; open a new connection to change users")))
            }
            return .success(next)
        }
    }

    // MARK: Permissions

    /// The rule that applies to `channel`: the most specific matching pattern.
    package func rule(for channel: ChannelName) -> ChannelRule? {
        snapshot.withLockedValue { snapshot in snapshot.rules.first { $0.matches(channel) } }
    }

    /// Throws `forbidden` naming the reason unless `principal` may do `action` on `channel`.
    package func authorize(_ action: Action, _ channel: ChannelName, _ principal: Principal) throws(StormError) {
        guard enabled || snapshot.withLockedValue({ !$0.rules.isEmpty }) else { return }
        if principal.admin { return }
        if let user = principal.user {
            let grants = action == .subscribe ? principal.subscribe : principal.publish
            guard grants.matches(channel) else {
                throw StormError(.forbidden, "the token of user '\(user)' does not allow \(action.verb) to '\(channel.rawValue)' (its \(action.claim) patterns: \(grants.isEmpty ? "none" : grants.description))")
            }
        }
        guard let rule = rule(for: channel) else { return }
        let options = rule.options
        if principal.isAnonymous, options.public == false {
            throw StormError(.forbidden, "channel '\(channel.rawValue)' is private (rule '\(rule.pattern)'): present a token")
        }
        let allowed = (action == .subscribe ? options.subscribe : options.publish) ?? ["*"]
        if allowed.contains("*") { return }
        if let user = principal.user, allowed.contains(user) { return }
        throw StormError(.forbidden, "channel '\(channel.rawValue)' does not allow \(action.verb) for \(principal.displayName) (rule '\(rule.pattern)')")
    }

    /// Throws unless `principal` holds the admin capability.
    package func requireAdmin(_ principal: Principal) throws(StormError) {
        guard enabled else { return }
        guard principal.admin else {
            throw StormError(.forbidden, "the admin API needs a token with \"storm\": {\"admin\": true} (\(principal.displayName) has none): stormctl token issue --admin")
        }
    }
}
