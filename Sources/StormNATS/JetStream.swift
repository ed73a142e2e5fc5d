import Atomics
import CNATS
import Dispatch
import Logging
import NIOConcurrencyHelpers
import NIOCore
import StormBroker
import StormCore
import StormObservability

/// JetStream as the NATS broker uses it: the stream (shared with the history consumer) and the publish
/// acknowledgement limits.
package struct JetStreamSettings: Sendable {
    /// The stream (name, subjects, retention); its subject prefix is set from the broker's.
    package var stream = JetStreamStreamConfiguration()
    /// How long a publish waits for JetStream's acknowledgement before the client is told it failed.
    package var ackTimeout: TimeAmount = .seconds(5)
    /// Publishes awaiting acknowledgement before new ones are refused (back-pressure, not a queue).
    package var maxPendingAcks = 65_536

    package var streamName: String { stream.name }
}

/// One `jsCtx` and what STORM does with it: the stream, asynchronous publishes with acknowledgements,
/// ordered consumers for fan-out, and history reads.
///
/// Publishing is asynchronous: `js_PublishMsgAsync` queues the message and nats.c calls
/// `jetStreamAckCallback` on its own thread when JetStream stored it (or refused it). Each pending publish
/// is a promise in `AckTable`, keyed by the `natsMsg` pointer nats.c hands back; whoever removes the entry
/// (the acknowledgement or the timeout) completes the promise, exactly once.
package final class JetStreamContext: Sendable {
    package let settings: JetStreamSettings
    private let raw: JetStreamHandle
    private let acks: AckTable
    private let acksPointer: AckTablePointer
    private let logger: Logger
    /// The NATS servers, without credentials, for log lines.
    package let endpoint: String
    /// The stream's creation time (nanoseconds), our history epoch; empty until the stream is ensured.
    private let epochValue = NIOLockedValueBox("")
    /// Why the stream is not ready (the last failure of `ensureStream`), for `/readyz`.
    private let streamProblemValue = NIOLockedValueBox<String?>(nil)
    /// Whether publishes are being refused for lack of room.
    package let storeHealth: StoreHealth
    /// Whether publishes keep failing as unavailable (a partition): `/readyz` follows it.
    package let publishHealth: PublishHealth
    /// A room check (`probeRoomIfFull`) is running.
    private let probingRoom = ManagedAtomic(false)
    /// The stream as last sampled (`StreamStatus`), nil until the first sample after the stream is ready.
    private let streamStatusValue = NIOLockedValueBox<StreamStatus?>(nil)
    /// The sampler's state; a sample holds this lock around its `js_GetStreamInfo`, so `destroy` waits
    /// for it instead of freeing the context under it.
    private let sampler = NIOLockedValueBox((started: false, destroyed: false))
    private let samplerWake = DispatchSemaphore(value: 0)

    package init(connection: NATSConnectionHandle, settings: JetStreamSettings, endpoint: String, logger: Logger) throws(StormError) {
        self.settings = settings
        self.logger = logger
        self.endpoint = endpoint
        let storeHealth = StoreHealth(stream: settings.stream, endpoint: endpoint, logger: logger)
        self.storeHealth = storeHealth
        let publishHealth = PublishHealth(stream: settings.streamName, endpoint: endpoint, logger: logger)
        self.publishHealth = publishHealth
        let acks = AckTable(health: storeHealth, publishHealth: publishHealth)
        self.acks = acks
        // Retained for nats.c's callbacks; released in `deinit`, after the connection is destroyed.
        let acksPointer = Unmanaged.passRetained(acks).toOpaque()
        self.acksPointer = AckTablePointer(raw: acksPointer)
        var options = jsOptions()
        jsOptions_Init(&options)
        options.PublishAsync.AckHandler = jetStreamAckCallback
        options.PublishAsync.AckHandlerClosure = acksPointer
        options.PublishAsync.MaxPending = Int64(settings.maxPendingAcks)
        // Never stall an event loop waiting for room: refuse at once instead.
        options.PublishAsync.StallWait = 1
        var context: OpaquePointer?
        do {
            try natsCall("natsConnection_JetStream", .configuration, "open a JetStream context") {
                natsConnection_JetStream(&context, connection.raw, &options)
            }
        } catch {
            Unmanaged<AckTable>.fromOpaque(acksPointer).release()
            throw error
        }
        guard let context else {
            Unmanaged<AckTable>.fromOpaque(acksPointer).release()
            throw StormError(.internalError, "NATS returned no JetStream context [natsConnection_JetStream]")
        }
        self.raw = JetStreamHandle(raw: context)
    }

    /// Frees the context. Call only once the connection is closed (no callback can run any more).
    package func destroy() {
        sampler.withLockedValue { $0.destroyed = true }
        samplerWake.signal()
        jsCtx_Destroy(raw.raw)
        failPending()
        Unmanaged<AckTable>.fromOpaque(acksPointer.raw).release()
    }

    package var epoch: String { epochValue.withLockedValue { $0 } }
    package var isStreamReady: Bool { !epoch.isEmpty }

    // MARK: Stream

    /// Why the stream cannot be used yet, or nil once it is ready.
    package var streamProblem: String? {
        guard !isStreamReady else { return nil }
        return streamProblemValue.withLockedValue { $0 } ?? "JetStream stream '\(settings.streamName)' is not ready yet (waiting for NATS at \(endpoint))"
    }

    /// Creates the stream if it does not exist, or takes it as it is (see `ensureStream` and `StreamPlan`);
    /// blocking. A failure is remembered for `/readyz` and thrown.
    package func ensureStream() throws(StormError) {
        let state: JetStreamStreamState
        do {
            state = try StormNATS.ensureStream(context: raw.raw, configuration: settings.stream)
        } catch {
            streamProblemValue.withLockedValue { $0 = "JetStream stream '\(settings.streamName)' is not ready: \(error.message)" }
            throw error
        }
        logStreamPlan(state, stream: settings.streamName, endpoint: endpoint, logger: logger)
        streamProblemValue.withLockedValue { $0 = nil }
        epochValue.withLockedValue { $0 = state.epoch }
        startStatusSampler()
        logger.info(
            "JetStream stream ready",
            metadata: ["nats.stream": "\(settings.streamName)", "nats.subjects": "\(settings.stream.subjects)", "storm.epoch": "\(state.epoch)"])
    }

    /// While publishes are refused as storage_full, checks in the background whether the stream has room
    /// again (purged, or its limits raised), so `/readyz` recovers even when a load balancer stopped
    /// sending publishes here. At most one check at a time; `/readyz` calls it.
    package func probeRoomIfFull() {
        guard storeHealth.isFull, probingRoom.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged else { return }
        Task {
            let hasRoom = await runBlocking { self.streamHasRoom() }
            if hasRoom { self.storeHealth.stored() }
            self.probingRoom.store(false, ordering: .releasing)
        }
    }

    /// The stream's replicas, leader, contents and limits as last sampled; nil before the first sample.
    package var streamStatus: StreamStatus? { streamStatusValue.withLockedValue { $0 } }

    /// Samples the stream every `StreamStatus.sampleInterval` on a queue of its own (the call blocks up to
    /// the JetStream API timeout while NATS is away), until `destroy`. Started once, when the stream is ready.
    private func startStatusSampler() {
        let start = sampler.withLockedValue { state -> Bool in
            guard !state.started, !state.destroyed else { return false }
            state.started = true
            return true
        }
        guard start else { return }
        DispatchQueue(label: "stormd.stream-status").async { [self] in
            while let sample = sampleStreamStatus() {
                // A failed read (NATS away, or a clustered stream with no leader to answer) keeps the
                // contents and limits but confirms no copy: replicas in sync 0, no leader.
                streamStatusValue.withLockedValue { status in
                    if let sample { status = sample } else { status?.unconfirmed() }
                }
                _ = samplerWake.wait(timeout: .now() + .seconds(Int(StreamStatus.sampleInterval.components.seconds)))
            }
        }
    }

    /// One `js_GetStreamInfo`: nil once the context is destroyed, `.some(nil)` when the read failed.
    private func sampleStreamStatus() -> StreamStatus?? {
        sampler.withLockedValue { state -> StreamStatus?? in
            guard !state.destroyed else { return nil }
            var info: UnsafeMutablePointer<jsStreamInfo>?
            var errorCode = jsErrCode(rawValue: 0)
            guard js_GetStreamInfo(&info, raw.raw, settings.streamName, nil, &errorCode) == NATS_OK, let info else { return .some(nil) }
            defer { jsStreamInfo_Destroy(info) }
            return .some(StreamStatus(info: info.pointee))
        }
    }

    /// While publishes keep failing, asks JetStream for the stream in the background (at most one probe at
    /// a time, 1 s each); an answer ends the failing state. `/readyz` calls it.
    package func probePublishPathIfFailing() {
        let raw = self.raw
        let name = settings.streamName
        publishHealth.probeIfFailing {
            var info: UnsafeMutablePointer<jsStreamInfo>?
            var errorCode = jsErrCode(rawValue: 0)
            var options = jsOptions()
            jsOptions_Init(&options)
            options.Wait = 1000
            guard js_GetStreamInfo(&info, raw.raw, name, &options, &errorCode) == NATS_OK, let info else { return false }
            defer { jsStreamInfo_Destroy(info) }
            guard let cluster = info.pointee.Cluster?.pointee else { return true }
            let leader = cluster.Leader.map { String(cString: $0) }
            let peers: [StreamQuorum.Peer] = (0..<max(0, Int(cluster.ReplicasLen))).compactMap { index in
                guard let peer = cluster.Replicas?[index]?.pointee else { return nil }
                return StreamQuorum.Peer(current: peer.Current, offline: peer.Offline, activeNanoseconds: peer.Active)
            }
            return StreamQuorum.reachable(leader: leader, peers: peers)
        }
    }

    /// Whether the stream is below its byte and message caps; false when it cannot tell. Blocking.
    private func streamHasRoom() -> Bool {
        var info: UnsafeMutablePointer<jsStreamInfo>?
        var errorCode = jsErrCode(rawValue: 0)
        guard js_GetStreamInfo(&info, raw.raw, settings.streamName, nil, &errorCode) == NATS_OK, let info else { return false }
        defer { jsStreamInfo_Destroy(info) }
        guard let config = info.pointee.Config?.pointee else { return false }
        let state = info.pointee.State
        let bytesOK = config.MaxBytes < 0 || state.Bytes < UInt64(clamping: config.MaxBytes)
        let messagesOK = config.MaxMsgs < 0 || state.Msgs < UInt64(clamping: config.MaxMsgs)
        // Below both caps with discard new: room. With discard old the stream never refuses for its own
        // caps, so a refusal was the server's store: only a stored publish tells.
        return config.Discard == js_DiscardNew && bytesOK && messagesOK
    }

    // MARK: Publish

    package func publish(_ envelope: ByteBuffer, subject: String, messageID: String, trace: TraceHeaders? = nil, eventLoop: any EventLoop) -> EventLoopFuture<PublishReceipt> {
        let promise = eventLoop.makePromise(of: PublishReceipt.self)
        guard isStreamReady else {
            promise.fail(StormError(.brokerUnavailable, "JetStream stream '\(settings.streamName)' is not ready yet; nothing was published"))
            return promise.futureResult
        }
        let message: OpaquePointer
        do {
            message = try makeNATSMessage(envelope, subject: subject, trace: trace)
        } catch {
            promise.fail(error)
            return promise.futureResult
        }
        let key = UInt(bitPattern: message)
        acks.insert(key, promise, deadline: .now() + settings.ackTimeout, sweepingOn: eventLoop)
        var pointer: OpaquePointer? = message
        let status: natsStatus = messageID.withCString { id in
            var options = jsPubOptions()
            jsPubOptions_Init(&options)
            options.MsgId = id
            return js_PublishMsgAsync(raw.raw, &pointer, &options)
        }
        if status != NATS_OK {
            // Still ours (nats.c clears the pointer only when it takes the message).
            natsMsg_Destroy(pointer)
            if let failed = acks.remove(key) {
                let code: StormError.Code = status == NATS_MAX_PAYLOAD ? .messageTooLarge : .brokerUnavailable  // refusals by the server come in the ack
                failed.fail(natsError("js_PublishMsgAsync", status, code, "publish on '\(subject)'"))
            }
            return promise.futureResult
        }
        return promise.futureResult
    }

    // MARK: Ordered consumers (fan-out)

    /// Subscribes an ordered push consumer to `subject`, delivering new messages with their stream
    /// sequence. Blocking (it creates the consumer on the server): call it off the event loops.
    package func subscribeOrdered(_ subject: String, box: UnsafeMutableRawPointer) throws(StormError) -> OpaquePointer {
        var subscription: OpaquePointer?
        var errorCode = jsErrCode(rawValue: 0)
        let name = settings.streamName
        let status: natsStatus = name.withCString { stream in
            var options = jsSubOptions()
            jsSubOptions_Init(&options)
            options.Stream = stream
            options.Ordered = true
            options.Config.DeliverPolicy = js_DeliverNew
            return js_Subscribe(&subscription, raw.raw, subject, natsDeliveryWithOffsetCallback, box, nil, &options, &errorCode)
        }
        guard status == NATS_OK, let subscription else {
            throw natsError("js_Subscribe", status, .brokerUnavailable, "subscribe to '\(subject)' on stream '\(name)' (error code \(errorCode.rawValue))")
        }
        return subscription
    }

    // MARK: History

    /// Reads stored messages of `subject` after `offset`: blocking (requests to the server).
    ///
    /// Bounded by `bounds`: every request waits at most the time left (`jsOptions.Wait`, each
    /// `natsSubscription_Fetch` at most 2 s and never past the deadline), and the read stops before its
    /// next request once the deadline passed or its connection went. An unfinished read throws rather
    /// than return part of the history.
    package func history(subject: String, after offset: UInt64, limit: Int, bounds: HistoryReadBounds, allocator: ByteBufferAllocator) throws(StormError) -> ChannelHistory {
        let name = settings.streamName
        /// Throws when the read must stop; otherwise the milliseconds left (at least 1).
        func remaining() throws(StormError) -> Int64 {
            if bounds.isCancelled() {
                throw StormError(.brokerUnavailable, "the history read of '\(subject)' was cancelled: its connection closed")
            }
            let left = bounds.remainingMilliseconds
            guard left > 0 else {
                throw StormError(.brokerUnavailable, "the history read of '\(subject)' on stream '\(name)' ran out of time (the stream is slow or unavailable)")
            }
            return left
        }
        func options(_ wait: Int64) -> jsOptions {
            var options = jsOptions()
            jsOptions_Init(&options)
            options.Wait = wait
            return options
        }
        var errorCode = jsErrCode(rawValue: 0)
        var info: UnsafeMutablePointer<jsStreamInfo>?
        var infoOptions = try options(remaining())
        let infoStatus = js_GetStreamInfo(&info, raw.raw, name, &infoOptions, &errorCode)
        guard infoStatus == NATS_OK, let info else {
            throw natsError("js_GetStreamInfo", infoStatus, .brokerUnavailable, "read stream '\(name)'")
        }
        let firstSequence = info.pointee.State.FirstSeq
        let lastSequence = info.pointee.State.LastSeq
        let epoch = String(info.pointee.Created)
        jsStreamInfo_Destroy(info)
        epochValue.withLockedValue { $0 = epoch }

        var history = ChannelHistory(epoch: epoch, messages: [], latestOffset: nil, earliestOffset: nil)
        history.lostUpTo = firstSequence > 0 ? firstSequence - 1 : 0
        history.brokerLatestOffset = lastSequence

        var last: OpaquePointer?
        errorCode = jsErrCode(rawValue: 0)
        var lastOptions = try options(remaining())
        let lastStatus = js_GetLastMsg(&last, raw.raw, name, subject, &lastOptions, &errorCode)
        if lastStatus == NATS_OK, let last {
            history.latestOffset = natsMsg_GetSequence(last)
            natsMsg_Destroy(last)
        } else if errorCode != JSNoMessageFoundErr && lastStatus != NATS_NOT_FOUND {
            throw natsError("js_GetLastMsg", lastStatus, .brokerUnavailable, "read the last message of '\(subject)'")
        }
        guard let latest = history.latestOffset, latest > offset, limit > 0 else { return history }

        // An ephemeral pull consumer from the first wanted sequence, filtered to the channel.
        var subscription: OpaquePointer?
        errorCode = jsErrCode(rawValue: 0)
        var subscribeOptions = try options(remaining())
        let subscribeStatus: natsStatus = name.withCString { stream in
            var options = jsSubOptions()
            jsSubOptions_Init(&options)
            options.Stream = stream
            options.Config.DeliverPolicy = js_DeliverByStartSequence
            options.Config.OptStartSeq = offset + 1
            options.Config.AckPolicy = js_AckNone
            options.Config.InactiveThreshold = 5_000_000_000
            return js_PullSubscribe(&subscription, raw.raw, subject, nil, &subscribeOptions, &options, &errorCode)
        }
        guard subscribeStatus == NATS_OK, let subscription else {
            throw natsError("js_PullSubscribe", subscribeStatus, .brokerUnavailable, "read history of '\(subject)'")
        }
        defer {
            natsSubscription_Unsubscribe(subscription)
            natsSubscription_Destroy(subscription)
        }
        // Complete once `latest` is delivered (or the limit reached); NumPending is not trusted, and running
        // dry before `latest` is an incomplete read, not the end (HistoryFetchProgress).
        var progress = HistoryFetchProgress(after: offset, latest: latest, limit: limit)
        while !progress.isFinished {
            // The fetch boundary: a cancelled or late read stops here.
            let wait = try min(2000, remaining())
            var list = natsMsgList()
            let batch = Int32(clamping: progress.nextBatch(256))
            let fetchStatus = natsSubscription_Fetch(&list, subscription, batch, wait, &errorCode)
            guard fetchStatus == NATS_OK else {
                // A full 2 s without a message. A shorter wait cut by the deadline says nothing, and the
                // check at the top of the loop throws.
                if fetchStatus == NATS_TIMEOUT {
                    guard wait >= 2000 else { continue }
                    if case .incomplete(let delivered) = progress.fetchTimedOut() {
                        throw StormError(.brokerUnavailable, "the history read of '\(subject)' on stream '\(name)' is incomplete: JetStream delivered up to offset \(delivered) of \(latest), then nothing for 2 s (a replica behind after a leader change?); retry")
                    }
                    break
                }
                throw natsError("natsSubscription_Fetch", fetchStatus, .brokerUnavailable, "read history of '\(subject)'")
            }
            var unreadable = false
            for index in 0..<Int(list.Count) {
                guard let message = list.Msgs[index] else { continue }
                var meta: UnsafeMutablePointer<jsMsgMetaData>?
                guard natsMsg_GetMetaData(&meta, message) == NATS_OK, let meta else {
                    unreadable = true  // never skip a message silently: that is a gap
                    break
                }
                let sequence = meta.pointee.Sequence.Stream
                jsMsgMetaData_Destroy(meta)
                guard progress.delivered(sequence: sequence) != .drop else { continue }
                history.messages.append(StoredEnvelope(offset: sequence, envelope: copyData(of: message, allocator: allocator)))
                if history.earliestOffset == nil { history.earliestOffset = sequence }
            }
            natsMsgList_Destroy(&list)
            if unreadable {
                throw StormError(.brokerUnavailable, "the history read of '\(subject)' on stream '\(name)' got a message without JetStream metadata (no stream sequence); retry")
            }
        }
        return history
    }

    /// Fails every publish still waiting for its acknowledgement (the connection is gone).
    package func failPending() {
        acks.failAll(StormError(.brokerUnavailable, "the NATS connection closed before JetStream acknowledged the message; retry with the same idempotency key"))
    }
}

/// A `jsCtx*`. `@unchecked Sendable`: nats.c locks the context internally and it lives until `destroy()`.
package struct JetStreamHandle: @unchecked Sendable {
    package let raw: OpaquePointer
}

/// The retained `AckTable` handed to nats.c. `@unchecked Sendable`: only `destroy()` uses it, once.
package struct AckTablePointer: @unchecked Sendable {
    package let raw: UnsafeMutableRawPointer
}

/// Publishes awaiting JetStream's acknowledgement, keyed by the `natsMsg` pointer nats.c hands back.
///
/// A pointer is reused once nats.c frees its message, so each entry also carries a ticket: a timeout
/// removes only the entry it was registered with, never a later publish that got the same address.
///
/// Timeouts are swept, not scheduled: one repeated task checks the oldest publishes a few times a
/// second. A scheduled task per publish kept tens of thousands of timers in the event loop's heap at
/// 16,000 publishes/s, each firing later only to find its publish long acknowledged.
package final class AckTable: Sendable {
    private struct Entry {
        package var ticket: UInt64
        package var promise: EventLoopPromise<PublishReceipt>
    }

    private struct Expiry {
        package var key: UInt
        package var ticket: UInt64
        package var deadline: NIODeadline
    }

    private struct Table {
        package var entries: [UInt: Entry] = [:]
        package var nextTicket: UInt64 = 0
        /// Publishes in the order they were made, so oldest (first to time out) first; `head` is the first
        /// not yet looked at.
        package var expiries: [Expiry] = []
        package var head = 0
        package var sweeper: RepeatedTask?
    }

    private let table = NIOLockedValueBox(Table())
    /// Told about every refusal for lack of room and every stored message (nil in unit tests).
    package let health: StoreHealth?
    /// Told about every stored message, timeout and unavailable refusal (nil in unit tests).
    package let publishHealth: PublishHealth?

    package init(health: StoreHealth? = nil, publishHealth: PublishHealth? = nil) {
        self.health = health
        self.publishHealth = publishHealth
    }

    /// How often timeouts are looked for: a publish fails at most this much after its deadline.
    package static let sweepInterval = TimeAmount.milliseconds(100)

    /// Registers a publish that fails at `deadline` unless acknowledged; the first call starts the sweep on
    /// `eventLoop`.
    package func insert(_ key: UInt, _ promise: EventLoopPromise<PublishReceipt>, deadline: NIODeadline, sweepingOn eventLoop: any EventLoop) {
        table.withLockedValue { table in
            table.nextTicket &+= 1
            table.entries[key] = Entry(ticket: table.nextTicket, promise: promise)
            table.expiries.append(Expiry(key: key, ticket: table.nextTicket, deadline: deadline))
            // Scheduling only takes the loop's own lock, and the sweep takes this one on the loop later.
            if table.sweeper == nil {
                table.sweeper = eventLoop.scheduleRepeatedTask(initialDelay: Self.sweepInterval, delay: Self.sweepInterval) {
                    [weak self] _ in self?.expire(now: .now())
                }
            }
        }
    }

    /// Fails the publishes whose deadline passed, and forgets the acknowledged ones at the front.
    package func expire(now: NIODeadline) {
        let expired = table.withLockedValue { table -> [EventLoopPromise<PublishReceipt>] in
            var expired: [EventLoopPromise<PublishReceipt>] = []
            while table.head < table.expiries.count {
                let expiry = table.expiries[table.head]
                guard let entry = table.entries[expiry.key], entry.ticket == expiry.ticket else {
                    table.head += 1  // acknowledged already
                    continue
                }
                guard expiry.deadline <= now else { break }
                table.entries[expiry.key] = nil
                expired.append(entry.promise)
                table.head += 1
            }
            if table.head > 1024, table.head * 2 > table.expiries.count {
                table.expiries.removeFirst(table.head)
                table.head = 0
            }
            return expired
        }
        for promise in expired {
            publishHealth?.failed(reason: "no acknowledgement in time")
            promise.fail(
                StormError(.brokerUnavailable, "JetStream did not acknowledge the message in time; it may or may not be stored: retry with the same idempotency key"))
        }
    }

    /// Removes the entry for `key` (the acknowledgement arrived, or the publish failed at once).
    package func remove(_ key: UInt) -> EventLoopPromise<PublishReceipt>? {
        table.withLockedValue { $0.entries.removeValue(forKey: key)?.promise }
    }

    package func failAll(_ error: StormError) {
        let (all, sweeper) = table.withLockedValue { table -> ([EventLoopPromise<PublishReceipt>], RepeatedTask?) in
            defer {
                table.entries.removeAll()
                table.expiries.removeAll()
                table.head = 0
                table.sweeper = nil
            }
            return (table.entries.values.map(\.promise), table.sweeper)
        }
        sweeper?.cancel()
        for promise in all { promise.fail(error) }
    }
}

/// A `natsMsg` holding `envelope`, with the trace context as `traceparent`/`tracestate` headers; the caller
/// owns it (destroy it unless nats.c took it).
package func makeNATSMessage(_ envelope: ByteBuffer, subject: String, trace: TraceHeaders?) throws(StormError) -> OpaquePointer {
    var message: OpaquePointer?
    let created = envelope.withUnsafeReadableBytes { bytes in
        natsMsg_Create(&message, subject, nil, bytes.baseAddress?.assumingMemoryBound(to: CChar.self), Int32(clamping: bytes.count))
    }
    guard created == NATS_OK, let message else {
        throw natsError("natsMsg_Create", created, .internalError, "build a message for '\(subject)'")
    }
    guard let trace else { return message }
    do {
        try natsCall("natsMsgHeader_Set", .internalError, "set traceparent") { natsMsgHeader_Set(message, TraceHeaders.traceparentKey, trace.traceparent) }
        if let state = trace.tracestate {
            try natsCall("natsMsgHeader_Set", .internalError, "set tracestate") { natsMsgHeader_Set(message, TraceHeaders.tracestateKey, state) }
        }
    } catch {
        natsMsg_Destroy(message)
        throw error
    }
    return message
}

/// The trace context in a received message's headers, if it carries a valid one.
package func traceHeaders(of message: OpaquePointer) -> TraceHeaders? {
    var parent: UnsafePointer<CChar>?
    guard natsMsgHeader_Get(message, TraceHeaders.traceparentKey, &parent) == NATS_OK, let parent else { return nil }
    var state: UnsafePointer<CChar>?
    let stateText = natsMsgHeader_Get(message, TraceHeaders.tracestateKey, &state) == NATS_OK ? state.map { String(cString: $0) } : nil
    return TraceHeaders(traceparent: String(cString: parent), tracestate: stateText)
}

/// Copies a message's data out of nats.c's memory.
package func copyData(of message: OpaquePointer, allocator: ByteBufferAllocator) -> ByteBuffer {
    let length = Int(natsMsg_GetDataLength(message))
    var buffer = allocator.buffer(capacity: length)
    if length > 0, let data = natsMsg_GetData(message) {
        buffer.writeBytes(UnsafeRawBufferPointer(start: UnsafeRawPointer(data), count: length))
    }
    return buffer
}


/// JetStream's answer to an asynchronous publish, on a nats.c thread.
private func jetStreamAckCallback(
    _ context: OpaquePointer?, _ message: OpaquePointer?, _ ack: UnsafeMutablePointer<jsPubAck>?,
    _ failure: UnsafeMutablePointer<jsPubAckErr>?, _ closure: UnsafeMutableRawPointer?
) {
    defer { natsMsg_Destroy(message) }
    guard let closure, let message else { return }
    let acks = Unmanaged<AckTable>.fromOpaque(closure).takeUnretainedValue()
    guard let promise = acks.remove(UInt(bitPattern: message)) else { return }  // timed out already
    if let ack {
        acks.health?.stored()
        acks.publishHealth?.stored()
        promise.succeed(PublishReceipt(offset: ack.pointee.Sequence, duplicate: ack.pointee.Duplicate))
    } else {
        let detail = failure?.pointee.ErrText.map { String(cString: $0) }
        let errorCode = Int(failure?.pointee.ErrCode.rawValue ?? 0)
        let code = PublishRefusal.code(errorCode: errorCode, text: detail)
        if code == .storageFull, let health = acks.health {
            health.refused()
            promise.fail(StormError(.storageFull, health.clientMessage(detail: detail)))
            return
        }
        var text = "JetStream refused the message"
        if let detail { text += ": " + detail }
        if errorCode != 0 { text += " (JetStream error code \(errorCode))" }
        if code == .brokerUnavailable { acks.publishHealth?.failed(reason: text) }
        promise.fail(StormError(code, text))
    }
}

/// Whether JetStream is refusing publishes for lack of room: read by `/readyz`, told by every
/// acknowledgement. The success path costs one relaxed atomic load; the lock is taken only while full.
package final class StoreHealth: Sendable {
    private let full = ManagedAtomic(false)
    private let state = NIOLockedValueBox(StorageFullState())
    private let stream: JetStreamStreamConfiguration
    private let endpoint: String
    private let logger: Logger

    package init(stream: JetStreamStreamConfiguration, endpoint: String, logger: Logger) {
        self.stream = stream
        self.endpoint = endpoint
        self.logger = logger
    }

    package var isFull: Bool { full.load(ordering: .relaxed) }

    /// What a refused client is told.
    package func clientMessage(detail: String?) -> String {
        "the message store is full: JetStream stream '\(stream.name)' refused the message (\(detail ?? "no room")); nothing was published, retry later"
    }

    /// What an operator must do, for the warning and `/readyz`.
    package var action: String {
        stream.discard == .new
            ? "raise --stream-max-bytes/--stream-max-messages (now \(stream.maxBytes < 0 ? "unlimited" : "\(stream.maxBytes)") bytes, \(stream.maxMessages < 0 ? "unlimited" : "\(stream.maxMessages)") messages) with --stream-update, purge the stream, or use --stream-discard old"
            : "free disk space or raise the JetStream store limits of the NATS server (max_file_store), or lower --stream-max-bytes/--stream-max-age"
    }

    /// A publish was refused for lack of room: logs a warning now and then (rate-limited).
    package func refused() {
        full.store(true, ordering: .relaxed)
        guard let count = state.withLockedValue({ $0.refused(at: .now()) }) else { return }
        logger.warning(
            "JetStream stream '\(stream.name)' is full: publishes are refused as storage_full (HTTP 507); \(action)",
            metadata: ["nats.stream": "\(stream.name)", "nats.url": "\(endpoint)", "storm.refused": "\(count)"])
    }

    /// A publish was stored: ends a full period (logged once).
    package func stored() {
        guard full.load(ordering: .relaxed) else { return }
        full.store(false, ordering: .relaxed)
        if state.withLockedValue({ $0.stored() }) {
            logger.notice("JetStream stream '\(stream.name)' accepts publishes again", metadata: ["nats.stream": "\(stream.name)", "nats.url": "\(endpoint)"])
        }
    }
}
