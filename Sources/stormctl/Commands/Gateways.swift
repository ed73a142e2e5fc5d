import ArgumentParser
import Foundation
import StormCore

extension Stormctl {
    /// `stormctl gateways`: the cluster's gateways, from the registry in the presence store.
    struct Gateways: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List the gateways of the cluster (GET /api/v1/gateways).",
            discussion: """
                Every stormd writes its id, advertised URLs, version and start time to the presence \
                store (Redis with --redis) and refreshes it with a heartbeat; a gateway that stops \
                heartbeating drops off within --presence-ttl. Without Redis a gateway lists only itself.

                Examples:
                  stormctl gateways
                  stormctl --server http://10.0.0.5:8080 gateways --json

                \(ExitStatus.helpText)
                """
        )

        @OptionGroup var global: GlobalOptions

        func run() async throws {
            try await reportingFailures {
                let client = StormHTTPClient(endpoint: try global.endpoint())
                defer { Task { await client.close() } }
                let body = try await PresenceAPI.get(client, path: "/api/v1/gateways")
                if global.json {
                    StandardOutput.write(body.last == 0x0A ? body : body + [0x0A])
                    return
                }
                let gateways = try PresenceAPI.array(try PresenceAPI.object(body)["gateways"])
                var table = ColumnTable(headers: ["ID", "HTTP", "METRICS", "VERSION", "UP", "HEARTBEAT"])
                let now = Date().timeIntervalSince1970 * 1000
                for gateway in gateways {
                    let fields = (try? JSONScanner.objectMembers(gateway)) ?? [:]
                    func text(_ key: String) -> String { fields[key].flatMap { try? JSONScanner.string($0) } ?? "" }
                    let started = fields["started"].flatMap(JSONScanner.number) ?? now
                    let heartbeat = fields["heartbeat"].flatMap(JSONScanner.number) ?? now
                    table.add([text("id"), text("http"), text("metrics"), text("version"), Age.format(milliseconds: now - started), Age.format(milliseconds: now - heartbeat) + " ago"])
                }
                StandardOutput.write(table.render())
                StandardOutput.write("\(gateways.count) gateway\(gateways.count == 1 ? "" : "s")\n")
            }
        }
    }
}
