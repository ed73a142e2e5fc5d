import NIOCore
import StormCore
import Testing

/// The client side of RFC 6455 that the bench's raw subscribers do themselves.
@Suite("Client handshake and frames")
struct ClientHandshakeTests {
    @Test("the accept value is the RFC 6455 example's")
    func acceptValue() {
        // RFC 6455 section 1.3.
        #expect(HandshakeCheck.accept(forKey: "dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    }

    @Test("a 101 answer passes only with Upgrade, Connection and the right accept")
    func answers() {
        let key = "dGhlIHNhbXBsZSBub25jZQ=="
        let good = "HTTP/1.1 101 Switching Protocols\r\nupgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        #expect(HandshakeCheck.problem(with: good, key: key) == nil)

        let refused = HandshakeCheck.problem(with: "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0", key: key)
        #expect(refused?.contains("HTTP/1.1 401 Unauthorized") == true)
        #expect(HandshakeCheck.problem(with: good.replacingOccurrences(of: "upgrade: WebSocket\r\n", with: ""), key: key)?.contains("Upgrade") == true)
        #expect(HandshakeCheck.problem(with: good.replacingOccurrences(of: "keep-alive, Upgrade", with: "close"), key: key)?.contains("Connection") == true)
        #expect(HandshakeCheck.problem(with: good.replacingOccurrences(of: "xOo=", with: "xOx="), key: key)?.contains("Accept") == true)
        #expect(HandshakeCheck.problem(with: "", key: key) != nil)
    }

    @Test("client frames carry the length in the right form and unmask to the payload", arguments: [0, 5, 125, 126, 65_535, 65_536])
    func masking(size: Int) {
        let payload = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        let frame = ClientFrame.masked(opcode: 0x1, payload: payload)
        #expect(frame[0] == 0x81)
        #expect(frame[1] & 0x80 == 0x80)
        var offset = 2
        var length = Int(frame[1] & 0x7F)
        if length == 126 {
            length = Int(frame[2]) << 8 | Int(frame[3])
            offset = 4
        } else if length == 127 {
            length = frame[2..<10].reduce(0) { $0 << 8 | Int($1) }
            offset = 10
        }
        #expect(length == size)
        #expect(size < 126 ? offset == 2 : size <= 65_535 ? offset == 4 : offset == 10)
        let mask = Array(frame[offset..<offset + 4])
        let unmasked = frame[(offset + 4)...].enumerated().map { $0.element ^ mask[$0.offset & 3] }
        #expect(unmasked == payload)
    }
}
