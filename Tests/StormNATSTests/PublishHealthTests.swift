import Logging
import NIOCore
import NIOEmbedded
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

/// `/readyz` follows publish failures (issue #15, item 3): the state machine step by step, and the
/// acknowledgement table telling it, without a server.
@Suite("Publish health: readiness follows failed acknowledgements")
struct PublishHealthTests {
    @Test("three failures in a row make it failing; a stored publish ends it")
    func failuresInARow() {
        var state = PublishAckState(threshold: 3)
        let failedResult1 = state.failed(reason: "timeout")
        #expect(failedResult1 == .none)
        let failedResult2 = state.failed(reason: "timeout")
        #expect(failedResult2 == .none)
        #expect(!state.isFailing)
        #expect(state.problem(stream: "STORM") == nil)
        let failedResult3 = state.failed(reason: "no acknowledgement in time") == .failing(failures: 3, reason: "no acknowledgement in time")
        #expect(failedResult3)
        #expect(state.isFailing)
        let problem = state.problem(stream: "STORM") ?? ""
        #expect(problem.contains("last 3 publishes on stream 'STORM'"))
        #expect(problem.contains("no acknowledgement in time"))
        let failedResult4 = state.failed(reason: "timeout")  // reported once
        #expect(failedResult4 == .none)
        let storedResult1 = state.stored() == .recovered(failures: 4, byProbe: false)
        #expect(storedResult1)
        #expect(!state.isFailing)
        #expect(state.problem(stream: "STORM") == nil)
        let storedResult2 = state.stored()
        #expect(storedResult2 == .none)
    }

    @Test("a stored publish between failures restarts the count")
    func successInBetween() {
        var state = PublishAckState(threshold: 3)
        _ = state.failed(reason: "a")
        _ = state.failed(reason: "b")
        let storedResult3 = state.stored()
        #expect(storedResult3 == .none)
        _ = state.failed(reason: "c")
        _ = state.failed(reason: "d")
        #expect(!state.isFailing)
        let failedResult5 = state.failed(reason: "e") == .failing(failures: 3, reason: "e")
        #expect(failedResult5)
    }

    @Test("probes: only while failing, one at a time, at most one per interval; an answer ends it")
    func probes() {
        var state = PublishAckState(threshold: 2, probeInterval: .seconds(1))
        let start = NIODeadline.uptimeNanoseconds(5_000_000_000)
        let startProbeResult1 = state.startProbe(at: start)  // healthy: nothing to probe
        #expect(!startProbeResult1)
        _ = state.failed(reason: "timeout")
        _ = state.failed(reason: "timeout")
        let startProbeResult2 = state.startProbe(at: start)
        #expect(startProbeResult2)
        let startProbeResult3 = state.startProbe(at: start + .seconds(2))  // one is running
        #expect(!startProbeResult3)
        let probeFinishedResult1 = state.probeFinished(answered: false)
        #expect(probeFinishedResult1 == .none)
        #expect(state.isFailing)
        let startProbeResult4 = state.startProbe(at: start + .milliseconds(500))  // too soon after the last
        #expect(!startProbeResult4)
        let startProbeResult5 = state.startProbe(at: start + .seconds(1))
        #expect(startProbeResult5)
        let probeFinishedResult2 = state.probeFinished(answered: true) == .recovered(failures: 2, byProbe: true)
        #expect(probeFinishedResult2)
        #expect(!state.isFailing)
        let startProbeResult6 = state.startProbe(at: start + .seconds(5))
        #expect(!startProbeResult6)
    }

    @Test("the acknowledgement table counts timeouts and stored publishes")
    func ackTableTellsHealth() throws {
        let loop = EmbeddedEventLoop()
        let health = PublishHealth(stream: "STORM", endpoint: "nats://127.0.0.1:1", logger: Logger(label: "test"),
                                   state: PublishAckState(threshold: 2))
        let table = AckTable(publishHealth: health)
        let start = NIODeadline.now()
        for key in 1...2 {
            table.insert(UInt(key), loop.makePromise(of: PublishReceipt.self), deadline: start + .seconds(1), sweepingOn: loop)
        }
        table.expire(now: start + .seconds(2))
        #expect(health.problem?.contains("last 2 publishes") == true)
        health.stored()
        #expect(health.problem == nil)
        table.failAll(StormError(.brokerUnavailable, "closing"))
        try loop.syncShutdownGracefully()
    }

    @Test("an answered probe makes it ready again without a publish")
    func probeRecovers() async {
        let health = PublishHealth(stream: "STORM", endpoint: "nats://127.0.0.1:1", logger: Logger(label: "test"),
                                   state: PublishAckState(threshold: 1, probeInterval: .zero))
        health.failed(reason: "timeout")
        #expect(health.problem != nil)
        health.probeIfFailing { false }
        #expect(await eventually { health.problem != nil && !health.isProbing })
        health.probeIfFailing { true }
        #expect(await eventually { health.problem == nil })
    }

    @Test("a probe answer counts only from a leader that heard a quorum of its replicas recently")
    func quorum() {
        let fresh = StreamQuorum.Peer(current: true, offline: false, activeNanoseconds: 300_000_000)
        let silent = StreamQuorum.Peer(current: true, offline: false, activeNanoseconds: 9_000_000_000)
        let behind = StreamQuorum.Peer(current: false, offline: false, activeNanoseconds: 300_000_000)
        let offline = StreamQuorum.Peer(current: true, offline: true, activeNanoseconds: 300_000_000)
        #expect(StreamQuorum.reachable(leader: nil, peers: nil))            // one server: no cluster info
        #expect(StreamQuorum.reachable(leader: "n1", peers: []))             // R1 in a cluster
        #expect(StreamQuorum.reachable(leader: "n1", peers: [fresh, silent]))  // 2 of 3
        #expect(!StreamQuorum.reachable(leader: "n3", peers: [silent, silent]))  // a cut-off leader
        #expect(!StreamQuorum.reachable(leader: "n3", peers: [behind, offline]))
        #expect(!StreamQuorum.reachable(leader: "", peers: [fresh, fresh]))   // no leader
        #expect(!StreamQuorum.reachable(leader: "n1", peers: [fresh, silent, silent, silent]))  // 2 of 5
    }
}
