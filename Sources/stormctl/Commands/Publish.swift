import ArgumentParser
import NIOPosix
import StormCore

extension Stormctl {
    /// `stormctl publish CHANNEL DATA`: POST /publish, once or `--count` times at `--rate`.
    struct Publish: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Publish a message on a channel (HTTP POST /publish).",
            discussion: """
                DATA is sent as is: valid JSON stays JSON, other UTF-8 text is delivered as text, other \
                bytes as base64. Use - to read DATA from standard input (binary-safe).
                The command exits 0 only after the gateway accepted (HTTP 200) every message.

                Examples:
                  stormctl publish chat.lobby '{"text":"hi"}'
                  stormctl publish chat.lobby hello
                  stormctl publish files.in - < picture.png
                  stormctl publish load.test '{"n":{n}}' --count 1000 --rate 200
                  stormctl publish chat.lobby hi --json    # prints {"id":…,"channel":…,"ts":…}

                \(ExitStatus.helpText)
                """
        )

        @OptionGroup var global: GlobalOptions

        @Argument(help: "Channel to publish on, e.g. chat.lobby.")
        var channel: String

        @Argument(help: "Payload, or - to read it from standard input.")
        var data: String

        @Option(name: .long, help: "Publish N times; {n} in DATA becomes the sequence number 1…N.")
        var count: Int?

        @Option(name: .long, help: "Pace publishing at R messages per second (default: as fast as answered).")
        var rate: Double?

        @Flag(name: [.short, .long], help: "Print a line per published message.")
        var verbose = false

        func validate() throws {
            if let count, count < 1 { throw ValidationError("--count must be at least 1") }
            if let rate, !(rate > 0) || !rate.isFinite { throw ValidationError("--rate must be a positive number") }
        }

        func run() async throws {
            try await reportingFailures {
                let endpoint = try global.endpoint()
                let channelName = try ChannelName(validating: channel)
                let template = data == "-" ? readStandardInput() : Array(data.utf8)
                let total = count ?? 1
                let client = StormHTTPClient(endpoint: endpoint)
                let schedule = RateSchedule(rate: rate, total: total)
                let clock = ContinuousClock()
                let start = clock.now
                for index in 0..<total {
                    let due = start + .nanoseconds(schedule.dueOffsetNanoseconds(ofMessage: index))
                    if due > clock.now { try await Task.sleep(until: due, clock: clock) }
                    let payload = count == nil ? template : PayloadTemplate.substitute(sequence: index + 1, in: template)
                    let sent = clock.now
                    let reply = try await client.publish(channel: channelName, payload: payload)
                    if global.json {
                        StandardOutput.write(reply.last == 0x0A ? reply : reply + [0x0A])
                    } else if verbose {
                        let elapsed = sent.duration(to: clock.now)
                        let id = (try? JSONScanner.objectMembers(reply))?["id"].flatMap { try? JSONScanner.string($0) } ?? "?"
                        StandardOutput.write("published \(payload.count) bytes on \(channelName) id=\(id) in \(Milliseconds.format(elapsed))\n")
                    }
                }
                if verbose, !global.json, total > 1 {
                    let elapsed = start.duration(to: clock.now)
                    let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
                    StandardOutput.write("published \(total) messages in \(String(format: "%.2f", seconds)) s\n")
                }
                await client.close()
            }
        }
    }
}

/// `{n}` substitution for `publish --count`, done on bytes so binary payloads from stdin survive.
enum PayloadTemplate {
    static let placeholder = Array("{n}".utf8)

    static func substitute(sequence: Int, in template: [UInt8]) -> [UInt8] {
        guard template.count >= placeholder.count else { return template }
        let number = Array(String(sequence).utf8)
        var out: [UInt8] = []
        out.reserveCapacity(template.count + 8)
        var index = 0
        while index < template.count {
            if index + 3 <= template.count, template[index] == placeholder[0], template[index + 1] == placeholder[1],
                template[index + 2] == placeholder[2]
            {
                out.append(contentsOf: number)
                index += 3
            } else {
                out.append(template[index])
                index += 1
            }
        }
        return out
    }
}
