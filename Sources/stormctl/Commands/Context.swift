import ArgumentParser
import Foundation
import StormCore

/// Saved servers and credentials, `~/.config/storm/contexts.json` (`$XDG_CONFIG_HOME` honoured), written
/// with mode 0600 because it holds tokens.
struct ContextStore: Codable {
    struct Entry: Codable {
        var server: String
        var token: String?
    }

    var current: String?
    var contexts: [String: Entry] = [:]

    static var path: String {
        let environment = ProcessInfo.processInfo.environment
        let base = environment["XDG_CONFIG_HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? (NSHomeDirectory() + "/.config")
        return base + "/storm/contexts.json"
    }

    static func load() throws(StormError) -> ContextStore {
        guard let data = FileManager.default.contents(atPath: path) else { return ContextStore() }
        do {
            return try JSONDecoder().decode(ContextStore.self, from: data)
        } catch {
            throw StormError(.configuration, "\(path) is not a contexts file: fix or remove it")
        }
    }

    func save() throws(StormError) {
        let url = URL(fileURLWithPath: Self.path)
        do {
            try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            let data = try encoder.encode(self)
            FileManager.default.createFile(atPath: Self.path, contents: nil, attributes: [.posixPermissions: 0o600])
            try data.write(to: url)
        } catch {
            throw StormError(.configuration, "cannot write \(Self.path): \(error)")
        }
    }

    /// `--context NAME` or the current context; nil when none is set.
    func selected(_ name: String?) throws(StormError) -> Entry? {
        guard let name = name ?? current else { return nil }
        guard let entry = contexts[name] else {
            throw StormError(.configuration, "no context '\(name)' (stormctl context ls lists them)")
        }
        return entry
    }
}

extension Stormctl {
    /// `stormctl context add|use|ls|rm`: named servers with their tokens, like the nats CLI's contexts.
    struct Context: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Save servers and tokens under names (~/.config/storm/contexts.json).",
            discussion: """
                Flags and STORM_URL/STORM_TOKEN win over the context. The token is read from \
                STORM_TOKEN (or --token-file) when adding, so it never has to be on the command line.

                Examples:
                  STORM_TOKEN=$(cat admin.jwt) stormctl context add prod --server http://storm.example:8080 --use
                  stormctl context ls
                  stormctl context use prod
                """,
            subcommands: [Add.self, Use.self, List.self, Remove.self]
        )

        struct Add: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Add or replace a context.")
            @Argument(help: "Context name.") var name: String
            @Option(name: .long, help: ArgumentHelp("Gateway URL.", valueName: "url")) var server: String
            @Option(name: .long, help: ArgumentHelp("File holding the token (default: $STORM_TOKEN, else none).", valueName: "file")) var tokenFile: String?
            @Flag(name: .long, help: "Make it the current context.") var use = false

            func run() async throws {
                try await reportingFailures {
                    _ = try StormEndpoint(url: server)
                    var token = ProcessInfo.processInfo.environment["STORM_TOKEN"].flatMap { $0.isEmpty ? nil : $0 }
                    if let tokenFile {
                        guard let data = FileManager.default.contents(atPath: tokenFile) else {
                            throw StormError(.configuration, "cannot read '\(tokenFile)'")
                        }
                        token = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
                    }
                    var store = try ContextStore.load()
                    store.contexts[name] = .init(server: server, token: token)
                    if use || store.current == nil { store.current = name }
                    try store.save()
                    StandardOutput.write("context '\(name)' saved\(store.current == name ? " (current)" : "")\n")
                }
            }
        }

        struct Use: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Make a context the current one.")
            @Argument(help: "Context name.") var name: String

            func run() async throws {
                try await reportingFailures {
                    var store = try ContextStore.load()
                    guard store.contexts[name] != nil else { throw StormError(.configuration, "no context '\(name)' (stormctl context ls lists them)") }
                    store.current = name
                    try store.save()
                    StandardOutput.write("current context: \(name)\n")
                }
            }
        }

        struct List: AsyncParsableCommand {
            static let configuration = CommandConfiguration(commandName: "ls", abstract: "List contexts (tokens are not shown).", aliases: ["list"])
            @Flag(name: .long, help: "Machine-readable JSON output.") var json = false

            func run() async throws {
                try await reportingFailures {
                    let store = try ContextStore.load()
                    if json {
                        let items = store.contexts.keys.sorted().map { name in
                            "{\"name\":\(JSONWriter.quoted(name)),\"server\":\(JSONWriter.quoted(store.contexts[name]?.server ?? "")),\"token\":\(store.contexts[name]?.token != nil),\"current\":\(store.current == name)}"
                        }
                        StandardOutput.write("[" + items.joined(separator: ",") + "]\n")
                        return
                    }
                    var table = ColumnTable(headers: ["", "NAME", "SERVER", "TOKEN"])
                    for name in store.contexts.keys.sorted() {
                        let entry = store.contexts[name]
                        table.add([store.current == name ? "*" : "", name, entry?.server ?? "", entry?.token == nil ? "no" : "yes"])
                    }
                    StandardOutput.write(table.render())
                }
            }
        }

        struct Remove: AsyncParsableCommand {
            static let configuration = CommandConfiguration(commandName: "rm", abstract: "Remove a context.")
            @Argument(help: "Context name.") var name: String

            func run() async throws {
                try await reportingFailures {
                    var store = try ContextStore.load()
                    guard store.contexts.removeValue(forKey: name) != nil else { throw StormError(.configuration, "no context '\(name)'") }
                    if store.current == name { store.current = nil }
                    try store.save()
                    StandardOutput.write("context '\(name)' removed\n")
                }
            }
        }
    }
}
