import Foundation
import NIOCore
import NIOHTTP1
import StormCore
import StormStore

/// The admin API (docs/protocol.md, "Administration"); the request handler has checked the admin
/// capability before a request gets here.
///
/// | method and path | answer |
/// |---|---|
/// | `GET /api/v1/admin/users` | `{"users":[…]}` |
/// | `POST /api/v1/admin/users` `{"id","name","disabled"}` | 201 `{"user":{…}}` |
/// | `GET`, `PATCH`, `DELETE /api/v1/admin/users/{id}` | `{"user":{…}}` / `{"deleted":"id"}` |
/// | `POST /api/v1/admin/users/{id}/disconnect` | `{"user":"id","gateways":[…]}` |
/// | `GET /api/v1/admin/channels`, `POST` `{"pattern","options"}` | `{"channels":[…]}` / 201 `{"channel":{…}}` |
/// | `GET`, `PATCH` (or `PUT`) `{"options"}`, `DELETE /api/v1/admin/channels/{pattern}` | `{"channel":{…}}` / `{"deleted":"pattern"}` |
///
/// Disabling a user (`PATCH … {"disabled":true}`) also closes its open connections on every gateway.
package enum AdminRoutes {
    package static let prefix = "/api/v1/admin/"

    package static func handles(_ path: String) -> Bool { path.hasPrefix(prefix) || path == "/api/v1/admin" }

    package struct UserInput: Decodable {
        package var id: String?
        package var name: String?
        package var disabled: Bool?
    }

    package struct ChannelInput: Decodable {
        package var pattern: String?
        package var options: ChannelPolicy?
    }

    package static func route(method: HTTPMethod, target: RequestTarget, body: ByteBuffer, gateway: GatewayContext, eventLoop: any EventLoop) -> EventLoopFuture<PresenceRoutes.Answer> {
        let parts = target.path.dropFirst(prefix.count).split(separator: "/", omittingEmptySubsequences: false).map { RequestTarget.percentDecode($0) }
        let bytes = Array(body.readableBytesView)
        let promise = eventLoop.makePromise(of: PresenceRoutes.Answer.self)
        promise.completeWithTask {
            do {
                return try await handle(method: method, parts: parts, path: target.path, body: bytes, gateway: gateway)
            } catch {
                throw error
            }
        }
        return promise.futureResult
    }

    private static func handle(method: HTTPMethod, parts: [String], path: String, body: [UInt8], gateway: GatewayContext) async throws(StormError) -> PresenceRoutes.Answer {
        let auth = gateway.auth
        let store = auth.store
        switch (parts.count, parts.first ?? "", method) {
        case (1, "users", .GET):
            return answer(.ok, ["users": try await store.users()])
        case (1, "users", .POST):
            let input: UserInput = try decode(body)
            guard let id = input.id else { throw StormError(.badRequest, "a new user needs an 'id'") }
            let user = try await store.createUser(id: id, name: input.name ?? id, disabled: input.disabled ?? false)
            try await auth.refresh()
            return answer(.created, ["user": user])
        case (2, "users", .GET):
            guard let user = try await store.user(id: parts[1]) else { throw StormError(.notFound, "no user '\(parts[1])' (stormctl user list shows them)") }
            return answer(.ok, ["user": user])
        case (2, "users", .PATCH), (2, "users", .PUT):
            let input: UserInput = try decode(body)
            let user = try await store.updateUser(id: parts[1], name: input.name, disabled: input.disabled)
            try await auth.refresh()
            if input.disabled == true {
                // This gateway refuses the user now; the others within a refresh. Open connections are
                // closed on every gateway through the broker.
                _ = try? await gateway.presence.disconnectEverywhere(user: user.id)
            }
            return answer(.ok, ["user": user])
        case (2, "users", .DELETE):
            try await store.deleteUser(id: parts[1])
            try await auth.refresh()
            return answer(.ok, ["deleted": parts[1]])
        case (3, "users", .POST) where parts[2] == "disconnect":
            let reason = try PresenceRoutes.disconnectReason(ByteBuffer(bytes: body))
            let gateways = try await gateway.presence.disconnectEverywhere(user: parts[1], reason: reason)
            return PresenceRoutes.Answer(
                status: .ok,
                body: ByteBuffer(string: "{\"user\":\(JSONWriter.quoted(parts[1])),\"gateways\":[\(gateways.map(JSONWriter.quoted).joined(separator: ","))]}\n"))
        case (1, "channels", .GET):
            return answer(.ok, ["channels": try await store.channels()])
        case (1, "channels", .POST):
            let input: ChannelInput = try decode(body)
            guard let pattern = input.pattern else { throw StormError(.badRequest, "a new channel needs a 'pattern' (*, chat.* or an exact name)") }
            let rule = try await store.createChannel(pattern: pattern, options: input.options ?? ChannelPolicy())
            try await auth.refresh()
            return answer(.created, ["channel": rule])
        case (2, "channels", .GET):
            let pattern = try ChannelRule.normalize(parts[1])
            guard let rule = try await store.channels().first(where: { $0.pattern == pattern }) else {
                throw StormError(.notFound, "no channel '\(pattern)' (stormctl channel list shows them)")
            }
            return answer(.ok, ["channel": rule])
        case (2, "channels", .PATCH), (2, "channels", .PUT):
            let input: ChannelInput = try decode(body)
            let rule = try await store.updateChannel(pattern: parts[1], options: input.options ?? ChannelPolicy())
            try await auth.refresh()
            return answer(.ok, ["channel": rule])
        case (2, "channels", .DELETE):
            try await store.deleteChannel(pattern: parts[1])
            try await auth.refresh()
            return answer(.ok, ["deleted": parts[1]])
        case (_, "users", _), (_, "channels", _):
            if parts.count <= 3, !parts.contains(where: \.isEmpty) {
                throw StormError(.methodNotAllowed, "\(method) is not allowed on \(path)")
            }
            throw StormError(.notFound, "no route for \(path) (see docs/protocol.md, \"Administration\")")
        default:
            throw StormError(.notFound, "no route for \(path) (see docs/protocol.md, \"Administration\")")
        }
    }

    private static func decode<T: Decodable>(_ body: [UInt8]) throws(StormError) -> T {
        do {
            return try JSONDecoder().decode(T.self, from: Data(body.isEmpty ? Array("{}".utf8) : body))
        } catch {
            throw StormError(.badRequest, "request body is not the expected JSON object (see docs/protocol.md, \"Administration\")")
        }
    }

    private static func answer<T: Encodable>(_ status: HTTPResponseStatus, _ value: [String: T]) -> PresenceRoutes.Answer {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let data = (try? encoder.encode(value)) ?? Data("{}".utf8)
        var body = ByteBuffer(bytes: data)
        body.writeString("\n")
        return PresenceRoutes.Answer(status: status, body: body)
    }
}
