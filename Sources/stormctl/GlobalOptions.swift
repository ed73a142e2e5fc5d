import ArgumentParser
import Foundation
import StormCore

/// Flags every command shares: where the gateway is and whether to answer in JSON.
struct GlobalOptions: ParsableArguments {
    @Option(
        name: .long,
        help: ArgumentHelp(
            "Gateway URL (default: $STORM_URL, else http://127.0.0.1:8080).", valueName: "url"))
    var server: String?

    @Flag(name: .long, help: "Machine-readable JSON output.")
    var json = false

    static let defaultServer = "http://127.0.0.1:8080"

    /// The gateway to talk to: the flag, then `STORM_URL`, then the default.
    func endpoint() throws(StormError) -> StormEndpoint {
        let raw = server ?? ProcessInfo.processInfo.environment["STORM_URL"].flatMap { $0.isEmpty ? nil : $0 }
        return try StormEndpoint(url: raw ?? Self.defaultServer)
    }
}
