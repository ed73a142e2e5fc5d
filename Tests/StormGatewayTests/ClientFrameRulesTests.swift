import NIOCore
import NIOWebSocket
import StormGateway
import Testing

/// RFC 6455's rules for client frames, as decisions, without sockets (the same cases end to end are in
/// `BadInputTests`).
@Suite("Client frame rules")
struct ClientFrameRulesTests {
    @Test("masked text and continuation frames pass; control frames pass when whole and small")
    func accepted() {
        #expect(ClientFrameRules.violation(masked: true, reservedBits: false, opcode: .text, fin: false, length: 10) == nil)
        #expect(ClientFrameRules.violation(masked: true, reservedBits: false, opcode: .continuation, fin: true, length: 10) == nil)
        #expect(ClientFrameRules.violation(masked: true, reservedBits: false, opcode: .ping, fin: true, length: 125) == nil)
        #expect(ClientFrameRules.violation(masked: true, reservedBits: false, opcode: .connectionClose, fin: true, length: 2) == nil)
    }

    @Test("each breach gets the close code RFC 6455 names")
    func refused() {
        #expect(ClientFrameRules.violation(masked: false, reservedBits: false, opcode: .text, fin: true, length: 2)?.code == 1002)
        #expect(ClientFrameRules.violation(masked: true, reservedBits: true, opcode: .text, fin: true, length: 2)?.code == 1002)
        #expect(ClientFrameRules.violation(masked: true, reservedBits: false, opcode: .binary, fin: true, length: 2)?.code == 1003)
        #expect(ClientFrameRules.violation(masked: true, reservedBits: false, opcode: .ping, fin: false, length: 0)?.code == 1002)
        #expect(ClientFrameRules.violation(masked: true, reservedBits: false, opcode: .pong, fin: true, length: 126)?.code == 1002)
        let reserved = WebSocketOpcode(encodedWebSocketOpcode: 0x3)
        #expect(reserved.map { ClientFrameRules.violation(masked: true, reservedBits: false, opcode: $0, fin: true, length: 0)?.code } == 1002)
    }

    @Test("fragment sequences the aggregator refuses map to 1009 (too big) or 1002 (out of order)")
    func aggregatorErrors() {
        let limit = 1000
        #expect(ClientFrameRules.violation(for: .accumulatedFrameSizeIsTooLarge, maxMessageSize: limit, maxFragments: 8).code == 1009)
        #expect(ClientFrameRules.violation(for: .tooManyFragments, maxMessageSize: limit, maxFragments: 8).code == 1009)
        #expect(ClientFrameRules.violation(for: .receivedNewFrameWithoutFinishingPrevious, maxMessageSize: limit, maxFragments: 8).code == 1002)
        #expect(ClientFrameRules.violation(for: .didReceiveFragmentBeforeReceivingTextOrBinaryFrame, maxMessageSize: limit, maxFragments: 8).code == 1002)
        #expect(ClientFrameRules.violation(for: .accumulatedFrameSizeIsTooLarge, maxMessageSize: limit, maxFragments: 8).reason.contains("1000"))
    }
}
