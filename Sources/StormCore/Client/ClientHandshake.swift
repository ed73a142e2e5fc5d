import Crypto
import Foundation

/// The client's side of RFC 6455 for clients that own their sockets (the bench's raw subscribers): frame
/// masking and the opening-handshake checks. `StormWebSocketClient` gets both from NIO's upgrader and
/// encoder instead.

/// Client frames are masked (RFC 6455 section 5.3).
public enum ClientFrame {
    /// A whole frame from the client: FIN set, payload masked with a fresh random key.
    public static func masked(opcode: UInt8, payload: [UInt8]) -> [UInt8] {
        var frame: [UInt8] = [0x80 | opcode]
        frame.reserveCapacity(payload.count + 14)
        if payload.count < 126 {
            frame.append(0x80 | UInt8(payload.count))
        } else if payload.count <= 0xFFFF {
            frame.append(0x80 | 126)
            frame.append(UInt8(payload.count >> 8))
            frame.append(UInt8(payload.count & 0xFF))
        } else {
            frame.append(0x80 | 127)
            for shift in stride(from: 56, through: 0, by: -8) { frame.append(UInt8((UInt64(payload.count) >> UInt64(shift)) & 0xFF)) }
        }
        let mask = (0..<4).map { _ in UInt8.random(in: 0...255) }
        frame.append(contentsOf: mask)
        for (index, byte) in payload.enumerated() { frame.append(byte ^ mask[index & 3]) }
        return frame
    }
}

/// Checks a server's opening handshake answer against the key the client sent (RFC 6455 section 4.1).
public enum HandshakeCheck {
    static let guid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

    /// The `Sec-WebSocket-Accept` a server must answer to `key`.
    public static func accept(forKey key: String) -> String {
        Data(Insecure.SHA1.hash(data: Array((key + guid).utf8))).base64EncodedString()
    }

    /// nil when the answer completes the handshake, else what is wrong with it.
    public static func problem(with head: String, key: String) -> String? {
        var lines = head.split(separator: "\r\n", omittingEmptySubsequences: false)[...]
        guard let status = lines.popFirst() else { return "the gateway sent an empty answer" }
        guard status.hasPrefix("HTTP/1.1 101") else {
            return "the gateway answered \"\(status.prefix(80))\" instead of 101 Switching Protocols"
        }
        var upgrade = false
        var connection = false
        var accepted = false
        let expected = accept(forKey: key)
        for line in lines {
            guard let colon = line.firstIndex(of: ":") else { continue }
            let name = line[..<colon].lowercased()
            let value = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            switch name {
            case "upgrade": upgrade = value.lowercased() == "websocket"
            case "connection": connection = value.lowercased().split(separator: ",").contains { $0.trimmingCharacters(in: .whitespaces) == "upgrade" }
            case "sec-websocket-accept": accepted = value == expected
            default: break
            }
        }
        if !upgrade { return "the gateway's 101 answer has no \"Upgrade: websocket\"" }
        if !connection { return "the gateway's 101 answer has no \"Connection: Upgrade\"" }
        if !accepted { return "the gateway's Sec-WebSocket-Accept does not match the key sent" }
        return nil
    }
}

