import NIOCore
import NIOHTTP1
import StormCore
import StormPresence

/// The presence and cluster API under `/api/v1/` (docs/protocol.md, "Presence"):
///
/// | method and path | answer |
/// |---|---|
/// | `GET /api/v1/channels/{channel}/presence` | `{"channel":…,"clients":[{"client","user","gateway","since","info"}…]}` |
/// | `GET /api/v1/channels/{channel}/presence-stats` | `{"channel":…,"clients":N,"users":M}` |
/// | `GET /api/v1/gateways` | `{"gateways":[{"id","http","metrics","version","started","heartbeat","presence"}…]}` |
/// | `POST /api/v1/clients/{client}/disconnect` | `{"client":…,"gateways":[…]}` once the request is published |
/// | `POST /api/v1/users/{user}/disconnect` | `{"user":…,"gateways":[…]}` |
///
/// Store reads block (Redis round trips), so they run on the tracker's reader threads and answer on the
/// connection's event loop. When the store is unreachable the answer is 503 `presence_unavailable`:
/// presence is degraded, but publishing and delivery still work.
package enum PresenceRoutes {
    package struct Answer: Sendable {
        package var status: HTTPResponseStatus
        package var body: ByteBuffer
    }


    /// Whether `path` belongs to this API (the router hands it every such request).
    package static func handles(_ path: String) -> Bool { path.hasPrefix("/api/v1/") }

    /// Answers one request; the future fails with a `StormError` for client errors (400, 404, 405).
    /// A disconnect request's body: empty, or `{"reason":"…"}` (the close frame's reason, cut to 123 bytes).
    package static func disconnectReason(_ body: ByteBuffer) throws(StormError) -> String? {
        let bytes = Array(body.readableBytesView)
        guard bytes.contains(where: { ![UInt8(ascii: " "), UInt8(ascii: "\n"), UInt8(ascii: "\r"), UInt8(ascii: "\t")].contains($0) }) else { return nil }
        guard let members = try? JSONScanner.objectMembers(bytes) else {
            throw StormError(.badRequest, "a disconnect request's body must be empty or a JSON object {\"reason\":\"…\"}")
        }
        guard let raw = members["reason"] else { return nil }
        guard let reason = try? JSONScanner.string(raw) else { throw StormError(.badRequest, "'reason' must be a string") }
        return PresenceTracker.disconnectReason(reason)
    }

    package static func route(method: HTTPMethod, target: RequestTarget, body: ByteBuffer = ByteBuffer(), gateway: GatewayContext, eventLoop: any EventLoop) -> EventLoopFuture<Answer> {
        let parts = target.path.dropFirst("/api/v1/".count).split(separator: "/", omittingEmptySubsequences: false).map {
            RequestTarget.percentDecode($0)
        }
        let tracker = gateway.presence
        // Degraded (the store is down) or resyncing (just reconnected, this gateway's entries not yet
        // rewritten): a read now would answer a wrong list with 200, so answer 503 until it is whole.
        if (parts.first == "gateways" || parts.last == "presence" || parts.last == "presence-stats"), let reason = tracker.unavailableReason {
            return eventLoop.makeFailedFuture(StormError(.presenceUnavailable, reason))
        }
        switch (parts.count, parts.first, parts.last) {
        case (1, "gateways", _):
            guard method == .GET || method == .HEAD else { return notAllowed(method, target, on: eventLoop) }
            return answer(tracker, on: eventLoop) { store in
                let records = try store.gateways()
                return "{\"gateways\":[" + records.map { String(decoding: $0.json(), as: UTF8.self) }.joined(separator: ",") + "]}"
            }
        case (3, "channels", "presence"), (3, "channels", "presence-stats"):
            guard method == .GET || method == .HEAD else { return notAllowed(method, target, on: eventLoop) }
            let channel: ChannelName
            do {
                channel = try ChannelName(validating: parts[1])
            } catch {
                return eventLoop.makeFailedFuture(error)
            }
            guard tracker.recordsPresence(channel) else {
                return eventLoop.makeFailedFuture(
                    StormError(.notFound, "presence is not enabled for channel '\(channel)': add it (or a pattern like '\(channel.rawValue.split(separator: ".").first ?? "").*') to --presence-channels"))
            }
            let statsOnly = parts[2] == "presence-stats"
            return answer(tracker, on: eventLoop) { store in
                let entries = try store.presence(in: channel)
                let name = JSONWriter.quoted(channel.rawValue)
                if statsOnly {
                    return "{\"channel\":\(name),\"clients\":\(entries.count),\"users\":\(Set(entries.map(\.user)).count)}"
                }
                return "{\"channel\":\(name),\"clients\":[" + entries.map { String(decoding: $0.json(), as: UTF8.self) }.joined(separator: ",") + "]}"
            }
        case (3, "clients", "disconnect"), (3, "users", "disconnect"):
            guard method == .POST else { return notAllowed(method, target, on: eventLoop) }
            let name = parts[1]
            guard !name.isEmpty else { return eventLoop.makeFailedFuture(StormError(.badRequest, "\(target.path) names no \(parts[0] == "users" ? "user" : "client")")) }
            let byUser = parts[0] == "users"
            let reason: String?
            do throws(StormError) { reason = try disconnectReason(body) } catch { return eventLoop.makeFailedFuture(error) }
            let promise = eventLoop.makePromise(of: Answer.self)
            Task {
                do {
                    let gateways = byUser ? try await tracker.disconnectEverywhere(user: name, reason: reason) : try await tracker.disconnectEverywhere(client: name, reason: reason)
                    let key = byUser ? "user" : "client"
                    let body = "{\"\(key)\":\(JSONWriter.quoted(name)),\"gateways\":[" + gateways.map { JSONWriter.quoted($0) }.joined(separator: ",") + "]}\n"
                    promise.succeed(Answer(status: .ok, body: ByteBuffer(string: body)))
                } catch {
                    promise.succeed(unavailable(error, store: tracker.store))
                }
            }
            return promise.futureResult
        default:
            return eventLoop.makeFailedFuture(StormError(.notFound, "no route for \(target.path) (see docs/protocol.md, \"Presence\")"))
        }
    }

    private static func notAllowed(_ method: HTTPMethod, _ target: RequestTarget, on eventLoop: any EventLoop) -> EventLoopFuture<Answer> {
        eventLoop.makeFailedFuture(StormError(.methodNotAllowed, "\(method) is not allowed on \(target.path)"))
    }

    /// Runs a store read on the reader threads; a store failure becomes a 503 answer.
    private static func answer(
        _ tracker: PresenceTracker, on eventLoop: any EventLoop, _ body: @escaping @Sendable (any PresenceStore) throws -> String
    ) -> EventLoopFuture<Answer> {
        let store = tracker.store
        return tracker.read(on: eventLoop, body).map { json in
            Answer(status: .ok, body: ByteBuffer(string: json + "\n"))
        }.flatMapErrorThrowing { error in
            unavailable(error, store: store)
        }
    }

    /// A store or broker failure: 503 with a code of its own, so clients can tell it from a broker outage.
    private static func unavailable(_ error: any Error, store: any PresenceStore) -> Answer {
        if let storm = error as? StormError, storm.code != .connection {
            return Answer(status: HTTPResponseStatus(statusCode: storm.code.httpStatus), body: ByteBuffer(string: storm.jsonBody + "\n"))
        }
        let reason = (error as? StormError)?.message ?? "\(error)"
        let storm = StormError(
            .presenceUnavailable,
            "presence store \(store.endpointDescription) is unavailable (\(reason)); messages still flow, presence returns when the store does")
        return Answer(status: .serviceUnavailable, body: ByteBuffer(string: storm.jsonBody + "\n"))
    }
}
