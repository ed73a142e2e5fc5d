import NIOCore
import StormCore

/// What happens to messages when the stream reaches `maxBytes` or `maxMessages` (`--stream-discard`).
///
/// - `old` (the default): JetStream removes the oldest messages to make room; publishing never fails for
///   lack of room, and history starts later.
/// - `new`: JetStream refuses new messages; publishes answer `storage_full` (HTTP 507) until room is made.
package enum StreamDiscard: String, Sendable, Equatable, CaseIterable {
    case old
    case new
}

/// The settings of a stream that STORM configures and compares, as JetStream reports them.
///
/// Numbers are JetStream's: -1 means unlimited for `maxBytes` and `maxMessages`, 0 for `maxAge`.
package struct StreamLimits: Sendable, Equatable {
    package var subjects: [String]
    package var replicas: Int
    package var maxBytes: Int64
    package var maxMessages: Int64
    package var maxAgeNanoseconds: Int64
    package var discard: StreamDiscard

    /// The limits `configuration` asks for.
    package init(_ configuration: JetStreamStreamConfiguration) {
        self.subjects = [configuration.subjects]
        self.replicas = max(1, configuration.replicas)
        self.maxBytes = configuration.maxBytes
        self.maxMessages = configuration.maxMessages
        self.maxAgeNanoseconds = nanoseconds(configuration.maxAge)
        self.discard = configuration.discard
    }

    package init(subjects: [String], replicas: Int, maxBytes: Int64, maxMessages: Int64, maxAgeNanoseconds: Int64, discard: StreamDiscard) {
        self.subjects = subjects
        self.replicas = replicas
        self.maxBytes = maxBytes
        self.maxMessages = maxMessages
        self.maxAgeNanoseconds = maxAgeNanoseconds
        self.discard = discard
    }
}

/// One setting in which an existing stream differs from STORM's configuration.
package struct StreamDifference: Sendable, Equatable, CustomStringConvertible {
    /// The setting, as JetStream names it (`replicas`, `max_bytes`, `max_msgs`, `max_age`, `discard`, `subjects`).
    package var setting: String
    package var existing: String
    package var configured: String
    /// The stormd option that sets it (`--stream-replicas`), or nil when none does.
    package var option: String?

    package var description: String { "\(setting): existing \(existing), configured \(configured)" }
}

/// What `ensureStream` does with the stream, decided from what exists and what is configured.
///
/// The rule: a stream that exists is an operator's, and STORM never changes it implicitly. It is updated
/// only with `--stream-update`, and even then never to fewer replicas unless `--stream-replicas` was given
/// explicitly (a default of 1 must not undo an operator's 3).
package enum StreamPlan: Sendable, Equatable {
    /// No stream by that name: create it with the configured settings.
    case create
    /// The stream exists with the configured settings.
    case unchanged
    /// The stream differs and `--stream-update` is off: use it as it is, and warn once per difference.
    case keep([StreamDifference])
    /// `--stream-update` is on: update the stream to the configured settings.
    case update([StreamDifference])
    /// `--stream-update` is on but the update would lower the replicas without `--stream-replicas` given
    /// explicitly: the stream is left as it is.
    case refuseUpdate(reason: String, [StreamDifference])

    /// Compares `existing` (nil: no such stream) with `configuration`.
    package static func decide(existing: StreamLimits?, configuration: JetStreamStreamConfiguration) -> StreamPlan {
        guard let existing else { return .create }
        let differences = StreamPlan.differences(existing: existing, configured: StreamLimits(configuration))
        guard !differences.isEmpty else { return .unchanged }
        guard configuration.updateExisting else { return .keep(differences) }
        let wanted = max(1, configuration.replicas)
        if wanted < existing.replicas, !configuration.replicasExplicit {
            return .refuseUpdate(
                reason: "the update would lower the replicas of stream '\(configuration.name)' from \(existing.replicas) to \(wanted); "
                    + "give --stream-replicas \(wanted) explicitly to lower them, or --stream-replicas \(existing.replicas) to keep them",
                differences)
        }
        return .update(differences)
    }

    /// Every setting STORM configures in which `existing` and `configured` differ, in a fixed order.
    package static func differences(existing: StreamLimits, configured: StreamLimits) -> [StreamDifference] {
        var out: [StreamDifference] = []
        if Set(existing.subjects) != Set(configured.subjects) {
            out.append(StreamDifference(setting: "subjects", existing: existing.subjects.joined(separator: ","), configured: configured.subjects.joined(separator: ","), option: "--nats-subject-prefix"))
        }
        if existing.replicas != configured.replicas {
            out.append(StreamDifference(setting: "replicas", existing: "\(existing.replicas)", configured: "\(configured.replicas)", option: "--stream-replicas"))
        }
        if existing.maxBytes != configured.maxBytes {
            out.append(StreamDifference(setting: "max_bytes", existing: limitText(existing.maxBytes), configured: limitText(configured.maxBytes), option: "--stream-max-bytes"))
        }
        if existing.maxMessages != configured.maxMessages {
            out.append(StreamDifference(setting: "max_msgs", existing: limitText(existing.maxMessages), configured: limitText(configured.maxMessages), option: "--stream-max-messages"))
        }
        if existing.maxAgeNanoseconds != configured.maxAgeNanoseconds {
            out.append(StreamDifference(setting: "max_age", existing: ageText(existing.maxAgeNanoseconds), configured: ageText(configured.maxAgeNanoseconds), option: "--stream-max-age"))
        }
        if existing.discard != configured.discard {
            out.append(StreamDifference(setting: "discard", existing: existing.discard.rawValue, configured: configured.discard.rawValue, option: "--stream-discard"))
        }
        return out
    }

    /// The warning logged for one difference kept as it is.
    package static func keepWarning(stream: String, _ difference: StreamDifference) -> String {
        "JetStream stream '\(stream)' exists with \(difference.setting) \(difference.existing), configured \(difference.configured): "
            + "left unchanged; pass --stream-update to apply \(difference.option ?? "the configuration"), or match the configuration to the stream"
    }

    private static func limitText(_ value: Int64) -> String { value < 0 ? "unlimited" : "\(value)" }

    private static func ageText(_ nanos: Int64) -> String {
        guard nanos > 0 else { return "unlimited" }
        if nanos % 1_000_000_000 == 0 { return "\(nanos / 1_000_000_000)s" }
        return "\(nanos / 1_000_000)ms"
    }
}

/// Capped exponential backoff with jitter, for retrying what waits on NATS (the stream, the connection).
///
/// Attempt 0 waits `initial`; each further attempt doubles, up to `cap`; the result is then spread by
/// ±`jitter` (a fraction) so that gateways restarted together do not retry in step.
package struct RetryBackoff: Sendable, Equatable {
    package var initial: Duration = .milliseconds(250)
    package var cap: Duration = .seconds(10)
    package var jitter: Double = 0.2

    /// The delay before retry number `attempt` (0-based); `random` in 0...1 picks the point in the jitter
    /// range (0.5 is the middle, no jitter).
    package func delay(attempt: Int, random: Double) -> Duration {
        let initialMs = max(1, milliseconds(initial))
        let capMs = max(initialMs, milliseconds(cap))
        let doublings = min(max(0, attempt), 40)
        let (raw, overflow) = initialMs.multipliedReportingOverflow(by: Int64(1) << Int64(doublings))
        let base = overflow ? capMs : min(raw, capMs)
        let spread = min(max(jitter, 0), 1)
        let factor = 1 + spread * (2 * min(max(random, 0), 1) - 1)
        // Clamped below Int64.max before converting: an absurd cap saturates instead of trapping.
        let ms = min((Double(base) * factor).rounded(), 9.0e18)
        return .milliseconds(Int64(ms))
    }

    package func delay(attempt: Int) -> Duration {
        delay(attempt: attempt, random: Double.random(in: 0...1))
    }
}

/// Why JetStream refused a publish, from the API error code and text of its answer.
package enum PublishRefusal {
    /// JetStream's codes for "no room": 10047 storage resources exceeded (account or server), 10023
    /// insufficient resources; 10077 "store failed" is a full stream when its text says a maximum was
    /// exceeded (discard new with max_bytes or max_msgs reached).
    package static func code(errorCode: Int, text: String?) -> StormError.Code {
        switch errorCode {
        case 10047, 10023:
            return .storageFull
        case 10077:
            let lowered = text?.lowercased() ?? ""
            return lowered.contains("maximum") || lowered.contains("exceeded") || lowered.contains("insufficient") ? .storageFull : .brokerUnavailable
        default:
            let lowered = text?.lowercased() ?? ""
            if lowered.contains("maximum bytes exceeded") || lowered.contains("maximum messages exceeded") || lowered.contains("resources exceeded") {
                return .storageFull
            }
            return .brokerUnavailable
        }
    }
}

/// Whether publishes are being refused for lack of room, and when to warn about it: a plain state machine
/// (`StoreHealth` holds one under a lock).
package struct StorageFullState: Sendable, Equatable {
    /// Time between two warnings while the store stays full.
    package var warningInterval: TimeAmount = .seconds(30)
    private(set) var isFull = false
    private(set) var refusedSinceWarning = 0
    private var lastWarning: NIODeadline?

    package init(warningInterval: TimeAmount = .seconds(30)) {
        self.warningInterval = warningInterval
    }

    /// A publish was refused as storage_full at `now`; returns the number of refusals to report when a
    /// warning is due (the first, then one per `warningInterval`), else nil.
    package mutating func refused(at now: NIODeadline) -> Int? {
        isFull = true
        refusedSinceWarning += 1
        if let lastWarning, now - lastWarning < warningInterval { return nil }
        lastWarning = now
        defer { refusedSinceWarning = 0 }
        return refusedSinceWarning
    }

    /// A publish was stored; returns whether that ends a full period (log the recovery).
    package mutating func stored() -> Bool {
        guard isFull else { return false }
        isFull = false
        refusedSinceWarning = 0
        lastWarning = nil
        return true
    }
}
