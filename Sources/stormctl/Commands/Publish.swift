import ArgumentParser
import Foundation
import NIOHTTP1
import NIOPosix
import StormCore

extension Stormctl {
    /// `stormctl publish CHANNEL DATA`: POST /publish, once or `--count` times at `--rate`.
    struct Publish: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Publish a message on a channel (HTTP POST /publish).",
            discussion: """
                DATA is sent as is: valid JSON stays JSON, other UTF-8 text is delivered as text, other bytes as base64. Use - to read DATA from standard input (binary-safe). The command exits 0 only after the gateway accepted (HTTP 200) every message.

                --header K=V adds an HTTP header to every request (repeatable): Idempotency-Key makes a retry safe (a repeat within 2 minutes is stored once), traceparent carries W3C trace context.

                --batch FILE publishes one message per line of an NDJSON file (- for standard input): {"channel":"c","data":…}, where a line without "channel" goes to CHANNEL, optionally with "idempotency_key" and "encoding":"base64". A JSON string in "data" is published as its text, any other JSON value as JSON. The lines go to the batch endpoint (POST /api/v1/publish/batch), up to 1,000 per request, in order. A line that is not valid or that the gateway refuses is reported with its line number and the others are still published; the command then exits 65.

                Examples:
                  stormctl publish chat.lobby '{"text":"hi"}'
                  stormctl publish chat.lobby hello
                  stormctl publish files.in - < picture.png
                  stormctl publish load.test '{"n":{n}}' --count 1000 --rate 200
                  stormctl publish chat.lobby hi --json    # prints {"id":…,"channel":…,"ts":…}
                  stormctl publish orders.new '{"id":7}' --header Idempotency-Key=order-7
                  stormctl publish --batch events.ndjson
                  stormctl publish chat.lobby --batch - < lines.ndjson

                \(ExitStatus.helpText)
                """
        )

        @OptionGroup var global: GlobalOptions

        @Argument(help: "Channel to publish on, e.g. chat.lobby (with --batch: for lines that name none).")
        var channel: String?

        @Argument(help: "Payload, or - to read it from standard input (not with --batch).")
        var data: String?

        @Option(name: .long, help: ArgumentHelp("HTTP header to send with each message, e.g. Idempotency-Key=k or traceparent=… (repeatable).", valueName: "name=value"))
        var header: [String] = []

        @Option(name: .long, help: ArgumentHelp("Publish each line of an NDJSON file ({\"channel\":…,\"data\":…}); - for standard input.", valueName: "file"))
        var batch: String?

        @Option(name: .long, help: "Publish N times; {n} in DATA becomes the sequence number 1…N.")
        var count: Int?

        @Option(name: .long, help: "Pace publishing at R messages per second (default: as fast as answered).")
        var rate: Double?

        @Flag(name: [.short, .long], help: "Print a line per published message.")
        var verbose = false

        func validate() throws {
            if batch != nil {
                if data != nil { throw ValidationError("--batch takes no DATA argument") }
                if count != nil { throw ValidationError("--batch and --count cannot be combined") }
            } else if channel == nil || data == nil {
                throw ValidationError("name a CHANNEL and DATA (or use --batch FILE)")
            }
            _ = try Self.headers(header)
            if let count, count < 1 { throw ValidationError("--count must be at least 1") }
            if let rate, !(rate > 0) || !rate.isFinite { throw ValidationError("--rate must be a positive number") }
        }

        func run() async throws {
            try await reportingFailures {
                let endpoint = try global.endpoint()
                let headers = try Self.headers(header)
                if let batch { return try await publishBatch(batch, endpoint: endpoint, headers: headers) }
                let channelName = try ChannelName(validating: channel ?? "")
                let data = self.data ?? ""
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
                    let reply = try await client.request(
                        method: .POST, path: "/publish", query: [("subject", channelName.rawValue)], body: payload, headers: headers
                    ).body
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

        /// `K=V` (or `K: V`) pairs as HTTP headers.
        static func headers(_ pairs: [String]) throws(ValidationError) -> HTTPHeaders {
            var headers = HTTPHeaders()
            for pair in pairs {
                guard let separator = pair.firstIndex(where: { $0 == "=" || $0 == ":" }) else {
                    throw ValidationError("--header '\(pair)' is not NAME=VALUE")
                }
                let name = pair[..<separator].trimmingCharacters(in: .whitespaces)
                let value = pair[pair.index(after: separator)...].trimmingCharacters(in: .whitespaces)
                guard !name.isEmpty, name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "-_".contains($0)) }) else {
                    throw ValidationError("--header '\(pair)': '\(name)' is not a header name")
                }
                guard !value.contains(where: { $0 == "\r" || $0 == "\n" }) else { throw ValidationError("--header \(name): the value holds a line break") }
                headers.add(name: name, value: value)
            }
            return headers
        }

        /// Publishes every line of an NDJSON file in order through the batch endpoint
        /// (`POST /api/v1/publish/batch`, up to 1,000 lines a request); refused lines are reported with
        /// their line number and counted, the others are still published.
        private func publishBatch(_ path: String, endpoint: StormEndpoint, headers: HTTPHeaders) async throws(StormError) {
            let bytes: [UInt8]
            if path == "-" {
                bytes = readStandardInput()
            } else {
                guard let contents = FileManager.default.contents(atPath: path) else {
                    throw StormError(.configuration, "cannot read --batch file '\(path)'")
                }
                bytes = Array(contents)
            }
            var headers = headers
            headers.replaceOrAdd(name: "Content-Type", value: "application/x-ndjson")
            let client = StormHTTPClient(endpoint: endpoint)
            var published = 0
            var refused = 0
            var chunk: [UInt8] = []
            var numbers: [Int] = []  // the file's line number of each line of `chunk`
            func refuse(_ number: Int, _ message: String) {
                refused += 1
                StandardError.write("stormctl: --batch line \(number): \(message)\n")
            }
            func send() async throws(StormError) {
                guard !numbers.isEmpty else { return }
                let reply = try await client.request(method: .POST, path: "/api/v1/publish/batch", body: chunk, headers: headers).body
                var answered = 0
                for line in reply.split(separator: 0x0A) {
                    guard let members = try? JSONScanner.objectMembers(Array(line)),
                        let index = members["line"].flatMap(JSONScanner.wholeNumber), index >= 1, index <= UInt64(numbers.count)
                    else { continue }
                    answered += 1
                    let number = numbers[Int(index) - 1]
                    if let error = members["error"].flatMap({ try? JSONScanner.objectMembers($0) }) {
                        refuse(number, error["message"].flatMap { try? JSONScanner.string($0) } ?? "refused")
                        continue
                    }
                    published += 1
                    if global.json {
                        StandardOutput.write(Array(line) + [0x0A])
                    } else if verbose {
                        let channel = members["channel"].flatMap { try? JSONScanner.string($0) } ?? "?"
                        let offset = members["offset"].flatMap(JSONScanner.wholeNumber).map { " offset \($0)" } ?? ""
                        StandardOutput.write("line \(number): published on \(channel)\(offset)\n")
                    }
                }
                if answered < numbers.count {
                    throw StormError(.connection, "the gateway answered \(answered) of \(numbers.count) lines of a batch: check its version (POST /api/v1/publish/batch)")
                }
                chunk = []
                numbers = []
            }
            do throws(StormError) {
                for (index, line) in bytes.split(separator: 0x0A, omittingEmptySubsequences: false).enumerated() {
                    let wire: [UInt8]
                    do throws(StormError) {
                        guard let built = try BatchRequest.wireLine(Array(line), defaultChannel: channel) else { continue }
                        wire = built
                    } catch {
                        refuse(index + 1, error.message)
                        continue
                    }
                    if numbers.count >= BatchRequest.maximumLines || chunk.count + wire.count + 1 > BatchRequest.maximumBytes { try await send() }
                    chunk += wire
                    chunk.append(0x0A)
                    numbers.append(index + 1)
                }
                try await send()
            } catch {
                await client.close()
                throw error
            }
            await client.close()
            if !global.json, verbose || refused > 0 {
                StandardOutput.write("published \(published) message\(published == 1 ? "" : "s"), \(refused) line\(refused == 1 ? "" : "s") refused\n")
            }
            if refused > 0 { throw StormError(.badRequest, "\(refused) of \(published + refused) lines were refused") }
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
