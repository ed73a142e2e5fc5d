import ArgumentParser
import Foundation
import StormCore

/// The gateways a cluster-wide command asks: every one `GET /api/v1/gateways` lists (their advertised
/// `http` URLs), each with the token of the `--server` endpoint.
enum ClusterGateways {
    struct Member: Sendable {
        var id: String
        var endpoint: StormEndpoint
        /// The registry's record, raw (version, started, …).
        var fields: [String: [UInt8]]
    }

    /// The members; when the registry cannot be read (presence store down), the `--server` gateway alone,
    /// with a note on stderr.
    static func members(_ global: GlobalOptions) async throws(StormError) -> [Member] {
        let endpoint = try global.endpoint()
        let client = StormHTTPClient(endpoint: endpoint)
        defer { Task { await client.close() } }
        let body: [UInt8]
        do {
            body = try await PresenceAPI.get(client, path: "/api/v1/gateways")
        } catch where error.code == .brokerUnavailable {
            StandardError.write("stormctl: the gateway registry is unavailable (\(error.message)); asking \(endpoint) only\n")
            return [Member(id: endpoint.description, endpoint: endpoint, fields: [:])]
        }
        var members: [Member] = []
        for raw in try PresenceAPI.array(try PresenceAPI.object(body)["gateways"]) {
            let fields = (try? JSONScanner.objectMembers(raw)) ?? [:]
            let id = fields["id"].flatMap { try? JSONScanner.string($0) } ?? "?"
            guard let url = fields["http"].flatMap({ try? JSONScanner.string($0) }), var member = try? StormEndpoint(url: url) else {
                StandardError.write("stormctl: gateway \(id) advertises no usable http URL\n")
                continue
            }
            member.token = endpoint.token
            members.append(Member(id: id, endpoint: member, fields: fields))
        }
        return members
    }
}

extension Stormctl {
    /// `stormctl channels [PATTERN]`: active channels and their subscriber counts, cluster-wide.
    struct Channels: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List active channels with their subscriber counts (GET /api/v1/channels on every gateway).",
            discussion: """
                A channel is active while some gateway has a subscriber for it. Every gateway listed by GET /api/v1/gateways is asked for its channels and local subscriber counts, and the counts are summed. A gateway that does not answer is named on standard error and the command exits 75, after printing what the others answered. PATTERN is a channel, a prefix like chat.* or *, or a comma list of them (default: every channel).

                Examples:
                  stormctl channels
                  stormctl channels 'chat.*'
                  stormctl channels --json | jq '.channels[] | select(.subscribers > 100)'

                \(ExitStatus.helpText)
                """
        )

        @OptionGroup var global: GlobalOptions

        @Argument(help: "Channel pattern: a channel, prefix.*, or * (default *).")
        var pattern: String?

        func run() async throws {
            try await reportingFailures {
                let members = try await ClusterGateways.members(global)
                var totals: [String: Int] = [:]
                var failed: [String] = []
                for member in members {
                    let client = StormHTTPClient(endpoint: member.endpoint)
                    do {
                        let answer = try await client.request(
                            path: "/api/v1/channels", query: pattern.map { [("pattern", $0)] } ?? [], timeout: .seconds(5))
                        for item in try PresenceAPI.array(try PresenceAPI.object(answer.body)["channels"]) {
                            let fields = (try? JSONScanner.objectMembers(item)) ?? [:]
                            guard let name = fields["channel"].flatMap({ try? JSONScanner.string($0) }) else { continue }
                            totals[name, default: 0] += Int(fields["subscribers"].flatMap(JSONScanner.number) ?? 0)
                        }
                    } catch let error as StormError {
                        if error.code == .badRequest || error.code == .unauthorized || error.code == .forbidden { await client.close(); throw error }
                        StandardError.write("stormctl: gateway \(member.id) (\(member.endpoint)) did not answer: \(error.message)\n")
                        failed.append(member.id)
                    } catch {
                        StandardError.write("stormctl: gateway \(member.id) (\(member.endpoint)) answered unreadably: \(error)\n")
                        failed.append(member.id)
                    }
                    await client.close()
                }
                let sorted = totals.sorted { $0.key < $1.key }
                if global.json {
                    var out = "{\"channels\":["
                    out += sorted.map { "{\"channel\":\(JSONWriter.quoted($0.key)),\"subscribers\":\($0.value)}" }.joined(separator: ",")
                    out += "],\"gateways\":\(members.count),\"failed\":[" + failed.map { JSONWriter.quoted($0) }.joined(separator: ",") + "]}\n"
                    StandardOutput.write(out)
                } else {
                    var table = ColumnTable(headers: ["CHANNEL", "SUBSCRIBERS"])
                    for (name, count) in sorted { table.add([name, String(count)]) }
                    StandardOutput.write(table.render())
                    StandardOutput.write("\(sorted.count) channel\(sorted.count == 1 ? "" : "s") on \(members.count - failed.count) of \(members.count) gateway\(members.count == 1 ? "" : "s")\n")
                }
                if !failed.isEmpty { throw ExitCode(ExitStatus.temporaryFailure) }
            }
        }
    }

    /// `stormctl disconnect --user U | --client ID`: close connections through the admin routes.
    struct Disconnect: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Disconnect a user's connections or one client, on whichever gateways hold them (admin).",
            discussion: """
                Sends POST /api/v1/users/USER/disconnect or POST /api/v1/clients/CLIENT/disconnect; the request travels through the broker to the gateways that hold the target, which close the connections. Needs an admin token. Client ids are those of stormctl presence. --reason is sent in the request body ({"reason":"…"}) and carried to the gateways, which close each WebSocket with 1001 and that reason (cut to 123 bytes, the most a close frame holds); without it the reason is "disconnected on request". SSE streams just end.

                Examples:
                  stormctl disconnect --user alice
                  stormctl disconnect --client 5ec8a1c1df97-17 --reason 'token revoked'

                \(ExitStatus.helpText)
                """
        )

        @OptionGroup var global: GlobalOptions

        @Option(name: .long, help: "Disconnect every connection of this user.")
        var user: String?

        @Option(name: .long, help: "Disconnect this one connection (client id).")
        var client: String?

        @Option(name: .long, help: "Why: the WebSocket close frame's reason the client gets (at most 123 bytes).")
        var reason: String?

        func validate() throws {
            if (user == nil) == (client == nil) { throw ValidationError("name exactly one of --user and --client") }
        }

        func run() async throws {
            try await reportingFailures {
                let path = user.map { "/api/v1/users/\(AdminAPI.escape($0))/disconnect" } ?? "/api/v1/clients/\(AdminAPI.escape(client ?? ""))/disconnect"
                var body = "{"
                if let reason { body += "\"reason\":" + JSONWriter.quoted(reason) }
                body += "}"
                let answer = try await AdminAPI.call(global, .POST, path, body: body)
                if global.json { return AdminAPI.printJSON(answer) }
                let gateways = (try? JSONScanner.stringArray(AdminAPI.object(answer)["gateways"] ?? [])) ?? []
                let target = user.map { "user \($0)" } ?? "client \(client ?? "")"
                StandardOutput.write("disconnect of \(target) sent to \(gateways.count) gateway\(gateways.count == 1 ? "" : "s")\(gateways.isEmpty ? "" : ": " + gateways.joined(separator: ", "))\n")
            }
        }
    }

    /// `stormctl completion bash|zsh|fish`: the shell completion script.
    struct Completion: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print the shell completion script for bash, zsh or fish.",
            discussion: """
                make install puts the scripts where the shells look for them. To load one by hand:

                  source <(stormctl completion bash)
                  stormctl completion zsh > "${fpath[1]}/_stormctl"
                  stormctl completion fish > ~/.config/fish/completions/stormctl.fish
                """
        )

        enum Shell: String, ExpressibleByArgument, CaseIterable {
            case bash, zsh, fish
        }

        @Argument(help: "bash, zsh or fish.")
        var shell: Shell

        func run() throws {
            let kind: CompletionShell =
                switch shell {
                case .bash: .bash
                case .zsh: .zsh
                case .fish: .fish
                }
            StandardOutput.write(Stormctl.completionScript(for: kind))
        }
    }
}
