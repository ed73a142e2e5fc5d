import Foundation
import Logging
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

/// `HistoryAdmission` step by step: slots, the bounded line, withdrawal and handover.
@Suite("History read admission")
struct HistoryAdmissionTests {
    @Test("reads run up to the slots, then wait in line up to its bound, then are refused")
    func boundsRunningAndWaiting() {
        var admission = HistoryAdmission(maxRunning: 2, maxWaiting: 2)
        #expect(admission.admit(1) == .run)
        #expect(admission.admit(2) == .run)
        #expect(admission.admit(3) == .wait)
        #expect(admission.admit(4) == .wait)
        #expect(admission.isFull)
        #expect(admission.admit(5) == .refuse)
        #expect(admission.running == 2 && admission.waiting == [3, 4])
    }

    @Test("a finished read hands its slot to the first in line; with nobody waiting the slot is freed")
    func handover() {
        var admission = HistoryAdmission(maxRunning: 1, maxWaiting: 4)
        #expect(admission.admit(1) == .run)
        #expect(admission.admit(2) == .wait)
        #expect(admission.admit(3) == .wait)
        #expect(admission.finish() == 2)
        #expect(admission.running == 1)
        #expect(admission.finish() == 3)
        #expect(admission.finish() == nil)
        #expect(admission.running == 0)
        #expect(admission.admit(4) == .run)
    }

    @Test("a cancelled read that has not started leaves the line and never gets a slot")
    func withdrawSkipsCancelled() {
        var admission = HistoryAdmission(maxRunning: 1, maxWaiting: 4)
        #expect(admission.admit(1) == .run)
        #expect(admission.admit(2) == .wait)
        #expect(admission.admit(3) == .wait)
        let first = admission.withdraw(2)
        let second = admission.withdraw(2)
        let running = admission.withdraw(1)
        #expect(first)
        #expect(!second, "withdrawn twice")
        #expect(!running, "a running read is not in line")
        #expect(admission.finish() == 3)
        #expect(admission.finish() == nil)
        #expect(admission.running == 0)
    }

    @Test("a line of 0 refuses as soon as the slots are busy; bounds below 1 slot are raised to 1")
    func degenerateBounds() {
        var admission = HistoryAdmission(maxRunning: 0, maxWaiting: 0)
        #expect(admission.admit(1) == .run)
        #expect(admission.admit(2) == .refuse)
        #expect(admission.finish() == nil)
        #expect(admission.running == 0)
        #expect(admission.finish() == nil, "finishing more than ran must not go negative")
        #expect(admission.running == 0)
    }

    @Test("HistoryReader: a cancelled ticket reads nothing and is counted cancelled")
    func cancelledTicketIsSkipped() async throws {
        let broker = MemoryBroker()
        let metrics = GatewayMetrics(instanceID: "t")
        let reader = HistoryReader(broker: broker, metrics: metrics)
        let ticket = reader.makeTicket()
        reader.cancel(ticket)
        await #expect(throws: StormError.self) {
            _ = try await reader.read(try ChannelName(validating: "a"), after: 0, limit: 10, ticket: ticket)
        }
        let ok = reader.makeTicket()
        _ = try await reader.read(try ChannelName(validating: "a"), after: 0, limit: 10, ticket: ok)
        let text = String(decoding: metrics.exposition(brokerConnected: true, brokerSubscriptions: 0), as: UTF8.self)
        #expect(text.contains("storm_recovery_reads_total{outcome=\"cancelled\"} 1"))
        #expect(text.contains("storm_recovery_reads_total{outcome=\"ok\"} 1"))
    }
}

/// Recovery reads against a hung nats-server (SIGSTOP): bounded, cancelled with their connections, and
/// never in the way of new subscribes.
@Suite(
    "Recovery bounds",
    .enabled(if: NATSTestEnvironment.shouldRun, "STORM_TEST_NATS_URL is not set: run ./scripts/test to start nats-server"))
struct RecoveryBoundsTests {

    @Test("reads queued while the stream hangs are cancelled when their clients go, time out for the others, and a new subscribe is answered after the server resumes")
    func hungStream() async throws {
        _ = try NATSTestEnvironment.requireURL()
        let binary = try NATSTestEnvironment.requireServerBinary()
        let server = PrivateNATSServer(binary: binary, port: try await unusedPort())
        defer { server.stop() }
        try server.start()
        #expect(await server.waitUntilReady(), "private nats-server did not start")

        let id = UInt32.random(in: 0...UInt32.max)
        let prefix = "storm.test.rb\(id)"
        var configuration = NATSBrokerConfiguration(urls: [server.url], subjectPrefix: prefix, connectionName: "recovery-bounds", reconnectWait: .milliseconds(50))
        configuration.jetStream?.stream = JetStreamStreamConfiguration(name: "STORMRB\(id)", subjectPrefix: prefix)
        var logger = Logger(label: "storm.test.recovery-bounds")
        logger.logLevel = .critical
        let broker = NATSBroker(configuration: configuration, logger: logger)
        let gateway = try await TestGateway.start(broker: broker) { configuration in
            configuration.historyReads = HistoryReaderConfiguration(maxInFlight: 2, maxWaiting: 8, timeout: .seconds(2), saturationThreshold: .seconds(10))
        }
        var sockets: [TestWebSocket] = []
        do {
            // The channel is held by a live client, so later subscribes to it need no broker call and go
            // straight to recovery.
            let holder = try await TestWebSocket.connect(port: gateway.port)
            sockets.append(holder)
            #expect(try await holder.subscribe(["room"]).type == "reply")
            for n in 0..<3 { #expect(try await gateway.publish("room", "{\"n\":\(n)}").status == 200) }

            server.signal(SIGSTOP)
            // Ten resuming clients: two reads run (stuck on the server), eight wait in line.
            var leaving: [TestWebSocket] = []
            for n in 0..<10 {
                let client = try await TestWebSocket.connect(port: gateway.port)
                try await client.send("{\"id\":\(n),\"op\":\"subscribe\",\"channel\":\"room\",\"since\":{\"offset\":0}}")
                leaving.append(client)
            }
            let queued = try await eventually {
                try await gateway.metric("storm_recovery_reads_in_flight") == 2
            }
            #expect(queued, "the recovery reads never reached the hung server")
            for client in leaving { await client.close() }
            let cancelled = try await eventually {
                (try await gateway.metric("storm_recovery_reads_total{outcome=\"cancelled\"}") ?? 0) >= 8
            }
            #expect(cancelled, "the recovery reads of closed connections were not cancelled")

            // A client that stays gets its answer, recovered false with the reason, while the server hangs.
            let staying = try await TestWebSocket.connect(port: gateway.port)
            sockets.append(staying)
            try await staying.send("{\"id\":50,\"op\":\"subscribe\",\"channel\":\"room\",\"since\":{\"offset\":0}}")
            let answer = try await staying.next("reply", seconds: 30)
            #expect(answer.text.contains("\"recovered\":false"), "\(answer.text)")
            #expect(answer.text.contains("recovery_error"), "\(answer.text)")

            server.signal(SIGCONT)
            // A new channel (a broker subscription of its own) is answered once the server is back.
            let newcomer = try await TestWebSocket.connect(port: gateway.port)
            sockets.append(newcomer)
            try await newcomer.send("{\"id\":60,\"op\":\"subscribe\",\"channel\":\"fresh\"}")
            let fresh = try await newcomer.next("reply", seconds: 30)
            #expect(fresh.text.contains("fresh"), "\(fresh.text)")
            // And recovery works again.
            let resumed = try await eventually {
                let client = try await TestWebSocket.connect(port: gateway.port)
                return try await cleaningUp({ await client.close() }) {
                    try await client.send("{\"id\":70,\"op\":\"subscribe\",\"channel\":\"room\",\"since\":{\"offset\":0}}")
                    return try await client.next("reply", seconds: 30).text.contains("\"recovered\":true")
                }
            }
            #expect(resumed, "recovery did not work again after the server resumed")
        } catch {
            server.signal(SIGCONT)
            for socket in sockets { await socket.close() }
            await gateway.stop()
            throw error
        }
        for socket in sockets { await socket.close() }
        await gateway.stop()
    }
}
