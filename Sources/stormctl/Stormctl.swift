import ArgumentParser
import StormCore

/// `stormctl`: publish to, subscribe to and load-test a STORM gateway from the shell.
///
/// Exit codes follow sysexits(3) so scripts can tell "fix your input" from "try again later":
/// 0 ok; 64 usage error; 65 the server refused the request (4xx: bad channel, too large);
/// 69 cannot connect or the connection was lost; 70 anything unexpected; 75 the server is temporarily
/// unavailable (503: broker down, shutting down).
@main
struct Stormctl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stormctl",
        abstract: "Publish, subscribe and benchmark against a STORM gateway.",
        discussion: """
            The gateway is http://127.0.0.1:8080 unless --server or STORM_URL says otherwise.

            Examples:
              stormctl publish chat.lobby '{"text":"hi"}'
              stormctl subscribe chat.lobby --count 1
              stormctl bench --subscribers 10000 --rate 200 --duration 30

            \(ExitStatus.helpText)

            stormctl check alone exits as monitoring plugins do: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
            """,
        version: StormVersion.current,
        subcommands: [Publish.self, Broadcast.self, Subscribe.self, History.self, Channels.self, Bench.self, Presence.self, Gateways.self, Info.self, Check.self, Disconnect.self, User.self, Channel.self, Token.self, Context.self, Completion.self]
    )
}
