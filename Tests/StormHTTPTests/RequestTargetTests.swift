import StormTestSupport
import Testing

@testable import StormBroker
@testable import StormConfiguration
@testable import StormConsumer
@testable import StormGateway
@testable import StormNATS
@testable import StormObservability
@testable import StormPresence
@testable import StormStore

@Suite("Request targets")
struct RequestTargetTests {
    @Test func pathAndQueryAreSplitAndDecoded() {
        let target = RequestTarget("/events?subject=a.b&subject=c%2Ed&since=12&flag&name=x+y%20z&bad=%4")
        #expect(target.path == "/events")
        #expect(target.values(of: "subject") == ["a.b", "c.d"])
        #expect(target.values(of: "since") == ["12"])
        #expect(target.values(of: "flag") == [""])
        #expect(target.values(of: "name") == ["x y z"])
        #expect(target.values(of: "bad") == ["%4"])  // a malformed escape stays literal
        #expect(target.values(of: "missing").isEmpty)
    }

    @Test func noQuery() {
        let target = RequestTarget("/publish")
        #expect(target.path == "/publish")
        #expect(target.query.isEmpty)
        #expect(RequestTarget("/x?").query.isEmpty)
    }

    @Test func multiByteTextSurvives() {
        #expect(RequestTarget.percentDecode("caf%C3%A9"[...]) == "café")
        #expect(RequestTarget("/p?n=é").values(of: "n") == ["é"])
    }
}
