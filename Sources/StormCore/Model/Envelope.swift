import Foundation
import Atomics

/// How a payload is carried inside an envelope's `data` field.
public enum PayloadEncoding: String, Sendable {
    /// Valid JSON: embedded as is.
    case json
    /// UTF-8 text that is not JSON: embedded as a JSON string.
    case text
    /// Anything else: base64 of the bytes.
    case base64

    /// Picks the encoding that keeps `payload` intact and readable.
    public static func classify(_ payload: [UInt8]) -> PayloadEncoding {
        if JSONScanner.isValidDocument(payload) { return .json }
        if String(validating: payload, as: UTF8.self) != nil { return .text }
        return .base64
    }
}

/// One published message as every transport delivers it (see docs/protocol.md, "The envelope"). A JSON
/// payload is embedded compacted (whitespace outside strings removed) so every envelope is one line.
///
/// The gateway that accepts a publish builds the envelope once; NATS carries its bytes, and every gateway
/// frames those same bytes for WebSocket and SSE without parsing them again.
public struct Envelope: Sendable, Equatable {
    public var channel: ChannelName
    public var id: String
    /// Microseconds since the Unix epoch at which the publishing gateway accepted the message.
    public var timestampMicros: UInt64
    public var payload: [UInt8]
    public var encoding: PayloadEncoding
    /// The message's place in its channel's history, set by the gateway on delivery (`nil` before the
    /// broker stored it, or without history).
    public var offset: UInt64?

    public init(channel: ChannelName, id: String, timestampMicros: UInt64, payload: [UInt8], encoding: PayloadEncoding? = nil) {
        self.channel = channel
        self.id = id
        self.timestampMicros = timestampMicros
        self.payload = payload
        self.encoding = encoding ?? PayloadEncoding.classify(payload)
    }

    /// The `ts` field: milliseconds with a microsecond fraction, e.g. `1764403915123.456`.
    public static func formatTimestamp(_ micros: UInt64) -> String {
        let fraction = micros % 1000
        let pad = fraction < 10 ? "00" : (fraction < 100 ? "0" : "")
        return "\(micros / 1000).\(pad)\(fraction)"
    }

    /// The envelope's JSON bytes, in `EnvelopeLayout`'s field order.
    public func encoded() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(payload.count + channel.rawValue.utf8.count + 96)
        out.append(EnvelopeLayout.messagePrefix)
        out.append(EnvelopeLayout.channelKey)
        JSONWriter.appendString(utf8: channel.rawValue.utf8, to: &out)
        out.append(EnvelopeLayout.idKey)
        JSONWriter.appendString(utf8: id.utf8, to: &out)
        out.append(EnvelopeLayout.timestampKey)
        out.append(contentsOf: Self.formatTimestamp(timestampMicros).utf8)
        out.append(EnvelopeLayout.dataKey)
        switch encoding {
        case .json:
            out.append(contentsOf: JSONScanner.compacted(payload))
        case .text:
            JSONWriter.appendString(utf8: payload, to: &out)
        case .base64:
            out.append(UInt8(ascii: "\""))
            out.append(contentsOf: Data(payload).base64EncodedString().utf8)
            out.append(UInt8(ascii: "\""))
        }
        if encoding != .json {
            out.append(EnvelopeLayout.encodingKey)
            JSONWriter.appendString(utf8: encoding.rawValue.utf8, to: &out)
        }
        out.append(UInt8(ascii: "}"))
        return out
    }

    /// Reads an envelope back from its JSON (clients: `stormctl subscribe --raw`, `stormctl bench`).
    public init(decoding bytes: [UInt8]) throws(StormError) {
        let members: [String: [UInt8]]
        do {
            members = try JSONScanner.objectMembers(bytes)
        } catch {
            throw StormError(.protocolViolation, "envelope is not a JSON object")
        }
        guard let rawChannel = members["channel"], let rawID = members["id"], let rawData = members["data"],
            let rawTS = members["ts"], let ts = JSONScanner.number(rawTS)
        else {
            throw StormError(.protocolViolation, "envelope lacks channel, id, ts or data")
        }
        let channelString: String
        let id: String
        do {
            channelString = try JSONScanner.string(rawChannel)
            id = try JSONScanner.string(rawID)
        } catch {
            throw StormError(.protocolViolation, "envelope channel or id is not a string")
        }
        let encoding: PayloadEncoding
        if let rawEncoding = members["encoding"] {
            guard let name = try? JSONScanner.string(rawEncoding), let known = PayloadEncoding(rawValue: name) else {
                throw StormError(.protocolViolation, "envelope has an unknown encoding")
            }
            encoding = known
        } else {
            encoding = .json
        }
        let payload: [UInt8]
        switch encoding {
        case .json:
            payload = rawData
        case .text:
            guard let text = try? JSONScanner.string(rawData) else {
                throw StormError(.protocolViolation, "envelope text data is not a string")
            }
            payload = Array(text.utf8)
        case .base64:
            guard let text = try? JSONScanner.string(rawData), let data = Data(base64Encoded: text) else {
                throw StormError(.protocolViolation, "envelope base64 data is not valid base64")
            }
            payload = Array(data)
        }
        self.init(
            channel: try ChannelName(validating: channelString), id: id,
            timestampMicros: UInt64(clamping: (ts * 1000).rounded()), payload: payload, encoding: encoding)
        if let rawOffset = members["offset"], let number = JSONScanner.wholeNumber(rawOffset) {
            self.offset = number
        }
    }
}

/// Hands out message ids unique across gateways: a random per-process prefix and a counter.
public final class MessageIDGenerator: Sendable {
    private let prefix: String
    private let counter = ManagedAtomic<UInt64>(0)

    public init() {
        var generator = SystemRandomNumberGenerator()
        let value = generator.next() & 0xFFFF_FFFF_FFFF
        let hex = String(value, radix: 16)
        self.prefix = String(repeating: "0", count: max(0, 12 - hex.count)) + hex
    }

    /// The random part shared by every id of this process (also the gateway's instance id).
    public var instanceID: String { prefix }

    public func next() -> String {
        let n = counter.wrappingIncrementThenLoad(ordering: .relaxed)
        return "\(prefix)-\(n)"
    }
}

/// Wall-clock time in microseconds since the Unix epoch.
public func unixMicrosNow() -> UInt64 {
    var spec = timespec()
    clock_gettime(CLOCK_REALTIME, &spec)
    return UInt64(spec.tv_sec) * 1_000_000 + UInt64(spec.tv_nsec) / 1000
}
