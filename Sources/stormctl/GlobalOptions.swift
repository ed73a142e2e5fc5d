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

    @Option(
        name: .long,
        help: ArgumentHelp(
            "Bearer token (default: $STORM_TOKEN, else the context's). Prefer STORM_TOKEN or a context: argv is visible to every local user.",
            valueName: "jwt"))
    var token: String?

    @Option(
        name: .long,
        help: ArgumentHelp(
            "With an https:// or wss:// server: PEM CA certificate(s) to trust besides the system's, for a gateway with a private CA (default: $STORM_CACERT).",
            valueName: "file"))
    var cacert: String?

    @Option(name: .long, help: ArgumentHelp("Saved context to use instead of the current one (stormctl context ls).", valueName: "name"))
    var context: String?

    @Flag(name: .long, help: "Machine-readable JSON output.")
    var json = false

    static let defaultServer = "http://127.0.0.1:8080"

    /// The gateway to talk to and the token to present: flags, then `STORM_URL`/`STORM_TOKEN`, then the
    /// selected context (`--context` or the current one), then the default server and no token.
    func endpoint() throws(StormError) -> StormEndpoint {
        let environment = ProcessInfo.processInfo.environment
        let saved = try ContextStore.load().selected(context)
        let raw = server ?? environment["STORM_URL"].flatMap { $0.isEmpty ? nil : $0 } ?? saved?.server
        var endpoint = try StormEndpoint(url: raw ?? Self.defaultServer)
        endpoint.token = token ?? environment["STORM_TOKEN"].flatMap { $0.isEmpty ? nil : $0 } ?? saved?.token
        endpoint.caCertificateFile = cacert ?? environment["STORM_CACERT"].flatMap { $0.isEmpty ? nil : $0 }
        return endpoint
    }
}
