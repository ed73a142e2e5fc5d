import Foundation
import NIOConcurrencyHelpers
import StormCore

/// A user as the admin API and `stormctl user` show it. Tokens are stateless: a user needs no row to
/// connect; a row exists to disable the user (and to name it).
package struct UserRecord: Codable, Sendable, Equatable {
    package var id: String
    package var name: String
    package var disabled: Bool
    /// Seconds since 1970.
    package var created: Double
}

/// The options of a channel or namespace (`channels.options`, a JSON object). Every field is optional;
/// absent means the default below.
package struct ChannelPolicy: Codable, Sendable, Equatable {
    /// Whether clients without a token (where `--allow-anonymous` lets them in) may subscribe, and publish
    /// when `publish` allows everyone. Default true.
    package var `public`: Bool?
    /// Who may publish: `"*"` (every token that grants it) or user ids. Default `["*"]`.
    package var publish: [String]?
    /// Who may subscribe, same form. Default `["*"]`.
    package var subscribe: [String]?
    /// Presence on or off for these channels; overrides `--presence-channels` for them.
    package var presence: Bool?
    /// History kept, by count and by age (a PostgreSQL interval such as `"1 day"`), for the retention.
    package var historySize: Int?
    package var historyAge: String?

    package enum CodingKeys: String, CodingKey {
        case `public`, publish, subscribe, presence
        case historySize = "history_size"
        case historyAge = "history_age"
    }

    package var json: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return (try? encoder.encode(self)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
    }

    package static func parse(_ bytes: [UInt8]) throws(StormError) -> ChannelPolicy {
        do {
            return try JSONDecoder().decode(ChannelPolicy.self, from: Data(bytes))
        } catch {
            throw StormError(
                .badRequest,
                "channel options must be a JSON object with public (bool), publish/subscribe (arrays of user ids or \"*\"), presence (bool), history_size (integer), history_age (string)")
        }
    }

    package init(`public`: Bool? = nil, publish: [String]? = nil, subscribe: [String]? = nil, presence: Bool? = nil, historySize: Int? = nil, historyAge: String? = nil) {
        self.`public` = `public`
        self.publish = publish
        self.subscribe = subscribe
        self.presence = presence
        self.historySize = historySize
        self.historyAge = historyAge
    }
}

/// A channel rule: a pattern (`*`, `chat.*`, an exact name; `chat.>` is read as `chat.*`) and options.
package struct ChannelRule: Codable, Sendable, Equatable {
    package var pattern: String
    package var options: ChannelPolicy
    package var created: Double

    /// Normalises and validates a pattern; throws `badRequest` naming the valid forms.
    package static func normalize(_ pattern: String) throws(StormError) -> String {
        let text = pattern.hasSuffix(".>") ? String(pattern.dropLast()) + "*" : pattern
        do {
            let parsed = try ChannelPatterns(parsing: text, origin: "pattern")
            guard !parsed.isEmpty, !text.contains(",") else { throw StormError(.badRequest, "empty") }
        } catch {
            throw StormError(.badRequest, "'\(pattern.prefix(80))' is not a channel pattern: use *, an exact channel name, or a prefix like chat.*")
        }
        return text
    }

    /// How specific the pattern is: exact names beat prefixes, longer prefixes beat shorter, `*` last.
    package var specificity: Int {
        if pattern == "*" { return 0 }
        if pattern.hasSuffix(".*") { return 1 + pattern.count }
        return Int.max
    }

    package func matches(_ channel: ChannelName) -> Bool {
        if pattern == "*" { return true }
        if pattern.hasSuffix(".*") { return channel.rawValue.hasPrefix(String(pattern.dropLast())) }
        return channel.rawValue == pattern
    }
}

/// Users and channel rules: PostgreSQL with `--postgres`, memory otherwise. Callers never know which.
package protocol AuthStore: Sendable {
    var endpointDescription: String { get }
    func users() async throws(StormError) -> [UserRecord]
    func createUser(id: String, name: String, disabled: Bool) async throws(StormError) -> UserRecord
    func updateUser(id: String, name: String?, disabled: Bool?) async throws(StormError) -> UserRecord
    func deleteUser(id: String) async throws(StormError)
    func channels() async throws(StormError) -> [ChannelRule]
    func createChannel(pattern: String, options: ChannelPolicy) async throws(StormError) -> ChannelRule
    func updateChannel(pattern: String, options: ChannelPolicy) async throws(StormError) -> ChannelRule
    func deleteChannel(pattern: String) async throws(StormError)
}

extension AuthStore {
    package func user(id: String) async throws(StormError) -> UserRecord? {
        try await users().first { $0.id == id }
    }

    package static func validateUserID(_ id: String) throws(StormError) {
        guard !id.isEmpty, id.utf8.count <= 256, id.utf8.allSatisfy({ $0 > 0x20 && $0 != 0x7F && $0 != UInt8(ascii: "/") }) else {
            throw StormError(.badRequest, "'\(id.prefix(64))' is not a user id: 1 to 256 characters, no spaces, control characters or '/'")
        }
    }
}

/// The zero-config store: this process only, gone at exit.
package final class MemoryAuthStore: AuthStore {
    package init() {}

    private let state = NIOLockedValueBox<(users: [String: UserRecord], channels: [String: ChannelRule])>(([:], [:]))

    package var endpointDescription: String { "memory" }

    package func users() async throws(StormError) -> [UserRecord] {
        state.withLockedValue { $0.users.values.sorted { $0.id < $1.id } }
    }

    package func createUser(id: String, name: String, disabled: Bool) async throws(StormError) -> UserRecord {
        try Self.validateUserID(id)
        let record = UserRecord(id: id, name: name, disabled: disabled, created: Date().timeIntervalSince1970)
        let created = state.withLockedValue { state -> Bool in
            guard state.users[id] == nil else { return false }
            state.users[id] = record
            return true
        }
        guard created else { throw StormError(.conflict, "user '\(id)' exists already: update it instead") }
        return record
    }

    package func updateUser(id: String, name: String?, disabled: Bool?) async throws(StormError) -> UserRecord {
        let updated = state.withLockedValue { state -> UserRecord? in
            guard var record = state.users[id] else { return nil }
            if let name { record.name = name }
            if let disabled { record.disabled = disabled }
            state.users[id] = record
            return record
        }
        guard let updated else { throw StormError(.notFound, "no user '\(id)' (stormctl user list shows them)") }
        return updated
    }

    package func deleteUser(id: String) async throws(StormError) {
        let removed = state.withLockedValue { $0.users.removeValue(forKey: id) != nil }
        guard removed else { throw StormError(.notFound, "no user '\(id)' (stormctl user list shows them)") }
    }

    package func channels() async throws(StormError) -> [ChannelRule] {
        state.withLockedValue { $0.channels.values.sorted { $0.pattern < $1.pattern } }
    }

    package func createChannel(pattern: String, options: ChannelPolicy) async throws(StormError) -> ChannelRule {
        let pattern = try ChannelRule.normalize(pattern)
        let rule = ChannelRule(pattern: pattern, options: options, created: Date().timeIntervalSince1970)
        let created = state.withLockedValue { state -> Bool in
            guard state.channels[pattern] == nil else { return false }
            state.channels[pattern] = rule
            return true
        }
        guard created else { throw StormError(.conflict, "channel '\(pattern)' exists already: update it instead") }
        return rule
    }

    package func updateChannel(pattern: String, options: ChannelPolicy) async throws(StormError) -> ChannelRule {
        let pattern = try ChannelRule.normalize(pattern)
        let updated = state.withLockedValue { state -> ChannelRule? in
            guard var rule = state.channels[pattern] else { return nil }
            rule.options = options
            state.channels[pattern] = rule
            return rule
        }
        guard let updated else { throw StormError(.notFound, "no channel '\(pattern)' (stormctl channel list shows them)") }
        return updated
    }

    package func deleteChannel(pattern: String) async throws(StormError) {
        let pattern = try ChannelRule.normalize(pattern)
        let removed = state.withLockedValue { $0.channels.removeValue(forKey: pattern) != nil }
        guard removed else { throw StormError(.notFound, "no channel '\(pattern)' (stormctl channel list shows them)") }
    }
}

/// The `users` and `channels` tables of migration 2.
package final class PostgresAuthStore: AuthStore {
    package let client: PostgresClient

    package init(client: PostgresClient) {
        self.client = client
    }

    package var endpointDescription: String { "postgres \(client.endpoint)" }

    private static let userColumns = "id, name, disabled, extract(epoch from created)::float8"

    private static func users(_ rows: PostgresRows) -> [UserRecord] {
        rows.rows.indices.compactMap { index in
            guard let id = rows.text(index, 0), let name = rows.text(index, 1) else { return nil }
            return UserRecord(id: id, name: name, disabled: rows.text(index, 2) == "t", created: rows.text(index, 3).flatMap(Double.init) ?? 0)
        }
    }

    private static func rules(_ rows: PostgresRows) -> [ChannelRule] {
        rows.rows.indices.compactMap { index in
            guard let pattern = rows.text(index, 0), let options = rows.text(index, 1) else { return nil }
            return ChannelRule(
                pattern: pattern, options: (try? ChannelPolicy.parse(Array(options.utf8))) ?? ChannelPolicy(),
                created: rows.text(index, 2).flatMap(Double.init) ?? 0)
        }
    }

    package func users() async throws(StormError) -> [UserRecord] {
        let rows = try await client.withConnection { connection throws(StormError) in
            try connection.query("SELECT \(Self.userColumns) FROM users ORDER BY id", doing: "list users")
        }
        return Self.users(rows)
    }

    package func createUser(id: String, name: String, disabled: Bool) async throws(StormError) -> UserRecord {
        try Self.validateUserID(id)
        let rows = try await client.withConnection { connection throws(StormError) in
            try connection.query(
                "INSERT INTO users (id, name, disabled) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING RETURNING \(Self.userColumns)",
                [.text(id), .text(name), .text(disabled ? "true" : "false")], doing: "create user '\(id)'")
        }
        guard let user = Self.users(rows).first else { throw StormError(.conflict, "user '\(id)' exists already: update it instead") }
        return user
    }

    package func updateUser(id: String, name: String?, disabled: Bool?) async throws(StormError) -> UserRecord {
        let rows = try await client.withConnection { connection throws(StormError) in
            try connection.query(
                "UPDATE users SET name = coalesce($2, name), disabled = coalesce($3::boolean, disabled) WHERE id = $1 RETURNING \(Self.userColumns)",
                [.text(id), name.map(PostgresValue.text) ?? .null, disabled.map { .text($0 ? "true" : "false") } ?? .null], doing: "update user '\(id)'")
        }
        guard let user = Self.users(rows).first else { throw StormError(.notFound, "no user '\(id)' (stormctl user list shows them)") }
        return user
    }

    package func deleteUser(id: String) async throws(StormError) {
        let rows = try await client.withConnection { connection throws(StormError) in
            try connection.query("DELETE FROM users WHERE id = $1 RETURNING id", [.text(id)], doing: "delete user '\(id)'")
        }
        guard !rows.rows.isEmpty else { throw StormError(.notFound, "no user '\(id)' (stormctl user list shows them)") }
    }

    package func channels() async throws(StormError) -> [ChannelRule] {
        let rows = try await client.withConnection { connection throws(StormError) in
            try connection.query("SELECT pattern, options::text, extract(epoch from created)::float8 FROM channels ORDER BY pattern", doing: "list channels")
        }
        return Self.rules(rows)
    }

    package func createChannel(pattern: String, options: ChannelPolicy) async throws(StormError) -> ChannelRule {
        let pattern = try ChannelRule.normalize(pattern)
        let rows = try await client.withConnection { connection throws(StormError) in
            try connection.query(
                "INSERT INTO channels (pattern, options) VALUES ($1, $2::jsonb) ON CONFLICT (pattern) DO NOTHING RETURNING pattern, options::text, extract(epoch from created)::float8",
                [.text(pattern), .text(options.json)], doing: "create channel '\(pattern)'")
        }
        guard let rule = Self.rules(rows).first else { throw StormError(.conflict, "channel '\(pattern)' exists already: update it instead") }
        return rule
    }

    package func updateChannel(pattern: String, options: ChannelPolicy) async throws(StormError) -> ChannelRule {
        let pattern = try ChannelRule.normalize(pattern)
        let rows = try await client.withConnection { connection throws(StormError) in
            try connection.query(
                "UPDATE channels SET options = $2::jsonb WHERE pattern = $1 RETURNING pattern, options::text, extract(epoch from created)::float8",
                [.text(pattern), .text(options.json)], doing: "update channel '\(pattern)'")
        }
        guard let rule = Self.rules(rows).first else { throw StormError(.notFound, "no channel '\(pattern)' (stormctl channel list shows them)") }
        return rule
    }

    package func deleteChannel(pattern: String) async throws(StormError) {
        let pattern = try ChannelRule.normalize(pattern)
        let rows = try await client.withConnection { connection throws(StormError) in
            try connection.query("DELETE FROM channels WHERE pattern = $1 RETURNING pattern", [.text(pattern)], doing: "delete channel '\(pattern)'")
        }
        guard !rows.rows.isEmpty else { throw StormError(.notFound, "no channel '\(pattern)' (stormctl channel list shows them)") }
    }
}
