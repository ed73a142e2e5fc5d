import CNATS
import Foundation
import Logging
import StormCore

/// The JetStream stream that makes STORM's messages durable: every channel's subject, stored on disk.
///
/// The gateway creates it at start if it does not exist, and so does the history consumer, through the
/// same `ensureStream`, so whichever role starts first leaves the same stream behind. A stream that exists
/// is never changed implicitly (see `StreamPlan`).
///
/// - `name` (`String`, `"STORM"`): the stream's name.
/// - `subjectPrefix` (`String`, `"storm.ch"`): the stream captures `<prefix>.>`, every channel.
/// - `maxAge` (`Duration`, 24 h, `--stream-max-age`): how long JetStream keeps a message. It is the fast,
///   recent window and the consumer's buffer while PostgreSQL is down; long-term history lives in PostgreSQL.
/// - `duplicateWindow` (`Duration`, 2 min): a publish retried with the same `Nats-Msg-Id` within this
///   window is stored once.
/// - `replicas` (`Int`, 1, `--stream-replicas`): copies in a clustered JetStream (1 for a single server).
/// - `maxBytes` (`Int64`, -1 = unlimited, `--stream-max-bytes`): a cap on the stream's disk use.
/// - `maxMessages` (`Int64`, -1 = unlimited, `--stream-max-messages`): a cap on the messages held.
/// - `discard` (`StreamDiscard`, `.old`, `--stream-discard`): at a cap, drop the oldest or refuse the new.
/// - `updateExisting` (`Bool`, false, `--stream-update`): update an existing stream that differs.
/// - `replicasExplicit` (`Bool`, false): `--stream-replicas` was given, so an update may lower replicas.
package struct JetStreamStreamConfiguration: Sendable, Equatable {
    package var name = "STORM"
    package var subjectPrefix = "storm.ch"
    package var maxAge: Duration = .seconds(24 * 3600)
    package var duplicateWindow: Duration = .seconds(120)
    package var replicas = 1
    package var maxBytes: Int64 = -1
    package var maxMessages: Int64 = -1
    package var discard = StreamDiscard.old
    package var updateExisting = false
    package var replicasExplicit = false

    package init(
        name: String = "STORM", subjectPrefix: String = "storm.ch", maxAge: Duration = .seconds(24 * 3600),
        duplicateWindow: Duration = .seconds(120), replicas: Int = 1, maxBytes: Int64 = -1, maxMessages: Int64 = -1,
        discard: StreamDiscard = .old, updateExisting: Bool = false, replicasExplicit: Bool = false
    ) {
        self.name = name
        self.subjectPrefix = subjectPrefix
        self.maxAge = maxAge
        self.duplicateWindow = duplicateWindow
        self.replicas = replicas
        self.maxBytes = maxBytes
        self.maxMessages = maxMessages
        self.discard = discard
        self.updateExisting = updateExisting
        self.replicasExplicit = replicasExplicit
    }

    /// `<prefix>.>`: the subjects the stream captures.
    package var subjects: String { subjectPrefix + ".>" }

    /// The stream name for a subject prefix when none is configured: `STORM` for the default prefix,
    /// else derived from the prefix, so deployments (or tests) sharing one NATS server with different
    /// prefixes never fight over one stream's subjects.
    package static func defaultName(forPrefix prefix: String) -> String {
        prefix == "storm.ch" ? "STORM" : "STORM_" + prefix.uppercased().map { $0.isLetter || $0.isNumber ? String($0) : "_" }.joined()
    }
}

/// What `ensureStream` found or made.
package struct JetStreamStreamState: Sendable, Equatable {
    /// The history epoch: the stream's creation time in nanoseconds since the Unix epoch, as a decimal
    /// string. A stream deleted and recreated restarts its sequences (offsets), and gets a new epoch, so a
    /// client holding an offset of another epoch knows to reload instead of resuming.
    package var epoch: String
    /// The last sequence stored (0 when empty): the newest offset.
    package var lastSequence: UInt64
    /// Messages currently held.
    package var messages: UInt64
    /// Whether this call created the stream.
    package var created: Bool
    /// What was decided about the stream (created, kept with differences, updated, update refused).
    package var plan: StreamPlan = .unchanged
}

/// Creates the stream if it does not exist; an existing one is used as it is, or updated when
/// `configuration.updateExisting` says so (`StreamPlan` decides), and its epoch is reported.
///
/// Blocking (two JetStream API round trips at most): call it from a thread pool, never an event loop.
/// The caller logs the plan (`logStreamPlan`).
///
/// - Parameters:
///   - context: a `jsCtx*` from `natsConnection_JetStream`.
///   - configuration: what the stream must look like.
package func ensureStream(context: OpaquePointer, configuration: JetStreamStreamConfiguration) throws(StormError) -> JetStreamStreamState {
    var existing: UnsafeMutablePointer<jsStreamInfo>?
    var errorCode = jsErrCode(rawValue: 0)
    let lookup = js_GetStreamInfo(&existing, context, configuration.name, nil, &errorCode)
    guard lookup == NATS_OK || lookup == NATS_NOT_FOUND else {
        throw natsError(
            "js_GetStreamInfo", lookup, .brokerUnavailable,
            "look up the JetStream stream '\(configuration.name)' (JetStream error code \(errorCode.rawValue); is JetStream enabled on the server, nats-server -js, and does its cluster have a leader?)")
    }
    if lookup == NATS_OK, let existing {
        defer { jsStreamInfo_Destroy(existing) }
        let limits = existing.pointee.Config.map(streamLimits(of:))
        let plan = StreamPlan.decide(existing: limits ?? StreamLimits(configuration), configuration: configuration)
        switch plan {
        case .update:
            break  // below
        case .create, .unchanged, .keep, .refuseUpdate:
            return JetStreamStreamState(
                epoch: String(existing.pointee.Created), lastSequence: existing.pointee.State.LastSeq, messages: existing.pointee.State.Msgs,
                created: false, plan: plan)
        }
        var info: UnsafeMutablePointer<jsStreamInfo>?
        try withStreamConfig(configuration) { (config: UnsafeMutablePointer<jsStreamConfig>) throws(StormError) in
            try natsCall("js_UpdateStream", .brokerUnavailable, "update the JetStream stream '\(configuration.name)' (--stream-update; JetStream error code \(errorCode.rawValue))") {
                js_UpdateStream(&info, context, config, nil, &errorCode)
            }
        }
        guard let info else {
            throw StormError(.brokerUnavailable, "NATS returned no stream information for '\(configuration.name)' [js_UpdateStream]")
        }
        defer { jsStreamInfo_Destroy(info) }
        return JetStreamStreamState(
            epoch: String(info.pointee.Created), lastSequence: info.pointee.State.LastSeq, messages: info.pointee.State.Msgs,
            created: false, plan: plan)
    }

    var info: UnsafeMutablePointer<jsStreamInfo>?
    try withStreamConfig(configuration) { (config: UnsafeMutablePointer<jsStreamConfig>) throws(StormError) in
        try natsCall("js_AddStream", .brokerUnavailable, "create the JetStream stream '\(configuration.name)' for '\(configuration.subjects)' (JetStream error code \(errorCode.rawValue); another stream may already capture these subjects, or the cluster has fewer servers than --stream-replicas)") {
            js_AddStream(&info, context, config, nil, &errorCode)
        }
    }
    guard let info else {
        throw StormError(.brokerUnavailable, "NATS returned no stream information for '\(configuration.name)' [js_AddStream]")
    }
    defer { jsStreamInfo_Destroy(info) }
    return JetStreamStreamState(
        epoch: String(info.pointee.Created), lastSequence: info.pointee.State.LastSeq, messages: info.pointee.State.Msgs,
        created: true, plan: .create)
}

/// The settings STORM compares, read from a stream's configuration as JetStream reports it.
package func streamLimits(of config: UnsafeMutablePointer<jsStreamConfig>) -> StreamLimits {
    let c = config.pointee
    var subjects: [String] = []
    if let list = c.Subjects {
        for index in 0..<Int(max(0, c.SubjectsLen)) {
            if let subject = list[index] { subjects.append(String(cString: subject)) }
        }
    }
    return StreamLimits(
        subjects: subjects, replicas: Int(clamping: c.Replicas), maxBytes: c.MaxBytes, maxMessages: c.MaxMsgs,
        maxAgeNanoseconds: c.MaxAge, discard: c.Discard == js_DiscardNew ? .new : .old)
}

/// Logs what `ensureStream` decided: one line for a creation or update, one warning per difference kept,
/// one error for a refused update. Shared by the gateway and the history consumer.
package func logStreamPlan(_ state: JetStreamStreamState, stream: String, endpoint: String, logger: Logger) {
    let metadata: Logger.Metadata = ["nats.stream": "\(stream)", "nats.url": "\(endpoint)"]
    switch state.plan {
    case .create:
        logger.notice("JetStream stream '\(stream)' created", metadata: metadata)
    case .unchanged:
        break
    case .keep(let differences):
        for difference in differences {
            logger.warning("\(StreamPlan.keepWarning(stream: stream, difference))", metadata: metadata)
        }
    case .update(let differences):
        logger.notice(
            "JetStream stream '\(stream)' updated (--stream-update): \(differences.map(\.description).joined(separator: "; "))", metadata: metadata)
    case .refuseUpdate(let reason, _):
        logger.error("JetStream stream '\(stream)' not updated: \(reason); it is used as it is", metadata: metadata)
    }
}

/// Fills a `jsStreamConfig` (file storage, limits retention) whose strings live for the duration of `body`.
private func withStreamConfig(
    _ configuration: JetStreamStreamConfiguration,
    _ body: (UnsafeMutablePointer<jsStreamConfig>) throws(StormError) -> Void
) throws(StormError) {
    let config = UnsafeMutablePointer<jsStreamConfig>.allocate(capacity: 1)
    defer { config.deallocate() }
    try natsCall("jsStreamConfig_Init", .internalError, "initialise a stream configuration") { jsStreamConfig_Init(config) }
    let name = strdup(configuration.name)
    let subject = strdup(configuration.subjects)
    defer {
        free(name)
        free(subject)
    }
    var subjects: [UnsafePointer<CChar>?] = [subject.map { UnsafePointer($0) }]
    try subjects.withUnsafeMutableBufferPointer { (buffer) throws(StormError) in
        config.pointee.Name = name.map { UnsafePointer($0) }
        config.pointee.Subjects = buffer.baseAddress
        config.pointee.SubjectsLen = 1
        config.pointee.Storage = js_FileStorage
        config.pointee.Retention = js_LimitsPolicy
        config.pointee.Discard = configuration.discard == .new ? js_DiscardNew : js_DiscardOld
        config.pointee.MaxAge = nanoseconds(configuration.maxAge)
        config.pointee.Duplicates = nanoseconds(configuration.duplicateWindow)
        config.pointee.Replicas = Int64(max(1, configuration.replicas))
        config.pointee.MaxBytes = configuration.maxBytes
        config.pointee.MaxMsgs = configuration.maxMessages
        try body(config)
    }
}

