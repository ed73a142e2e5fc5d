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

// MARK: - Decision types (no server)

@Suite("Stream settings: plan, backoff, refusals")
struct StreamSettingsTests {
    private func existing(replicas: Int = 1, maxBytes: Int64 = -1, maxMessages: Int64 = -1, discard: StreamDiscard = .old) -> StreamLimits {
        StreamLimits(
            subjects: ["storm.ch.>"], replicas: replicas, maxBytes: maxBytes, maxMessages: maxMessages,
            maxAgeNanoseconds: nanoseconds(.seconds(24 * 3600)), discard: discard)
    }

    @Test("no stream: create; same settings: unchanged")
    func createAndUnchanged() {
        let configuration = JetStreamStreamConfiguration()
        #expect(StreamPlan.decide(existing: nil, configuration: configuration) == .create)
        #expect(StreamPlan.decide(existing: existing(), configuration: configuration) == .unchanged)
    }

    @Test("a stream that differs is kept without --stream-update, one difference per setting")
    func keepsWithoutUpdate() {
        let configuration = JetStreamStreamConfiguration()
        let plan = StreamPlan.decide(existing: existing(replicas: 3, maxMessages: 1000, discard: .new), configuration: configuration)
        guard case .keep(let differences) = plan else {
            Issue.record("expected keep, got \(plan)")
            return
        }
        #expect(differences.map(\.setting) == ["replicas", "max_msgs", "discard"])
        #expect(differences[0].existing == "3" && differences[0].configured == "1" && differences[0].option == "--stream-replicas")
        #expect(differences[1].existing == "1000" && differences[1].configured == "unlimited")
        let warning = StreamPlan.keepWarning(stream: "STORM", differences[1])
        #expect(warning.contains("'STORM'") && warning.contains("max_msgs") && warning.contains("1000") && warning.contains("unlimited"))
        #expect(warning.contains("--stream-update"))
    }

    @Test("with --stream-update the stream is updated; lowering replicas needs --stream-replicas given explicitly")
    func updateAndReplicas() {
        var configuration = JetStreamStreamConfiguration(updateExisting: true)
        #expect(StreamPlan.decide(existing: existing(maxMessages: 1000), configuration: configuration).isUpdate)

        // 3 replicas, configured 1 by default: refused, never lowered silently.
        let refused = StreamPlan.decide(existing: existing(replicas: 3), configuration: configuration)
        guard case .refuseUpdate(let reason, _) = refused else {
            Issue.record("expected refuseUpdate, got \(refused)")
            return
        }
        #expect(reason.contains("from 3 to 1") && reason.contains("--stream-replicas"))

        configuration.replicasExplicit = true
        #expect(StreamPlan.decide(existing: existing(replicas: 3), configuration: configuration).isUpdate)

        // Raising needs nothing explicit.
        configuration = JetStreamStreamConfiguration(replicas: 3, updateExisting: true)
        #expect(StreamPlan.decide(existing: existing(replicas: 1), configuration: configuration).isUpdate)
    }

    @Test("backoff doubles from the initial delay to the cap, jitter stays within its fraction, no overflow")
    func backoff() {
        let backoff = RetryBackoff(initial: .milliseconds(250), cap: .seconds(10), jitter: 0.2)
        #expect(backoff.delay(attempt: 0, random: 0.5) == .milliseconds(250))
        #expect(backoff.delay(attempt: 1, random: 0.5) == .milliseconds(500))
        #expect(backoff.delay(attempt: 3, random: 0.5) == .milliseconds(2000))
        #expect(backoff.delay(attempt: 10, random: 0.5) == .seconds(10))
        #expect(backoff.delay(attempt: Int.max, random: 0.5) == .seconds(10))
        #expect(backoff.delay(attempt: -5, random: 0.5) == .milliseconds(250))
        #expect(backoff.delay(attempt: 10, random: 0) == .seconds(8))
        #expect(backoff.delay(attempt: 10, random: 1) == .seconds(12))
        let absurd = RetryBackoff(initial: .seconds(1), cap: .seconds(Int64.max), jitter: 1)
        #expect(absurd.delay(attempt: 100, random: 1) > .seconds(1))
        for attempt in 0..<50 {
            let delay = backoff.delay(attempt: attempt)
            #expect(delay >= .milliseconds(200) && delay <= .seconds(12))
        }
    }

    @Test("JetStream refusals for lack of room are storage_full; others stay broker_unavailable")
    func refusals() {
        #expect(PublishRefusal.code(errorCode: 10047, text: "insufficient storage resources available") == .storageFull)
        #expect(PublishRefusal.code(errorCode: 10077, text: "maximum bytes exceeded") == .storageFull)
        #expect(PublishRefusal.code(errorCode: 10077, text: "maximum messages exceeded") == .storageFull)
        #expect(PublishRefusal.code(errorCode: 10077, text: "some other store failure") == .brokerUnavailable)
        #expect(PublishRefusal.code(errorCode: 0, text: "maximum bytes exceeded") == .storageFull)
        #expect(PublishRefusal.code(errorCode: 10060, text: "expected stream does not match") == .brokerUnavailable)
        #expect(PublishRefusal.code(errorCode: 0, text: nil) == .brokerUnavailable)
        #expect(StormError.Code.storageFull.httpStatus == 507)
        #expect(StormError.Code.storageFull.rawValue == "storage_full")
        #expect(StormError(httpStatus: 507, body: []).code == .storageFull)
    }

    @Test("a full store warns at the first refusal, then once per interval, and recovers at the next stored message")
    func storageFullState() {
        var state = StorageFullState(warningInterval: .seconds(30))
        let start = NIODeadline.uptimeNanoseconds(1_000_000_000)
        #expect(!state.isFull)
        #expect(state.refused(at: start) == 1)
        #expect(state.isFull)
        #expect(state.refused(at: start + .seconds(1)) == nil)
        #expect(state.refused(at: start + .seconds(2)) == nil)
        #expect(state.refused(at: start + .seconds(31)) == 3)
        let recovered = state.stored()
        #expect(recovered)
        #expect(!state.isFull)
        let again = state.stored()
        #expect(!again)
        #expect(state.refused(at: start + .seconds(32)) == 1)
    }
}

extension StreamPlan {
    fileprivate var isUpdate: Bool {
        if case .update = self { return true }
        return false
    }
}

// MARK: - Configuration mapping

@Suite("Stream settings: configuration")
struct StreamConfigurationTests {
    private func configuration(_ flags: [Setting: String] = [:], environment: [String: String] = [:]) throws(StormError) -> GatewayConfiguration {
        try GatewayConfiguration(sources: ConfigurationSources(flags: flags, environment: environment))
    }

    @Test("defaults: 1 replica, unlimited bytes and messages, 24 h, discard old, no update")
    func defaults() throws {
        let stream = try configuration().stream
        #expect(stream.replicas == 1 && !stream.replicasExplicit)
        #expect(stream.maxBytes == -1 && stream.maxMessages == -1)
        #expect(stream.maxAge == .seconds(24 * 3600))
        #expect(stream.discard == .old && !stream.updateExisting)
    }

    @Test("flags, environment and sizes map onto the stream configuration; replicas count as explicit")
    func mapping() throws {
        let stream = try configuration(
            [.streamReplicas: "3", .streamMaxBytes: "64MiB", .streamDiscard: "new", .streamUpdate: "on"],
            environment: ["STORM_STREAM_MAX_MESSAGES": "5000", "STORM_STREAM_MAX_AGE": "7d"]
        ).stream
        #expect(stream.replicas == 3 && stream.replicasExplicit)
        #expect(stream.maxBytes == 64 << 20)
        #expect(stream.maxMessages == 5000)
        #expect(stream.maxAge == .seconds(7 * 24 * 3600))
        #expect(stream.discard == .new && stream.updateExisting)
        #expect(StreamLimits(stream).replicas == 3)
        #expect(try configuration([.streamMaxBytes: "-1", .streamMaxAge: "0"]).stream.maxBytes == -1)
        #expect(try configuration([.streamMaxAge: "unlimited"]).stream.maxAge == .zero)
    }

    @Test("invalid stream settings are configuration errors naming the option")
    func invalid() {
        for (setting, value) in [(Setting.streamReplicas, "0"), (.streamReplicas, "6"), (.streamDiscard, "oldest"), (.streamMaxBytes, "lots"), (.streamMaxMessages, "-5"), (.streamUpdate, "maybe")] {
            #expect {
                _ = try configuration([setting: value])
            } throws: { error in
                guard let error = error as? StormError else { return false }
                return error.code == .configuration && error.message.contains("--\(setting.rawValue)")
            }
        }
    }

    @Test("--print-config lists every stream setting, and the environment variables follow the keys")
    func printed() throws {
        let text = try configuration([.streamReplicas: "3", .streamDiscard: "new"]).rendered()
        for line in ["stream-replicas = 3", "stream-max-bytes = -1", "stream-max-messages = -1", "stream-max-age = 86400s", "stream-discard = new", "stream-update = off"] {
            #expect(text.contains(line), "missing \(line)")
        }
        #expect(Setting.streamMaxBytes.environmentVariable == "STORM_STREAM_MAX_BYTES")
        #expect(Setting.streamUpdate.environmentVariable == "STORM_STREAM_UPDATE")
    }
}
