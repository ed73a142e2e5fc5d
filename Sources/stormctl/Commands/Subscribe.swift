import ArgumentParser
import Foundation
import NIOCore
import StormCore

extension Stormctl {
    /// `stormctl subscribe CHANNEL...`: print every message of the channels as it arrives.
    struct Subscribe: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print the messages of one or more channels as they arrive.",
            discussion: """
                Each message is printed as one line: the envelope exactly as the gateway sent it ({"type":"message","channel":…,"id":…,"ts":…,"data":…}). With --raw, only the payload is printed: JSON as JSON text, text as text, base64 payloads decoded to their bytes. Output is written line by line, so pipes see each message at once.

                --last N replays the channel's N newest stored messages and then follows live ones, with no gap and no duplicate across the switch (the WebSocket subscribe with since, docs/protocol.md "Recovery"). --since replays from an offset or a time (RFC 3339 or relative: -10m, -2h) the same way. Both take one channel and the ws transport.

                Examples:
                  stormctl subscribe chat.lobby
                  stormctl subscribe chat.lobby news.eu --transport sse
                  stormctl subscribe chat.lobby --count 1 --raw | jq .text
                  stormctl subscribe chat.lobby --last 10
                  stormctl subscribe chat.lobby --since -5m

                \(ExitStatus.helpText)
                """
        )

        enum Transport: String, ExpressibleByArgument, CaseIterable {
            case ws
            case sse
        }

        @OptionGroup var global: GlobalOptions

        @Argument(help: "Channels to subscribe to.")
        var channels: [String]

        @Option(name: .long, help: "ws (WebSocket /ws) or sse (Server-Sent Events /events).")
        var transport: Transport = .ws

        @Flag(name: .long, help: "Print only each payload, decoded.")
        var raw = false

        @Option(name: .long, help: "Exit 0 after N messages.")
        var count: Int?

        @Option(name: .long, help: "Replay the N newest stored messages, then follow live (1 to 10000).")
        var last: Int?

        @Option(name: .long, parsing: .unconditional, help: "Replay from this offset, or from this time (RFC 3339 or relative: -10m, -2h), then follow live.")
        var since: String?

        func validate() throws {
            if channels.isEmpty { throw ValidationError("name at least one channel") }
            if let count, count < 1 { throw ValidationError("--count must be at least 1") }
            if let last, !(1...10_000).contains(last) { throw ValidationError("--last must be from 1 to 10000") }
            if last != nil || since != nil {
                if last != nil && since != nil { throw ValidationError("use --last or --since, not both") }
                if channels.count != 1 { throw ValidationError("--last and --since take exactly one channel") }
                if transport != .ws { throw ValidationError("--last and --since need --transport ws") }
            }
        }

        /// `"since":{"offset":N,"epoch":"E"}` for --last/--since, or nil to start live.
        func resumePoint(_ endpoint: StormEndpoint, _ channel: ChannelName) async throws(StormError) -> (offset: UInt64, epoch: String?)? {
            guard last != nil || since != nil else { return nil }
            let client = StormHTTPClient(endpoint: endpoint)
            defer { Task { await client.close() } }
            let pager = HistoryPager(client: client, channel: channel)
            if let last { return try await pager.position(beforeNewest: last) }
            let epoch = try await pager.page(after: 0, limit: 1)?.epoch
            switch try HistoryPosition(parsing: since ?? "0", now: Date().timeIntervalSince1970 * 1000) {
            case .offset(let offset): return (offset, epoch)
            case .time(let milliseconds):
                if let offset = try await pager.offset(before: milliseconds) { return (offset, epoch) }
                // Nothing stored at or after the time: start after the newest message.
                return try await pager.page(after: 0, limit: 1).map { ($0.latest, $0.epoch) }
            }
        }

        func run() async throws {
            try await reportingFailures {
                let endpoint = try global.endpoint()
                var names: [ChannelName] = []
                for channel in channels { names.append(try ChannelName(validating: channel)) }
                let resume = try await resumePoint(endpoint, names[0])
                let (events, continuation) = AsyncStream.makeStream(of: StreamEvent.self)
                let factory: StormStreamDelegateFactory = { _ in ForwardingDelegate(continuation) }
                let closeConnection: @Sendable () -> Void
                switch transport {
                case .ws:
                    let client = try await StormWebSocketClient.connect(to: endpoint, delegate: factory)
                    closeConnection = { client.closeImmediately() }
                    try await client.send(text: Self.subscribeRequest(names, since: resume))
                case .sse:
                    let client = try await StormSSEClient.connect(to: endpoint, channels: names, delegate: factory)
                    closeConnection = { client.closeImmediately() }
                }
                defer { closeConnection() }
                var printer = MessagePrinter(raw: raw, awaitingReply: transport == .ws)
                for await event in events {
                    switch event {
                    case .text(let bytes):
                        try printer.handle(bytes)
                    case .closed(let error):
                        throw error ?? StormError(.connection, "the server closed the connection")
                    }
                    if let count, printer.printed >= count { return }
                }
            }
        }

        static func subscribeRequest(_ channels: [ChannelName], since: (offset: UInt64, epoch: String?)? = nil) -> String {
            var request = #"{"id":1,"op":"subscribe","channels":["#
            for (index, channel) in channels.enumerated() {
                if index > 0 { request += "," }
                JSONWriter.appendString(channel.rawValue, to: &request)
            }
            request += "]"
            if let since {
                request += #","since":{"offset":\#(since.offset)"#
                if let epoch = since.epoch { request += #","epoch":"# + JSONWriter.quoted(epoch) }
                request += "}"
            }
            return request + "}"
        }
    }
}

enum StreamEvent: Sendable {
    case text([UInt8])
    case closed(StormError?)
}

/// Hands each frame to the command's task; the command is one connection, so an unbounded stream is fine.
final class ForwardingDelegate: StormStreamDelegate {
    private let continuation: AsyncStream<StreamEvent>.Continuation

    init(_ continuation: AsyncStream<StreamEvent>.Continuation) {
        self.continuation = continuation
    }

    func streamDidReceive(text: ByteBuffer) {
        continuation.yield(.text(Array(text.readableBytesView)))
    }

    func streamDidClose(error: StormError?) {
        continuation.yield(.closed(error))
        continuation.finish()
    }
}

/// Decides what each server frame means for `subscribe` and prints messages.
///
/// Messages that arrive before the reply to `subscribe` are held back, so nothing is printed for a
/// subscription the server then refuses.
struct MessagePrinter {
    let raw: Bool
    private(set) var awaitingReply: Bool
    private(set) var printed = 0
    private var heldBack: [[UInt8]] = []

    init(raw: Bool, awaitingReply: Bool) {
        self.raw = raw
        self.awaitingReply = awaitingReply
    }

    mutating func handle(_ frame: [UInt8]) throws(StormError) {
        let kind = frame.withUnsafeBytes { EnvelopeProbe.kind($0) }
        switch kind {
        case .message:
            if awaitingReply {
                heldBack.append(frame)
            } else {
                try printMessage(frame)
            }
        case .reply where awaitingReply:
            awaitingReply = false
            for message in heldBack { try printMessage(message) }
            heldBack = []
        case .error:
            let error = Self.serverError(frame)
            if awaitingReply { throw error }
            StandardError.write("stormctl: \(error.message)\n")
        default:
            break
        }
    }

    private mutating func printMessage(_ frame: [UInt8]) throws(StormError) {
        if raw {
            let envelope: Envelope
            do {
                envelope = try Envelope(decoding: frame)
            } catch {
                throw StormError(.protocolViolation, "the server sent an unreadable message: \(error.message)")
            }
            StandardOutput.write(envelope.rawOutputLine)
        } else {
            StandardOutput.write(frame + [0x0A])
        }
        printed += 1
    }

    /// `{"type":"error","id":…,"error":{"code":…,"message":…}}` as the server's `StormError`.
    static func serverError(_ frame: [UInt8]) -> StormError {
        if let members = try? JSONScanner.objectMembers(frame), let inner = members["error"],
            let details = try? JSONScanner.objectMembers(inner),
            let code = details["code"].flatMap({ try? JSONScanner.string($0) })
        {
            let message = details["message"].flatMap { try? JSONScanner.string($0) } ?? code
            return StormError(StormError.Code(rawValue: code), message)
        }
        return StormError(.protocolViolation, "the server sent an unreadable error: \(String(decoding: frame.prefix(200), as: UTF8.self))")
    }
}
