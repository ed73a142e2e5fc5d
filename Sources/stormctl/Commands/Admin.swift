import ArgumentParser
import Foundation
import NIOHTTP1
import StormCore

/// The admin API from the shell (docs/protocol.md, "Administration"): needs an admin token.
enum AdminAPI {
    static func call(_ global: GlobalOptions, _ method: HTTPMethod, _ path: String, body: String? = nil) async throws(StormError) -> [UInt8] {
        let client = StormHTTPClient(endpoint: try global.endpoint())
        defer { Task { await client.close() } }
        var headers = HTTPHeaders()
        if body != nil { headers.add(name: "Content-Type", value: "application/json") }
        return try await client.request(method: method, path: path, body: body.map { Array($0.utf8) }, headers: headers).body
    }

    static func object(_ body: [UInt8]) throws(StormError) -> [String: [UInt8]] {
        do {
            return try JSONScanner.objectMembers(body)
        } catch {
            throw StormError(.internalError, "the server's answer is not a JSON object")
        }
    }

    static func string(_ raw: [UInt8]?) -> String { raw.flatMap { try? JSONScanner.string($0) } ?? "" }

    static func date(_ raw: [UInt8]?) -> String {
        guard let seconds = raw.flatMap(JSONScanner.number) else { return "" }
        let formatter = ISO8601DateFormatter()
        return formatter.string(from: Date(timeIntervalSince1970: seconds))
    }

    static func escape(_ component: String) -> String {
        component.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(CharacterSet(charactersIn: "-._~*"))) ?? component
    }

    static func printJSON(_ body: [UInt8]) {
        StandardOutput.write(body.last == 0x0A ? body : body + [0x0A])
    }

    static func userTable(_ items: [[UInt8]]) -> String {
        var table = ColumnTable(headers: ["ID", "NAME", "DISABLED", "CREATED"])
        for item in items {
            let fields = (try? JSONScanner.objectMembers(item)) ?? [:]
            table.add([string(fields["id"]), string(fields["name"]), fields["disabled"].map { String(decoding: $0, as: UTF8.self) } ?? "", date(fields["created"])])
        }
        return table.render()
    }

    static func channelTable(_ items: [[UInt8]]) -> String {
        var table = ColumnTable(headers: ["PATTERN", "OPTIONS", "CREATED"])
        for item in items {
            let fields = (try? JSONScanner.objectMembers(item)) ?? [:]
            table.add([string(fields["pattern"]), fields["options"].map { String(decoding: $0, as: UTF8.self) } ?? "{}", date(fields["created"])])
        }
        return table.render()
    }

    static func array(_ raw: [UInt8]?) throws(StormError) -> [[UInt8]] {
        try PresenceAPI.array(raw)
    }
}

extension Stormctl {
    /// `stormctl user add|list|show|disable|enable|rm`.
    struct User: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Manage users (admin API; needs an admin token).",
            discussion: """
                Tokens are stateless: a user needs no entry to connect. An entry names the user and can \
                disable it: its tokens stop working within about a second on every gateway, and its open \
                connections are closed.

                Examples:
                  stormctl user add alice --name 'Alice Liddell'
                  stormctl user list
                  stormctl user disable alice

                \(ExitStatus.helpText)
                """,
            subcommands: [Add.self, List.self, Show.self, Disable.self, Enable.self, Remove.self]
        )

        struct Add: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Create a user.")
            @OptionGroup var global: GlobalOptions
            @Argument(help: "User id (the sub claim of its tokens).") var id: String
            @Option(name: .long, help: ArgumentHelp("Display name (default: the id).", valueName: "name")) var name: String?
            @Flag(name: .long, help: "Create it disabled.") var disabled = false

            func run() async throws {
                try await reportingFailures {
                    let body = "{\"id\":\(JSONWriter.quoted(id)),\"name\":\(JSONWriter.quoted(name ?? id)),\"disabled\":\(disabled)}"
                    let answer = try await AdminAPI.call(global, .POST, "/api/v1/admin/users", body: body)
                    if global.json { return AdminAPI.printJSON(answer) }
                    StandardOutput.write("user '\(id)' created\n")
                }
            }
        }

        struct List: AsyncParsableCommand {
            static let configuration = CommandConfiguration(commandName: "list", abstract: "List users.", aliases: ["ls"])
            @OptionGroup var global: GlobalOptions

            func run() async throws {
                try await reportingFailures {
                    let answer = try await AdminAPI.call(global, .GET, "/api/v1/admin/users")
                    if global.json { return AdminAPI.printJSON(answer) }
                    let users = try AdminAPI.array(try AdminAPI.object(answer)["users"])
                    StandardOutput.write(AdminAPI.userTable(users))
                    StandardOutput.write("\(users.count) user\(users.count == 1 ? "" : "s")\n")
                }
            }
        }

        struct Show: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Show one user.")
            @OptionGroup var global: GlobalOptions
            @Argument(help: "User id.") var id: String

            func run() async throws {
                try await reportingFailures {
                    let answer = try await AdminAPI.call(global, .GET, "/api/v1/admin/users/\(AdminAPI.escape(id))")
                    if global.json { return AdminAPI.printJSON(answer) }
                    guard let user = try AdminAPI.object(answer)["user"] else { throw StormError(.internalError, "the answer has no user") }
                    StandardOutput.write(AdminAPI.userTable([user]))
                }
            }
        }

        struct Disable: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Disable a user: its tokens stop working and its connections are closed.")
            @OptionGroup var global: GlobalOptions
            @Argument(help: "User id.") var id: String

            func run() async throws {
                try await reportingFailures {
                    let answer = try await AdminAPI.call(global, .PATCH, "/api/v1/admin/users/\(AdminAPI.escape(id))", body: #"{"disabled":true}"#)
                    if global.json { return AdminAPI.printJSON(answer) }
                    StandardOutput.write("user '\(id)' disabled\n")
                }
            }
        }

        struct Enable: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Enable a disabled user.")
            @OptionGroup var global: GlobalOptions
            @Argument(help: "User id.") var id: String

            func run() async throws {
                try await reportingFailures {
                    let answer = try await AdminAPI.call(global, .PATCH, "/api/v1/admin/users/\(AdminAPI.escape(id))", body: #"{"disabled":false}"#)
                    if global.json { return AdminAPI.printJSON(answer) }
                    StandardOutput.write("user '\(id)' enabled\n")
                }
            }
        }

        struct Remove: AsyncParsableCommand {
            static let configuration = CommandConfiguration(commandName: "rm", abstract: "Delete a user (its tokens work again unless it is re-created disabled).")
            @OptionGroup var global: GlobalOptions
            @Argument(help: "User id.") var id: String

            func run() async throws {
                try await reportingFailures {
                    let answer = try await AdminAPI.call(global, .DELETE, "/api/v1/admin/users/\(AdminAPI.escape(id))")
                    if global.json { return AdminAPI.printJSON(answer) }
                    StandardOutput.write("user '\(id)' deleted\n")
                }
            }
        }
    }

    /// `stormctl channel create|list|info|update|rm`: channel rules.
    struct Channel: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Manage channel rules (admin API; needs an admin token).",
            discussion: """
                A rule applies to a channel name or a namespace pattern (*, chat.*) and says who may \
                publish and subscribe, whether anonymous clients may use it, and history and presence \
                options. The most specific rule wins; a channel with none is open to every token that \
                grants it.

                Examples:
                  stormctl channel create 'chat.*' --publish '*' --subscribe '*' --public off
                  stormctl channel create announcements --publish ops --history-size 100
                  stormctl channel update 'chat.*' --public on
                  stormctl channel list

                \(ExitStatus.helpText)
                """,
            subcommands: [Create.self, List.self, Info.self, Update.self, Remove.self]
        )

        struct RuleOptions: ParsableArguments {
            @Option(name: .long, help: ArgumentHelp("Anonymous clients may use it: on or off (default on).", valueName: "on|off")) var `public`: String?
            @Option(name: .long, help: ArgumentHelp("Who may publish: * or user ids, comma list (default *).", valueName: "who")) var publish: String?
            @Option(name: .long, help: ArgumentHelp("Who may subscribe: * or user ids, comma list (default *).", valueName: "who")) var subscribe: String?
            @Option(name: .long, help: ArgumentHelp("Presence on or off.", valueName: "on|off")) var presence: String?
            @Option(name: .long, help: ArgumentHelp("History kept, by count.", valueName: "n")) var historySize: Int?
            @Option(name: .long, help: ArgumentHelp("History kept, by age (a PostgreSQL interval: '1 day').", valueName: "age")) var historyAge: String?

            /// Merges the flags given into `options` (a JSON object's members).
            func apply(to options: inout [String: String]) throws(StormError) {
                func flag(_ text: String, _ name: String) throws(StormError) -> String {
                    switch text.lowercased() {
                    case "on", "true", "yes": return "true"
                    case "off", "false", "no": return "false"
                    default: throw StormError(.configuration, "--\(name) takes on or off")
                    }
                }
                func list(_ text: String) -> String {
                    "[" + text.split(separator: ",").map { JSONWriter.quoted(String($0).trimmingCharacters(in: .whitespaces)) }.joined(separator: ",") + "]"
                }
                if let value = `public` { options["public"] = try flag(value, "public") }
                if let publish { options["publish"] = list(publish) }
                if let subscribe { options["subscribe"] = list(subscribe) }
                if let value = presence { options["presence"] = try flag(value, "presence") }
                if let historySize { options["history_size"] = String(historySize) }
                if let historyAge { options["history_age"] = JSONWriter.quoted(historyAge) }
            }

            static func render(_ options: [String: String]) -> String {
                "{" + options.keys.sorted().map { "\(JSONWriter.quoted($0)):\(options[$0] ?? "null")" }.joined(separator: ",") + "}"
            }
        }

        struct Create: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Create a channel rule.")
            @OptionGroup var global: GlobalOptions
            @Argument(help: "Pattern: *, chat.* or an exact channel name.") var pattern: String
            @OptionGroup var rule: RuleOptions

            func run() async throws {
                try await reportingFailures {
                    var options: [String: String] = [:]
                    try rule.apply(to: &options)
                    let body = "{\"pattern\":\(JSONWriter.quoted(pattern)),\"options\":\(RuleOptions.render(options))}"
                    let answer = try await AdminAPI.call(global, .POST, "/api/v1/admin/channels", body: body)
                    if global.json { return AdminAPI.printJSON(answer) }
                    StandardOutput.write("channel '\(pattern)' created\n")
                }
            }
        }

        struct List: AsyncParsableCommand {
            static let configuration = CommandConfiguration(commandName: "list", abstract: "List channel rules.", aliases: ["ls"])
            @OptionGroup var global: GlobalOptions

            func run() async throws {
                try await reportingFailures {
                    let answer = try await AdminAPI.call(global, .GET, "/api/v1/admin/channels")
                    if global.json { return AdminAPI.printJSON(answer) }
                    let channels = try AdminAPI.array(try AdminAPI.object(answer)["channels"])
                    StandardOutput.write(AdminAPI.channelTable(channels))
                    StandardOutput.write("\(channels.count) channel rule\(channels.count == 1 ? "" : "s")\n")
                }
            }
        }

        struct Info: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Show one channel rule.")
            @OptionGroup var global: GlobalOptions
            @Argument(help: "Pattern.") var pattern: String

            func run() async throws {
                try await reportingFailures {
                    let answer = try await AdminAPI.call(global, .GET, "/api/v1/admin/channels/\(AdminAPI.escape(pattern))")
                    if global.json { return AdminAPI.printJSON(answer) }
                    guard let rule = try AdminAPI.object(answer)["channel"] else { throw StormError(.internalError, "the answer has no channel") }
                    StandardOutput.write(AdminAPI.channelTable([rule]))
                }
            }
        }

        struct Update: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Change options of a channel rule (the flags given; the rest is kept).")
            @OptionGroup var global: GlobalOptions
            @Argument(help: "Pattern.") var pattern: String
            @OptionGroup var rule: RuleOptions

            func run() async throws {
                try await reportingFailures {
                    let path = "/api/v1/admin/channels/\(AdminAPI.escape(pattern))"
                    let current = try AdminAPI.object(try await AdminAPI.call(global, .GET, path))
                    var options: [String: String] = [:]
                    if let raw = current["channel"], let members = try? JSONScanner.objectMembers(raw), let existing = members["options"],
                        let fields = try? JSONScanner.objectMembers(existing)
                    {
                        for (name, value) in fields { options[name] = String(decoding: value, as: UTF8.self) }
                    }
                    try rule.apply(to: &options)
                    let answer = try await AdminAPI.call(global, .PATCH, path, body: "{\"options\":\(RuleOptions.render(options))}")
                    if global.json { return AdminAPI.printJSON(answer) }
                    StandardOutput.write("channel '\(pattern)' updated\n")
                }
            }
        }

        struct Remove: AsyncParsableCommand {
            static let configuration = CommandConfiguration(commandName: "rm", abstract: "Delete a channel rule.")
            @OptionGroup var global: GlobalOptions
            @Argument(help: "Pattern.") var pattern: String

            func run() async throws {
                try await reportingFailures {
                    let answer = try await AdminAPI.call(global, .DELETE, "/api/v1/admin/channels/\(AdminAPI.escape(pattern))")
                    if global.json { return AdminAPI.printJSON(answer) }
                    StandardOutput.write("channel '\(pattern)' deleted\n")
                }
            }
        }
    }
}
