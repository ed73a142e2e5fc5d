import Foundation
import NIOCore
import StormCore
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

/// The SIGTERM drain and keep-alive HTTP connections.
@Suite("Drain")
struct DrainTests {
    @Test("an idle keep-alive connection is closed at the start of the drain, not cut at its end")
    func idleKeepAliveClosedAtStart() async throws {
        // A long drain: before the fix the idle connection stayed open for all of it.
        let gateway = try await TestGateway.start { $0.drainSeconds = 60 }
        let idle = try await RawConnection.connect(port: gateway.port)
        let first = try await idle.request("GET", "/healthz")
        #expect(first.status == 200)
        let stopping = Task { await gateway.stop() }
        var closed = false
        do {
            try await idle.waitUntilClosed(seconds: 30)
            closed = true
        } catch {
            Issue.record("the idle keep-alive connection was not closed at the start of the drain: \(error)")
        }
        #expect(closed)
        await idle.close()
        await stopping.value
    }
}
