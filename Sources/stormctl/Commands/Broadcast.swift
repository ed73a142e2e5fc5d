import ArgumentParser
import Foundation
import NIOHTTP1
import StormCore

extension Stormctl {
    /// `stormctl broadcast --channel A --channel B DATA`: POST /api/v1/broadcast.
    struct Broadcast: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Publish one message on several channels (HTTP POST /api/v1/broadcast).",
            discussion: """
                DATA is sent as publish sends it: valid JSON stays JSON, other UTF-8 text is delivered as text, other bytes as base64; - reads DATA from standard input. Every channel is checked before anything is published: one the token may not publish to refuses the whole request. Each channel then answers with its own offset (or its own error); the command exits 0 only when every channel stored the message.

                Examples:
                  stormctl broadcast --channel chat.a --channel chat.b '{"text":"hi"}'
                  stormctl broadcast --channel chat.a,chat.b,news hello
                  stormctl broadcast --channel orders.eu --channel orders.us '{"id":7}' --idempotency-key order-7 --json

                \\(ExitStatus.helpText)
                """
        )

        @OptionGroup var global: GlobalOptions

        @Option(name: .long, help: ArgumentHelp("Channel to publish on (repeatable, or a comma-separated list).", valueName: "channel"))
        var channel: [String] = []

        @Argument(help: "Payload, or - to read it from standard input.")
        var data: String

        @Option(name: .long, help: "Idempotency key: a repeat within 2 minutes is stored once per channel.")
        var idempotencyKey: String?

        var channels: [String] { channel.flatMap { $0.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) } }.filter { !$0.isEmpty } }

        func validate() throws {
            guard !channels.isEmpty else { throw ValidationError("name at least one --channel") }
        }

        func run() async throws {
            try await reportingFailures {
                let endpoint = try global.endpoint()
                var names: [ChannelName] = []
                for name in channels { names.append(try ChannelName(validating: name)) }
                let payload = data == "-" ? readStandardInput() : Array(data.utf8)
                let body = Self.body(channels: names, payload: payload, idempotencyKey: idempotencyKey)
                var headers = HTTPHeaders()
                headers.add(name: "Content-Type", value: "application/json")
                let client = StormHTTPClient(endpoint: endpoint)
                let reply: [UInt8]
                do {
                    reply = try await client.request(method: .POST, path: "/api/v1/broadcast", body: body, headers: headers).body
                } catch {
                    await client.close()
                    throw error
                }
                await client.close()
                let results = (try? JSONDecoder().decode(Reply.self, from: Data(reply)))?.results ?? []
                let failed = results.filter { $0.error != nil }.count
                if global.json {
                    StandardOutput.write(reply.last == 0x0A ? reply : reply + [0x0A])
                } else {
                    for result in results {
                        if let error = result.error {
                            StandardError.write("stormctl: \(result.channel): \(error.message)\n")
                        } else {
                            StandardOutput.write("\(result.channel) \(result.offset.map { "offset \($0)" } ?? "stored")\n")
                        }
                    }
                }
                if failed > 0 { throw StormError(.brokerUnavailable, "\(failed) of \(results.count) channels did not store the message") }
            }
        }

        /// The request body: `{"channels":[…],"data":…}`, with the payload carried as `publish` carries it.
        static func body(channels: [ChannelName], payload: [UInt8], idempotencyKey: String?) -> [UInt8] {
            var out = Array("{\"channels\":[".utf8)
            for (index, channel) in channels.enumerated() {
                if index > 0 { out.append(UInt8(ascii: ",")) }
                JSONWriter.appendString(utf8: channel.rawValue.utf8, to: &out)
            }
            out += Array("],\"data\":".utf8)
            if JSONScanner.isValidDocument(payload) {
                out += JSONScanner.compacted(payload)
            } else if String(validating: payload, as: UTF8.self) != nil {
                JSONWriter.appendString(utf8: payload, to: &out)
            } else {
                JSONWriter.appendString(utf8: Array(Data(payload).base64EncodedString().utf8), to: &out)
                out += Array(",\"encoding\":\"base64\"".utf8)
            }
            if let idempotencyKey {
                out += Array(",\"idempotency_key\":".utf8)
                JSONWriter.appendString(utf8: idempotencyKey.utf8, to: &out)
            }
            out.append(UInt8(ascii: "}"))
            return out
        }

        /// The gateway's answer: one result per channel.
        struct Reply: Decodable {
            struct Failure: Decodable {
                var code: String
                var message: String
            }
            struct Result: Decodable {
                var channel: String
                var offset: UInt64?
                var error: Failure?
            }
            var results: [Result]
        }
    }
}
