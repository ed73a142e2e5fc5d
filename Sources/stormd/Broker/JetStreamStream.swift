import CNATS
import Foundation
import StormCore

/// The JetStream stream that makes STORM's messages durable: every channel's subject, stored on disk.
///
/// The gateway creates or updates it at start, and so does the history consumer, through the same
/// `ensureStream`, so whichever role starts first leaves the same stream behind.
///
/// - `name` (`String`, `"STORM"`): the stream's name.
/// - `subjectPrefix` (`String`, `"storm.ch"`): the stream captures `<prefix>.>`, every channel.
/// - `maxAge` (`Duration`, 24 h): how long JetStream keeps a message. It is the fast, recent window and
///   the consumer's buffer while PostgreSQL is down; long-term history lives in PostgreSQL.
/// - `duplicateWindow` (`Duration`, 2 min): a publish retried with the same `Nats-Msg-Id` within this
///   window is stored once.
/// - `replicas` (`Int`, 1): copies in a clustered JetStream (1 for a single server).
/// - `maxBytes` (`Int64`, -1 = unlimited): a cap on the stream's disk use; the oldest messages go first.
struct JetStreamStreamConfiguration: Sendable, Equatable {
    var name = "STORM"
    var subjectPrefix = "storm.ch"
    var maxAge: Duration = .seconds(24 * 3600)
    var duplicateWindow: Duration = .seconds(120)
    var replicas = 1
    var maxBytes: Int64 = -1

    init(
        name: String = "STORM", subjectPrefix: String = "storm.ch", maxAge: Duration = .seconds(24 * 3600),
        duplicateWindow: Duration = .seconds(120), replicas: Int = 1, maxBytes: Int64 = -1
    ) {
        self.name = name
        self.subjectPrefix = subjectPrefix
        self.maxAge = maxAge
        self.duplicateWindow = duplicateWindow
        self.replicas = replicas
        self.maxBytes = maxBytes
    }

    /// `<prefix>.>`: the subjects the stream captures.
    var subjects: String { subjectPrefix + ".>" }

    /// The stream name for a subject prefix when none is configured: `STORM` for the default prefix,
    /// else derived from the prefix, so deployments (or tests) sharing one NATS server with different
    /// prefixes never fight over one stream's subjects.
    static func defaultName(forPrefix prefix: String) -> String {
        prefix == "storm.ch" ? "STORM" : "STORM_" + prefix.uppercased().map { $0.isLetter || $0.isNumber ? String($0) : "_" }.joined()
    }
}

/// What `ensureStream` found or made.
struct JetStreamStreamState: Sendable, Equatable {
    /// The history epoch: the stream's creation time in nanoseconds since the Unix epoch, as a decimal
    /// string. A stream deleted and recreated restarts its sequences (offsets), and gets a new epoch, so a
    /// client holding an offset of another epoch knows to reload instead of resuming.
    var epoch: String
    /// The last sequence stored (0 when empty): the newest offset.
    var lastSequence: UInt64
    /// Messages currently held.
    var messages: UInt64
    /// Whether this call created the stream.
    var created: Bool
}

/// Creates the stream, or updates it to `configuration` when it exists, and reports its epoch.
///
/// Blocking (three JetStream API round trips at most): call it from a thread pool, never an event loop.
///
/// - Parameters:
///   - context: a `jsCtx*` from `natsConnection_JetStream`.
///   - configuration: what the stream must look like.
func ensureStream(context: OpaquePointer, configuration: JetStreamStreamConfiguration) throws(StormError) -> JetStreamStreamState {
    var existing: UnsafeMutablePointer<jsStreamInfo>?
    var errorCode = jsErrCode(rawValue: 0)
    let lookup = js_GetStreamInfo(&existing, context, configuration.name, nil, &errorCode)
    if lookup == NATS_OK, let existing { jsStreamInfo_Destroy(existing) }
    guard lookup == NATS_OK || lookup == NATS_NOT_FOUND else {
        throw natsError("js_GetStreamInfo", lookup, .brokerUnavailable, "look up the JetStream stream '\(configuration.name)' (is JetStream enabled on the server? start nats-server with -js)")
    }
    let creating = lookup == NATS_NOT_FOUND

    var info: UnsafeMutablePointer<jsStreamInfo>?
    try withStreamConfig(configuration) { (config: UnsafeMutablePointer<jsStreamConfig>) throws(StormError) in
        if creating {
            try natsCall("js_AddStream", .brokerUnavailable, "create the JetStream stream '\(configuration.name)' for '\(configuration.subjects)'") {
                js_AddStream(&info, context, config, nil, &errorCode)
            }
        } else {
            try natsCall("js_UpdateStream", .brokerUnavailable, "update the JetStream stream '\(configuration.name)' to capture '\(configuration.subjects)' (another stream may already capture these subjects)") {
                js_UpdateStream(&info, context, config, nil, &errorCode)
            }
        }
    }
    guard let info else {
        throw StormError(.brokerUnavailable, "NATS returned no stream information for '\(configuration.name)' [js_AddStream]")
    }
    defer { jsStreamInfo_Destroy(info) }
    return JetStreamStreamState(
        epoch: String(info.pointee.Created), lastSequence: info.pointee.State.LastSeq, messages: info.pointee.State.Msgs,
        created: creating)
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
        config.pointee.Discard = js_DiscardOld
        config.pointee.MaxAge = nanoseconds(configuration.maxAge)
        config.pointee.Duplicates = nanoseconds(configuration.duplicateWindow)
        config.pointee.Replicas = Int64(max(1, configuration.replicas))
        config.pointee.MaxBytes = configuration.maxBytes
        try body(config)
    }
}

/// A `Duration` in whole nanoseconds, saturating (JetStream takes nanoseconds for ages and windows).
func nanoseconds(_ duration: Duration) -> Int64 {
    let (seconds, attoseconds) = duration.components
    let (whole, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
    if overflow { return seconds < 0 ? Int64.min : Int64.max }
    return whole.addingReportingOverflow(attoseconds / 1_000_000_000).partialValue
}
