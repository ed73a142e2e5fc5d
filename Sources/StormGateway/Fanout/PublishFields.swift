import Foundation
import StormCore

/// The fields of a JSON publish request, shared by the WebSocket `publish` op, `POST /api/v1/broadcast`
/// and each line of `POST /api/v1/publish/batch`: `data` (any JSON value; a string is published as
/// text), optional `encoding: "base64"` with `data` a base64 string, optional `idempotency_key`.
package enum PublishFields {
    /// The payload bytes and how they are carried in the envelope.
    package static func payload(_ members: [String: [UInt8]]) throws(StormError) -> (bytes: [UInt8], encoding: PayloadEncoding) {
        guard let data = members["data"] else { throw StormError(.badRequest, "publish needs 'data'") }
        if let rawEncoding = members["encoding"] {
            guard (try? JSONScanner.string(rawEncoding)) == "base64" else {
                throw StormError(.badRequest, "'encoding' must be \"base64\" (or absent)")
            }
            guard let text = try? JSONScanner.string(data), let bytes = Data(base64Encoded: text) else {
                throw StormError(.badRequest, "'data' is not a valid base64 string")
            }
            return (Array(bytes), .base64)
        }
        if data.first == UInt8(ascii: "\"") {
            guard let text = try? JSONScanner.string(data) else { throw StormError(.badRequest, "'data' is not a valid JSON string") }
            return (Array(text.utf8), .text)
        }
        return (data, .json)
    }

    /// The optional `idempotency_key` string.
    package static func idempotencyKey(_ members: [String: [UInt8]]) throws(StormError) -> String? {
        guard let rawKey = members["idempotency_key"] else { return nil }
        guard let text = try? JSONScanner.string(rawKey) else { throw StormError(.badRequest, "'idempotency_key' must be a string") }
        return text
    }
}
