import NIOCore
import NIOHTTP1
import StormBroker
import StormCore
import StormObservability

/// `POST /api/v1/broadcast` (one message, many channels) and `POST /api/v1/publish/batch` (many messages
/// in one NDJSON request), docs/protocol.md. Both publish through `Publisher`, the one publish path, with
/// its checks (size, drain, idempotency keys) and metrics; each channel is authorized for publishing like
/// `POST /publish`, and reserved `_` names are refused by `ChannelName`.
package enum PublishRoutes {
    package static let broadcastPath = "/api/v1/broadcast"
    package static let batchPath = "/api/v1/publish/batch"
    /// Most channels one broadcast names.
    package static let maxBroadcastChannels = 100
    /// Most lines (messages) one batch carries.
    package static let maxBatchLines = 1000
    /// Largest batch body: 4 MiB, or 16 messages of `--max-message-size` if that is more.
    package static func batchBodyLimit(maxMessageSize: Int) -> Int { max(4 << 20, maxMessageSize.multipliedReportingOverflow(by: 16).partialValue) }

    package static func handles(_ path: String) -> Bool { path == broadcastPath || path == batchPath }

    /// The body limit of a request to `path`: these two routes carry more than one message's payload.
    package static func bodyLimit(path: String, maxMessageSize: Int) -> Int {
        switch path {
        case batchPath: return batchBodyLimit(maxMessageSize: maxMessageSize)
        case broadcastPath: return maxMessageSize + 64 * 1024
        default: return maxMessageSize
        }
    }

    /// Who publishes: for permissions, the publish hook and trace context.
    private struct Origin {
        var principal: Principal
        var client: String
        var trace: TraceHeaders?
        var traceparent: String?

        func publish(
            _ payload: [UInt8], _ encoding: PayloadEncoding, on channel: ChannelName, key: String?, gateway: GatewayContext, eventLoop: any EventLoop
        ) -> EventLoopFuture<(Envelope, PublishReceipt)> {
            gateway.publish(
                payload, encoding: encoding, on: channel, idempotencyKey: key, via: .http, trace: trace, traceparent: traceparent, principal: principal,
                client: client, eventLoop: eventLoop)
        }
    }

    package struct Answer {
        package var status: HTTPResponseStatus
        package var contentType: String
        package var body: ByteBuffer
    }

    package static func route(
        method: HTTPMethod, path: String, head: HTTPRequestHead, body: ByteBuffer, principal: Principal, client: String, gateway: GatewayContext,
        eventLoop: any EventLoop
    ) -> EventLoopFuture<Answer> {
        guard method == .POST else {
            return eventLoop.makeFailedFuture(StormError(.methodNotAllowed, "\(method) is not allowed on \(path): POST"))
        }
        guard !gateway.state.isDraining else {
            return eventLoop.makeFailedFuture(StormError(.shuttingDown, "the gateway is shutting down; publish to another gateway"))
        }
        let trace = gateway.publisher.tracing == nil ? nil : TraceHeaders(head.headers)
        let origin = Origin(principal: principal, client: client, trace: trace, traceparent: head.headers.first(name: "traceparent"))
        do throws(StormError) {
            if path == broadcastPath {
                return try broadcast(Array(body.readableBytesView), origin: origin, gateway: gateway, eventLoop: eventLoop)
            }
            return try batch(Array(body.readableBytesView), origin: origin, gateway: gateway, eventLoop: eventLoop)
        } catch {
            return eventLoop.makeFailedFuture(error)
        }
    }

    // MARK: Broadcast

    /// `{"channels":[…],"data":…}`: every channel is checked before anything is published, so a refused
    /// channel refuses the whole request; then each channel's publish answers on its own (a broker error
    /// on one does not hide the others' offsets): `{"results":[{"channel":…,"id":…,"offset":N}|{"channel":…,"error":{…}}]}`.
    private static func broadcast(
        _ bytes: [UInt8], origin: Origin, gateway: GatewayContext, eventLoop: any EventLoop
    ) throws(StormError) -> EventLoopFuture<Answer> {
        let members: [String: [UInt8]]
        do {
            members = try JSONScanner.objectMembers(bytes)
        } catch {
            throw StormError(.badRequest, "broadcast body is not a JSON object: \(error)")
        }
        guard let rawChannels = members["channels"], let names = try? JSONScanner.stringArray(rawChannels), !names.isEmpty else {
            throw StormError(.badRequest, "broadcast needs 'channels': a non-empty array of channel names")
        }
        var channels: [ChannelName] = []
        for name in names {
            let channel = try ChannelName(validating: name)
            if !channels.contains(channel) { channels.append(channel) }
        }
        guard channels.count <= maxBroadcastChannels else {
            throw StormError(.badRequest, "broadcast names \(channels.count) channels; one request may name at most \(maxBroadcastChannels)")
        }
        for channel in channels { try gateway.auth.authorize(.publish, channel, origin.principal) }
        let (payload, encoding) = try PublishFields.payload(members)
        try gateway.publisher.checkSize(payload.count)
        let key = try PublishFields.idempotencyKey(members)
        if let key { try Publisher.validateIdempotencyKey(key) }
        let futures = channels.map { channel in
            origin.publish(payload, encoding, on: channel, key: key, gateway: gateway, eventLoop: eventLoop)
        }
        return EventLoopFuture.whenAllComplete(futures, on: eventLoop).map { outcomes in
            var parts: [String] = []
            for (channel, outcome) in zip(channels, outcomes) {
                parts.append(resultObject(outcome, channel: channel, line: nil))
            }
            return Answer(status: .ok, contentType: "application/json", body: ByteBuffer(string: "{\"results\":[" + parts.joined(separator: ",") + "]}\n"))
        }
    }

    // MARK: Batch

    /// NDJSON, one `{"channel":…,"data":…,"idempotency_key":…}` a line (blank lines skipped), answered
    /// with one NDJSON line per message, in order: `{"line":N,"id":…,"channel":…,"ts":…,"offset":M}`, or
    /// `{"line":N,"error":{"code":…,"message":…}}` for a line refused or not stored. The messages are
    /// handed to the broker in line order, so each channel stores them in that order.
    private static func batch(
        _ bytes: [UInt8], origin: Origin, gateway: GatewayContext, eventLoop: any EventLoop
    ) throws(StormError) -> EventLoopFuture<Answer> {
        var lines: [(number: Int, bytes: ArraySlice<UInt8>)] = []
        for (index, line) in bytes.split(separator: 0x0A, omittingEmptySubsequences: false).enumerated() {
            guard line.contains(where: { $0 != 0x20 && $0 != 0x09 && $0 != 0x0D }) else { continue }
            guard lines.count < maxBatchLines else {
                throw StormError(.badRequest, "the batch holds more than \(maxBatchLines) messages: send at most \(maxBatchLines) lines per request")
            }
            lines.append((index + 1, line))
        }
        guard !lines.isEmpty else { throw StormError(.badRequest, "the batch holds no message: one JSON object per line") }
        var pending: [(line: Int, channel: ChannelName?, future: EventLoopFuture<(Envelope, PublishReceipt)>)] = []
        for (number, line) in lines {
            do throws(StormError) {
                let members: [String: [UInt8]]
                do {
                    members = try JSONScanner.objectMembers(JSONScanner.compacted(Array(line)))
                } catch {
                    throw StormError(.badRequest, "line \(number) is not a JSON object")
                }
                guard let rawChannel = members["channel"], let name = try? JSONScanner.string(rawChannel) else {
                    throw StormError(.badRequest, "line \(number) needs a 'channel' string")
                }
                let channel = try ChannelName(validating: name)
                try gateway.auth.authorize(.publish, channel, origin.principal)
                let (payload, encoding) = try PublishFields.payload(members)
                let key = try PublishFields.idempotencyKey(members)
                pending.append(
                    (number, channel, origin.publish(payload, encoding, on: channel, key: key, gateway: gateway, eventLoop: eventLoop)))
            } catch {
                gateway.metrics.countClientError(error.code)
                pending.append((number, nil, eventLoop.makeFailedFuture(error)))
            }
        }
        return EventLoopFuture.whenAllComplete(pending.map(\.future), on: eventLoop).map { outcomes in
            var out = ByteBuffer()
            for (entry, outcome) in zip(pending, outcomes) {
                out.writeString(resultObject(outcome, channel: entry.channel, line: entry.line))
                out.writeStaticString("\n")
            }
            return Answer(status: .ok, contentType: "application/x-ndjson", body: out)
        }
    }

    /// One publish's outcome as a JSON object: the publish answer of `POST /publish` (with `line` first
    /// for a batch), or `{"channel":…,"error":{…}}`.
    private static func resultObject(_ outcome: Result<(Envelope, PublishReceipt), any Error>, channel: ChannelName?, line: Int?) -> String {
        let prefix = line.map { "{\"line\":\($0)," } ?? "{"
        switch outcome {
        case .success(let (envelope, receipt)):
            return prefix + WebSocketSession.publishResult(envelope, receipt).dropFirst()
        case .failure(let error):
            let stormError = (error as? StormError) ?? StormError(.internalError, "unexpected error: \(error)")
            var object = prefix
            if let channel { object += "\"channel\":" + JSONWriter.quoted(channel.rawValue) + "," }
            return object + stormError.jsonBody.dropFirst()
        }
    }
}
