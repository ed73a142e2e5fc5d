import Atomics
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// Whether JetStream acknowledges this gateway's publishes: a plain state machine (`PublishHealth` holds
/// one under a lock), so `/readyz` can follow what publishing actually does.
///
/// A gateway cut off by a network partition keeps its NATS connection (to the node beside it) while every
/// publish waits for JetStream's acknowledgement and fails (issue #15, item 3): the connection status alone
/// says "ready". After `threshold` publishes in a row failed as unavailable (acknowledgement timeout, or
/// JetStream answering that it cannot store now) with none stored in between, the state is *failing* and
/// `/readyz` answers 503 with the reason. It ends when a publish is stored, or when a probe of the stream
/// (`js_GetStreamInfo`, answered by the stream's leader; at most one at a time, at most one every
/// `probeInterval`) is answered: the connection reaches JetStream again. Refusals for lack of room are
/// `StorageFullState`'s, not counted here.
///
/// - `threshold` (`Int`, 3): failures in a row that make the state failing.
/// - `probeInterval` (`TimeAmount`, 1 s): the least time between two probes while failing.
package struct PublishAckState: Sendable, Equatable {
    package static let defaultThreshold = 3

    package let threshold: Int
    package let probeInterval: TimeAmount
    /// Publishes failed as unavailable since the last one stored (or the last answered probe).
    private(set) var consecutiveFailures = 0
    /// Why the last one failed.
    private(set) var lastFailure: String?
    /// A probe is running.
    private(set) var probing = false
    private var lastProbe: NIODeadline?

    /// What a step changes, for the log.
    package enum Transition: Sendable, Equatable {
        case none
        /// The threshold was reached: not ready from now on.
        case failing(failures: Int, reason: String)
        /// A stored publish (`byProbe` false) or an answered probe ended a failing period.
        case recovered(failures: Int, byProbe: Bool)
    }

    package init(threshold: Int = PublishAckState.defaultThreshold, probeInterval: TimeAmount = .seconds(1)) {
        self.threshold = max(1, threshold)
        self.probeInterval = probeInterval
    }

    package var isFailing: Bool { consecutiveFailures >= threshold }

    /// A publish failed as unavailable (timeout, or JetStream could not store it now).
    package mutating func failed(reason: String) -> Transition {
        consecutiveFailures += 1
        lastFailure = reason
        return consecutiveFailures == threshold ? .failing(failures: consecutiveFailures, reason: reason) : .none
    }

    /// A publish was stored.
    package mutating func stored() -> Transition {
        reset(byProbe: false)
    }

    /// Whether `/readyz` should start a probe now (failing, none running, the last one long enough ago);
    /// if so, one is marked running.
    package mutating func startProbe(at now: NIODeadline) -> Bool {
        guard isFailing, !probing else { return false }
        if let lastProbe, now - lastProbe < probeInterval { return false }
        probing = true
        lastProbe = now
        return true
    }

    /// The probe ended: `answered` when JetStream answered it.
    package mutating func probeFinished(answered: Bool) -> Transition {
        probing = false
        return answered ? reset(byProbe: true) : .none
    }

    /// The reason for `/readyz` while failing, else nil.
    package func problem(stream: String) -> String? {
        guard isFailing else { return nil }
        return "JetStream did not store the last \(consecutiveFailures) publishes on stream '\(stream)' (last: \(lastFailure ?? "unknown")): the stream's leader is unreachable from here (a partition, or an election in progress); ready again once a publish is stored or JetStream answers"
    }

    private mutating func reset(byProbe: Bool) -> Transition {
        let failures = consecutiveFailures
        let wasFailing = isFailing
        consecutiveFailures = 0
        lastFailure = nil
        return wasFailing ? .recovered(failures: failures, byProbe: byProbe) : .none
    }
}

/// `PublishAckState` under a lock, told by every acknowledgement, read by `/readyz`. The success path
/// costs one relaxed atomic load while nothing failed.
package final class PublishHealth: Sendable {
    private let anyFailure = ManagedAtomic(false)
    private let state: NIOLockedValueBox<PublishAckState>
    private let stream: String
    private let endpoint: String
    private let logger: Logger

    package init(stream: String, endpoint: String, logger: Logger, state: PublishAckState = PublishAckState()) {
        self.stream = stream
        self.endpoint = endpoint
        self.logger = logger
        self.state = NIOLockedValueBox(state)
    }

    /// A publish failed as unavailable.
    package func failed(reason: String) {
        log(state.withLockedValue { state in
            anyFailure.store(true, ordering: .relaxed)
            return state.failed(reason: reason)
        })
    }

    /// A publish was stored.
    package func stored() {
        guard anyFailure.load(ordering: .relaxed) else { return }
        log(state.withLockedValue { state in
            anyFailure.store(false, ordering: .relaxed)
            return state.stored()
        })
    }

    /// Why publishes are failing, or nil.
    package var problem: String? {
        guard anyFailure.load(ordering: .relaxed) else { return nil }
        return state.withLockedValue { $0.problem(stream: stream) }
    }

    /// A probe is running.
    package var isProbing: Bool { state.withLockedValue { $0.probing } }

    /// Starts `probe` (blocking; true when JetStream answered) in the background when one is due.
    package func probeIfFailing(_ probe: @escaping @Sendable () -> Bool) {
        guard state.withLockedValue({ $0.startProbe(at: .now()) }) else { return }
        Task {
            let answered = await runBlocking(on: Self.probeThread) { probe() }
            self.log(self.state.withLockedValue { state in
                let transition = state.probeFinished(answered: answered)
                if !state.isFailing && state.consecutiveFailures == 0 { self.anyFailure.store(false, ordering: .relaxed) }
                return transition
            })
        }
    }

    /// The probes' own thread: a probe waiting on an unreachable leader never holds a thread that a
    /// subscribe or a history read needs. Started once, never stopped (like `HistoryThreads`).
    package static let probeThread: NIOThreadPool = {
        let pool = NIOThreadPool(numberOfThreads: 1)
        pool.start()
        return pool
    }()

    private func log(_ transition: PublishAckState.Transition) {
        switch transition {
        case .none:
            return
        case .failing(let failures, let reason):
            logger.warning(
                "JetStream stored none of the last \(failures) publishes (last: \(reason)); /readyz answers 503 until a publish is stored or JetStream answers",
                metadata: ["nats.stream": "\(stream)", "nats.url": "\(endpoint)"])
        case .recovered(let failures, let byProbe):
            logger.notice(
                byProbe ? "JetStream answers again after \(failures) failed publishes; /readyz is 200 again" : "JetStream stores publishes again after \(failures) failed",
                metadata: ["nats.stream": "\(stream)", "nats.url": "\(endpoint)"])
        }
    }
}

/// Whether a stream's answer to `STREAM.INFO` shows a leader in contact with a quorum of its replicas.
///
/// A leader cut off by a partition still answers `STREAM.INFO` for a while (until it notices it lost its
/// quorum), so an answer alone does not say that publishes can be stored: the probe also wants the
/// leader plus the replicas it heard from recently (`Current`, not `Offline`, seen within `maxSilence`)
/// to be a majority. A stream without cluster information (one server, R1) is reachable when it answers.
package enum StreamQuorum {
    package struct Peer: Sendable, Equatable {
        package var current: Bool
        package var offline: Bool
        /// Nanoseconds since the leader last heard from it.
        package var activeNanoseconds: Int64
    }

    /// Replicas silent for longer than this are not counted (a few of NATS's 1 s Raft heartbeats).
    package static let maxSilenceNanoseconds: Int64 = 4_000_000_000

    package static func reachable(leader: String?, peers: [Peer]?) -> Bool {
        guard let peers else { return true }
        guard let leader, !leader.isEmpty else { return false }
        let heard = peers.filter { $0.current && !$0.offline && $0.activeNanoseconds >= 0 && $0.activeNanoseconds < maxSilenceNanoseconds }.count
        let size = peers.count + 1
        return heard + 1 >= size / 2 + 1
    }
}
