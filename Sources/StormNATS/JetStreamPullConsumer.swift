import CNATS
import Foundation
import NIOCore
import StormCore
import StormObservability

/// How the history consumer reads JetStream and writes PostgreSQL. Every field has a default except the
/// NATS servers.
///
/// - `natsURLs` (`[String]`): the NATS servers (`--nats`).
/// - `stream` (`JetStreamStreamConfiguration`): the stream it reads, and ensures exists (same settings as the
///   gateway's, through the shared `ensureStream`).
/// - `durableName` (`String`, `"storm-history"`): the durable pull consumer; every consumer process shares
///   it, so running several splits the work instead of storing everything twice.
/// - `batchSize` (`Int`, 5,000): the most messages fetched, and written in one transaction, at once. While
///   one batch is written the next is fetched, so up to two batches are held (memory and ack-pending).
/// - `fetchWait` (`Duration`, 50 ms): how long a fetch waits for a batch to fill; bounds the delay from
///   publish to row under light load.
/// - `ackWait` (`Duration`, 30 s): JetStream redelivers a message not acknowledged within this time. Long
///   enough for a slow transaction; anything un-acked after a crash comes back after it.
/// - `maxAckPending` (`Int`, 20,000): un-acknowledged messages JetStream allows the consumer at once.
/// - `migrateOnStart` (`Bool`, true): apply schema migrations before the first batch.
/// - `initialBackoff` (100 ms) and `maxBackoff` (5 s): retry delays after a failure, doubling up to the cap.
/// - `lagSampleInterval` (`Duration`, 2 s): how often `num_pending` is asked for the lag gauge.
package struct HistoryConsumerConfiguration: Sendable {
    package var natsURLs: [String]
    /// TLS to NATS (`--nats-ca`, `--nats-cert`, `--nats-key`), default none.
    package var natsTLS = NATSTLSFiles()
    package var stream = JetStreamStreamConfiguration()
    package var durableName = "storm-history"
    package var connectionName = "stormd consumer"
    package var batchSize = 5000
    package var fetchWait: Duration = .milliseconds(50)
    package var ackWait: Duration = .seconds(30)
    package var maxAckPending = 20_000
    package var migrateOnStart = true
    package var initialBackoff: Duration = .milliseconds(100)
    package var maxBackoff: Duration = .seconds(5)
    package var lagSampleInterval: Duration = .seconds(2)

    package init(natsURLs: [String]) {
        self.natsURLs = natsURLs
    }
}

/// One message ready for the `messages` table.
package struct HistoryRow: Sendable {
    package var channel: String
    package var offset: Int64
    package var id: String
    package var timestampMicros: UInt64
    package var encoding: String
    package var envelope: [UInt8]
    /// The W3C trace context the message carried in its NATS headers, if any.
    package var trace: TraceHeaders? = nil

    package init(channel: String, offset: Int64, id: String, timestampMicros: UInt64, encoding: String, envelope: [UInt8], trace: TraceHeaders? = nil) {
        self.channel = channel
        self.offset = offset
        self.id = id
        self.timestampMicros = timestampMicros
        self.encoding = encoding
        self.envelope = envelope
        self.trace = trace
    }
}

// MARK: - nats.c side

/// The durable pull subscription of one NATS connection. Used from the consumer's NATS threads: one fetch
/// at a time; acknowledging an earlier batch and sampling the lag may run beside it (nats.c locks).
package final class ConsumerSession: @unchecked Sendable {
    package let session: JetStreamSession
    package let subscription: OpaquePointer
    package let epoch: String
    /// What `ensureStream` decided about the stream, logged by the consumer (`logStreamPlan`).
    package let streamState: JetStreamStreamState
    package let batchSize: Int32
    package let fetchWaitMilliseconds: Int64
    /// The stream and the durable consumer, by name: what `pendingCounts` asks JetStream about.
    package let streamName: String
    package let durableName: String

    private init(
        session: JetStreamSession, subscription: OpaquePointer, streamState: JetStreamStreamState, streamName: String, durableName: String, batchSize: Int32,
        fetchWaitMilliseconds: Int64
    ) {
        self.session = session
        self.subscription = subscription
        self.epoch = streamState.epoch
        self.streamState = streamState
        self.streamName = streamName
        self.durableName = durableName
        self.batchSize = batchSize
        self.fetchWaitMilliseconds = fetchWaitMilliseconds
    }

    /// Connects, ensures the stream and the durable consumer exist, and binds a pull subscription to it.
    ///
    /// The durable is created explicitly (`js_AddConsumer`, or `js_UpdateConsumer` when its settings
    /// changed) and then bound, because nats.c deletes a consumer that the subscribe call itself created
    /// when the subscription ends, and this one must outlive every process.
    package static func open(_ configuration: HistoryConsumerConfiguration) throws(StormError) -> ConsumerSession {
        let session = try JetStreamSession.connect(urls: configuration.natsURLs, name: configuration.connectionName, tls: configuration.natsTLS)
        do throws(StormError) {
            let state = try ensureStream(context: session.context, configuration: configuration.stream)
            try ensureDurable(session: session, configuration: configuration)
            var subscriptionPointer: OpaquePointer?
            var options = jsSubOptions()
            try natsCall("jsSubOptions_Init", .internalError, "initialise subscribe options") { jsSubOptions_Init(&options) }
            var errorCode = jsErrCode(rawValue: 0)
            let stream = CString(configuration.stream.name)
            let durable = CString(configuration.durableName)
            options.Stream = stream.pointer
            options.Consumer = durable.pointer
            options.ManualAck = true
            try natsCall("js_PullSubscribe", .brokerUnavailable, "bind to the durable consumer '\(configuration.durableName)' of stream '\(configuration.stream.name)'") {
                js_PullSubscribe(&subscriptionPointer, session.context, configuration.stream.subjects, durable.pointer, nil, &options, &errorCode)
            }
            withExtendedLifetime((stream, durable)) {}
            guard let subscription = subscriptionPointer else {
                throw StormError(.brokerUnavailable, "NATS returned no subscription [js_PullSubscribe]")
            }
            return ConsumerSession(
                session: session, subscription: subscription, streamState: state, streamName: configuration.stream.name,
                durableName: configuration.durableName, batchSize: Int32(clamping: configuration.batchSize),
                fetchWaitMilliseconds: max(1, milliseconds(configuration.fetchWait)))
        } catch {
            session.close()
            throw error
        }
    }

    private static func ensureDurable(session: JetStreamSession, configuration: HistoryConsumerConfiguration) throws(StormError) {
        var config = jsConsumerConfig()
        try natsCall("jsConsumerConfig_Init", .internalError, "initialise a consumer configuration") { jsConsumerConfig_Init(&config) }
        var errorCode = jsErrCode(rawValue: 0)
        let durableString = CString(configuration.durableName)
        let filterString = CString(configuration.stream.subjects)
        defer { withExtendedLifetime((durableString, filterString)) {} }
        let durable = durableString.pointer
        let filter = filterString.pointer
        config.Durable = durable
        config.FilterSubject = filter
        config.AckPolicy = js_AckExplicit
        config.DeliverPolicy = js_DeliverAll
        config.AckWait = nanoseconds(configuration.ackWait)
        config.MaxAckPending = Int64(configuration.maxAckPending)
        config.MaxDeliver = -1
        config.MaxWaiting = 512
        var existing: UnsafeMutablePointer<jsConsumerInfo>?
        let lookup = js_GetConsumerInfo(&existing, session.context, configuration.stream.name, durable, nil, &errorCode)
        var info: UnsafeMutablePointer<jsConsumerInfo>?
        if lookup == NATS_OK, let existing {
            let same = existing.pointee.Config.map { current in
                current.pointee.AckWait == config.AckWait && current.pointee.MaxAckPending == config.MaxAckPending
            } ?? false
            jsConsumerInfo_Destroy(existing)
            if same { return }
            try natsCall("js_UpdateConsumer", .brokerUnavailable, "update the durable consumer '\(configuration.durableName)'") {
                js_UpdateConsumer(&info, session.context, configuration.stream.name, &config, nil, &errorCode)
            }
        } else if lookup == NATS_NOT_FOUND {
            try natsCall("js_AddConsumer", .brokerUnavailable, "create the durable consumer '\(configuration.durableName)' on stream '\(configuration.stream.name)'") {
                js_AddConsumer(&info, session.context, configuration.stream.name, &config, nil, &errorCode)
            }
        } else {
            throw natsError("js_GetConsumerInfo", lookup, .brokerUnavailable, "look up the durable consumer '\(configuration.durableName)'")
        }
        if let info { jsConsumerInfo_Destroy(info) }
    }

    /// Up to `batchSize` messages, waiting at most the fetch wait; empty when none arrived.
    package func fetch(prefix: String) throws(StormError) -> FetchedBatch {
        var list = natsMsgList()
        var errorCode = jsErrCode(rawValue: 0)
        let status = natsSubscription_Fetch(&list, subscription, batchSize, fetchWaitMilliseconds, &errorCode)
        if status == NATS_TIMEOUT { return FetchedBatch(list: list, prefix: prefix) }
        guard status == NATS_OK else {
            throw natsError("natsSubscription_Fetch", status, .brokerUnavailable, "fetch from the durable consumer")
        }
        return FetchedBatch(list: list, prefix: prefix)
    }

    /// `num_pending` (not yet delivered) and `num_ack_pending` (delivered, not acknowledged) of the
    /// durable consumer.
    ///
    /// Asked by stream and durable name (`js_GetConsumerInfo`), not through the subscription:
    /// nats.c 3.4's `natsSubscription_GetConsumerInfo` answers `NATS_INVALID_SUBSCRIPTION` for a pull
    /// subscription bound to an existing durable (`jsSubOptions.Consumer`), because it keeps no consumer
    /// name for it; that is why the lag used to read 0.
    package func pendingCounts() throws(StormError) -> (pending: UInt64, ackPending: UInt64) {
        var info: UnsafeMutablePointer<jsConsumerInfo>?
        var errorCode = jsErrCode(rawValue: 0)
        try natsCall("js_GetConsumerInfo", .brokerUnavailable, "read the durable consumer '\(durableName)' of stream '\(streamName)'") {
            js_GetConsumerInfo(&info, session.context, streamName, durableName, nil, &errorCode)
        }
        guard let info else {
            throw StormError(.brokerUnavailable, "NATS returned no consumer info [js_GetConsumerInfo]")
        }
        defer { jsConsumerInfo_Destroy(info) }
        return (info.pointee.NumPending, UInt64(clamping: info.pointee.NumAckPending))
    }

    /// Frees the subscription without deleting the durable consumer (nats.c ≥ 3.4 keeps it on destroy).
    package func close() {
        natsSubscription_Destroy(subscription)
        session.close()
    }
}

/// Fetched messages, parsed into rows, holding the nats.c messages until they are acknowledged (or released
/// un-acked, for redelivery). `@unchecked Sendable`: built, acked and released on one of the consumer's NATS
/// threads, read (`rows`) in between by the consumer's loop, one at a time, never concurrently.
package final class FetchedBatch: @unchecked Sendable {
    private var list: natsMsgList
    private var released = false
    package let rows: [HistoryRow]
    /// Indices (into the list) of messages that can never be stored.
    private let malformed: [Int]

    package init(list: natsMsgList, prefix: String) {
        self.list = list
        var rows: [HistoryRow] = []
        var malformed: [Int] = []
        rows.reserveCapacity(Int(list.Count))
        for index in 0..<Int(list.Count) {
            guard let message = list.Msgs?[index], let row = Self.parse(message, prefix: prefix) else {
                malformed.append(index)
                continue
            }
            rows.append(row)
        }
        self.rows = rows
        self.malformed = malformed
    }

    package var count: Int { Int(list.Count) }
    package var isEmpty: Bool { list.Count == 0 }
    package var malformedCount: Int { malformed.count }

    /// Acknowledges every stored message and terminates the malformed ones, then frees them.
    ///
    /// Fire and forget (a lost ack means a redelivery, which stores nothing twice). With `confirm`, the last
    /// stored message is acknowledged synchronously: JetStream processes one connection's acks in order, so
    /// once it confirmed that one, every ack before it counts, and the lag sample that follows does not
    /// mistake acks still in flight for messages a dead consumer left behind.
    package func acknowledge(confirm: Bool = false) {
        guard !released else { return }
        let bad = Set(malformed)
        let count = Int(list.Count)
        let lastStored = (0..<count).last { !bad.contains($0) }
        for index in 0..<count {
            guard let message = list.Msgs?[index] else { continue }
            if bad.contains(index) {
                natsMsg_Term(message, nil)
            } else if confirm, index == lastStored {
                var options = jsOptions()
                var errorCode = jsErrCode(rawValue: 0)
                if jsOptions_Init(&options) == NATS_OK {
                    options.Wait = 2000
                    // A timeout only delays the confirmation; the ack itself was sent.
                    _ = natsMsg_AckSync(message, &options, &errorCode)
                } else {
                    natsMsg_Ack(message, nil)
                }
            } else {
                natsMsg_Ack(message, nil)
            }
        }
        release()
    }

    /// Frees the messages without acknowledging them: JetStream redelivers them after the ack wait.
    package func release() {
        guard !released else { return }
        released = true
        natsMsgList_Destroy(&list)
    }

    deinit { release() }

    private static func parse(_ message: OpaquePointer, prefix: String) -> HistoryRow? {
        guard let subjectPointer = natsMsg_GetSubject(message) else { return nil }
        let subject = String(cString: subjectPointer)
        guard subject.hasPrefix(prefix), let channel = try? ChannelName(validating: String(subject.dropFirst(prefix.count))) else {
            return nil
        }
        var metadata: UnsafeMutablePointer<jsMsgMetaData>?
        guard natsMsg_GetMetaData(&metadata, message) == NATS_OK, let metadata else { return nil }
        let sequence = metadata.pointee.Sequence.Stream
        jsMsgMetaData_Destroy(metadata)
        let length = Int(natsMsg_GetDataLength(message))
        var body: [UInt8] = []
        if length > 0, let data = natsMsg_GetData(message) {
            body = Array(UnsafeRawBufferPointer(start: UnsafeRawPointer(data), count: length))
        }
        guard let envelope = try? Envelope(decoding: body), envelope.channel == channel, sequence > 0, sequence <= UInt64(Int64.max) else {
            return nil
        }
        return HistoryRow(
            channel: channel.rawValue, offset: Int64(sequence), id: envelope.id, timestampMicros: envelope.timestampMicros,
            encoding: envelope.encoding.rawValue, envelope: body, trace: traceHeaders(of: message))
    }
}

/// A C string copy that lives as long as this object: for nats.c structs that hold `const char *` fields.
package final class CString {
    package let pointer: UnsafePointer<CChar>?
    private let owned: UnsafeMutablePointer<CChar>?

    package init(_ string: String) {
        owned = strdup(string)
        pointer = owned.map { UnsafePointer($0) }
    }

    deinit { free(owned) }
}
