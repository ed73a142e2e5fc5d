import Atomics
import CNATS
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import StormBroker
import StormCore
import StormObservability

/// How a gateway reaches NATS. Every field has a default except the server list.
///
/// - `urls` (`[String]`): the NATS servers, `nats://HOST:PORT` or `tls://HOST:PORT`, credentials allowed in the
///   URL (`nats://user:pass@host:4222`; they never appear in logs or errors). Default `["nats://127.0.0.1:4222"]`.
/// - `subjectPrefix` (`String`, `"storm.ch"`): channel `a.b` travels on subject `<prefix>.a.b`, so STORM never
///   collides with other users of the same NATS account. Same grammar as a channel name.
/// - `connectionName` (`String`, `"stormd"`): shown by `nats-server`'s `/connz` and `nats-top`; put the
///   gateway's instance id in it so an operator can tell gateways apart.
/// - `reconnectWait` (`Duration`, 250 ms): pause between two attempts on the same server.
/// - `maxReconnectWait` (`Duration`, 5 s): the cap of the reconnect backoff, which doubles from
///   `reconnectWait` after each pass through the server list, with ±20 % jitter.
/// - `maxReconnectAttempts` (`Int`, -1 = forever): a gateway outlives a NATS restart, so the default never gives
///   up; a finite number closes the connection for good when exhausted (logged at error).
/// - `retryOnFailedConnect` (`Bool`, true): a NATS that is down when the gateway starts is retried in the
///   background and `start()` returns; false makes `start()` fail with `.connection` instead (one-shot tools).
/// - `connectTimeout` (`Duration`, 2 s): TCP and handshake timeout per server and attempt.
/// - `subscribeTimeout` (`Duration`, 5 s): how long `subscribe` waits for the server to confirm the interest.
/// - `drainTimeout` (`Duration`, 5 s): how long `shutdown()` lets pending deliveries and publishes finish.
/// - `pendingMessagesLimit` (`Int`, 1,000,000) and `pendingBytesLimit` (`Int`, 1 GiB): per-subscription
///   backlog inside nats.c before it declares the gateway a slow consumer and drops. nats.c's own defaults
///   (65,536 / 64 MB) drop messages under a burst that the gateway would absorb in a few milliseconds.
/// - `deliveryThreads` (`Int`, 1): size of nats.c's global delivery pool. Without the pool nats.c starts a
///   thread per subscription, and a gateway holds one subscription per channel its clients watch. The pool is
///   per process and only grows: it is the largest value any broker in the process asked for. One subscription
///   is always served by one thread, which keeps a channel's messages in order.
package struct NATSBrokerConfiguration: Sendable {
    package var urls: [String] = ["nats://127.0.0.1:4222"]
    package var subjectPrefix: String = "storm.ch"
    package var connectionName: String = "stormd"
    package var reconnectWait: Duration = .milliseconds(250)
    package var maxReconnectWait: Duration = .seconds(5)
    package var maxReconnectAttempts: Int = -1
    package var retryOnFailedConnect: Bool = true
    package var connectTimeout: Duration = .seconds(2)
    package var subscribeTimeout: Duration = .seconds(5)
    package var drainTimeout: Duration = .seconds(5)
    package var pendingMessagesLimit: Int = 1_000_000
    package var pendingBytesLimit: Int = 1 << 30
    package var deliveryThreads: Int = 1
    /// Retries of the stream lookup/creation while NATS or JetStream is not ready: 250 ms doubling to 10 s.
    package var streamRetryBackoff = RetryBackoff(initial: .milliseconds(250), cap: .seconds(10), jitter: 0.2)
    /// JetStream durability (default on): publishes are acknowledged once stored, messages carry offsets,
    /// and history and recovery work. `nil` uses core NATS only (no history, no offsets).
    package var jetStream: JetStreamSettings? = JetStreamSettings()
    /// TLS to NATS (`--nats-ca`, `--nats-cert`, `--nats-key`): see `NATSTLSFiles`. Default none: TLS only
    /// for `tls://` URLs, verified against the system's trust store.
    package var tls = NATSTLSFiles()

    package init(
        urls: [String] = ["nats://127.0.0.1:4222"],
        subjectPrefix: String = "storm.ch",
        connectionName: String = "stormd",
        reconnectWait: Duration = .milliseconds(250),
        maxReconnectAttempts: Int = -1,
        retryOnFailedConnect: Bool = true,
        connectTimeout: Duration = .seconds(2),
        subscribeTimeout: Duration = .seconds(5),
        drainTimeout: Duration = .seconds(5),
        pendingMessagesLimit: Int = 1_000_000,
        pendingBytesLimit: Int = 1 << 30,
        deliveryThreads: Int = 1
    ) {
        self.urls = urls
        self.subjectPrefix = subjectPrefix
        self.connectionName = connectionName
        self.reconnectWait = reconnectWait
        self.maxReconnectAttempts = maxReconnectAttempts
        self.retryOnFailedConnect = retryOnFailedConnect
        self.connectTimeout = connectTimeout
        self.subscribeTimeout = subscribeTimeout
        self.drainTimeout = drainTimeout
        self.pendingMessagesLimit = pendingMessagesLimit
        self.pendingBytesLimit = pendingBytesLimit
        self.deliveryThreads = deliveryThreads
    }

    /// The reconnect delays: from `reconnectWait`, doubling to `maxReconnectWait`, jittered.
    package var reconnectBackoff: RetryBackoff {
        RetryBackoff(initial: reconnectWait, cap: max(reconnectWait, maxReconnectWait), jitter: 0.2)
    }
}

/// The real broker: carries envelopes between gateways through NATS core pub/sub, via nats.c.
///
/// Threads: nats.c delivers on its own pool threads and runs connection events on its own callback thread;
/// neither can capture Swift context, so each gets an `Unmanaged` box as its closure pointer. Calls that wait
/// for the server (connect, the flush in `subscribe`) run on `NIOThreadPool`, never on an event loop or the
/// cooperative pool, which has only as many threads as cores.
///
/// Memory: the `natsConnection` is destroyed in `deinit`, not in `shutdown()`, so a publish racing shutdown
/// meets a closed connection (a clean error) rather than freed memory. The connection-events box is released
/// by nats.c's closed callback, the last event a connection ever raises; a subscription's box by its
/// on-complete callback, which nats.c runs after the handler has returned for the last time.
///
/// Publishing while disconnected is refused with `.brokerUnavailable` instead of letting nats.c buffer it:
/// the client gets a clear error now rather than a message that may or may not go out after a reconnect.
/// Only a publish that races the disconnect itself can still land in nats.c's reconnect buffer (8 MB), and is
/// sent when the connection comes back.
package final class NATSBroker: MessageBroker {
    private enum Phase {
        case idle
        case starting
        case running(NATSConnectionHandle)
        /// Carries the connection (if one was made) so `deinit` can destroy it.
        case stopped(NATSConnectionHandle?)
    }

    private struct State {
        package var phase: Phase = .idle
        /// Live subscriptions, so `shutdown()` can free the ones nobody cancelled.
        package var subscriptions: [ObjectIdentifier: NATSSubscription] = [:]
        /// The JetStream context, when durability is on and the connection exists.
        package var jetStream: JetStreamContext?
        /// A background attempt to create the stream is running (NATS was down at start).
        package var ensuringStream = false
    }

    package let configuration: NATSBrokerConfiguration
    private let logger: Logger
    private let allocator = ByteBufferAllocator()
    private let state = NIOLockedValueBox(State())
    /// Subscriptions being made (their blocking part queued or running), for `/readyz`.
    package let subscribeWaits = BlockingWaits()
    /// Our own reference to the callbacks' box (nats.c has no getter), for the shutdown flag.
    private let events = NIOLockedValueBox<NATSConnectionEvents?>(nil)
    /// Subject prefix with its trailing dot, built once for every publish.
    private let subjectPrefixWithDot: String

    package let endpointDescription: String

    package init(configuration: NATSBrokerConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
        self.subjectPrefixWithDot = configuration.subjectPrefix + "."
        self.endpointDescription = configuration.urls.map(redactedNATSURL).joined(separator: ",")
    }

    deinit {
        let connection: NATSConnectionHandle? = state.withLockedValue { state in
            switch state.phase {
            case .running(let connection): return connection
            case .stopped(let connection): return connection
            case .idle, .starting: return nil
            }
        }
        // Nobody can hold the pointer any more: every user went through `self`. Destroying closes the
        // connection if `shutdown()` was never called; the closed callback then frees the events box.
        let jetStream = state.withLockedValue { $0.jetStream }
        if let connection {
            natsConnection_Destroy(connection.raw)
        }
        jetStream?.destroy()
    }

    /// The NATS subject a channel travels on.
    package func subject(for channel: ChannelName) -> String {
        subjectPrefixWithDot + channel.rawValue
    }

    package var streamStatus: StreamStatus? { state.withLockedValue { $0.jetStream }?.streamStatus }

    package var isConnected: Bool {
        guard case .running(let connection) = state.withLockedValue({ $0.phase }) else { return false }
        return natsConnection_Status(connection.raw) == NATS_CONN_STATUS_CONNECTED
    }

    // MARK: start

    package func start() async throws(StormError) {
        let mayStart: Bool = state.withLockedValue { state in
            guard case .idle = state.phase else { return false }
            state.phase = .starting
            return true
        }
        guard mayStart else {
            if case .stopped = state.withLockedValue({ $0.phase }) {
                throw StormError(.brokerUnavailable, "the NATS broker was shut down and cannot be started again")
            }
            return  // already started (or starting): start() is idempotent
        }

        let connection: NATSConnectionHandle
        do {
            connection = try await connect()
        } catch {
            state.withLockedValue { state in
                if case .starting = state.phase { state.phase = .idle }
            }
            throw error
        }

        let raced: Bool = state.withLockedValue { state in
            guard case .starting = state.phase else {
                state.phase = .stopped(connection)
                return true
            }
            state.phase = .running(connection)
            return false
        }
        if raced {
            // shutdown() ran while we were connecting; it could not see this connection, so close it here.
            events.withLockedValue { $0 }?.stopping.store(true, ordering: .releasing)
            natsConnection_Close(connection.raw)
            throw StormError(.brokerUnavailable, "the NATS broker was shut down while it was connecting")
        }
        if let settings = configuration.jetStream {
            var settings = settings
            if settings.stream.subjectPrefix != configuration.subjectPrefix, settings.stream.name == JetStreamStreamConfiguration().name {
                settings.stream.name = JetStreamStreamConfiguration.defaultName(forPrefix: configuration.subjectPrefix)
            }
            settings.stream.subjectPrefix = configuration.subjectPrefix
            let context = try JetStreamContext(connection: connection, settings: settings, endpoint: endpointDescription, logger: logger)
            state.withLockedValue { $0.jetStream = context }
            // One attempt now, so a gateway whose NATS is up starts with its stream; otherwise (NATS or
            // JetStream not ready: a cold boot, a cluster without a leader yet) keep trying in the
            // background. Publishes answer broker_unavailable and /readyz 503 until the stream is there.
            var ready = false
            if natsConnection_Status(connection.raw) == NATS_CONN_STATUS_CONNECTED {
                let failure: StormError? = await runBlocking {
                    do throws(StormError) {
                        try context.ensureStream()
                        return nil
                    } catch {
                        return error
                    }
                }
                if let failure {
                    logStreamNotReady(failure, attempt: 0, retryIn: nil)
                } else {
                    ready = true
                }
            }
            if !ready { startEnsuringStream(context) }
        }
    }

    /// Retries `ensureStream` with capped, jittered backoff until the stream is there or the broker stops.
    private func startEnsuringStream(_ context: JetStreamContext) {
        let mayStart: Bool = state.withLockedValue { state in
            guard !state.ensuringStream else { return false }
            state.ensuringStream = true
            return true
        }
        guard mayStart else { return }
        let backoff = configuration.streamRetryBackoff
        Task { [weak self] in
            var attempt = 0
            while true {
                let delay = backoff.delay(attempt: attempt)
                do {
                    try await Task.sleep(for: delay)
                } catch {
                    break
                }
                guard let self, !self.isStopped else { break }
                guard self.isConnected else {
                    attempt += 1
                    self.logger.warning(
                        "waiting for NATS before the JetStream stream '\(context.settings.streamName)' can be looked up; check that nats-server runs and listens at \(self.endpointDescription); /readyz answers 503 meanwhile",
                        metadata: ["nats.stream": "\(context.settings.streamName)", "nats.url": "\(self.endpointDescription)", "storm.attempt": "\(attempt)"])
                    continue
                }
                let failure: StormError? = await runBlocking {
                    do throws(StormError) {
                        try context.ensureStream()
                        return nil
                    } catch {
                        return error
                    }
                }
                guard let failure else { break }
                attempt += 1
                self.logStreamNotReady(failure, attempt: attempt, retryIn: backoff.delay(attempt: attempt, random: 0.5))
            }
            self?.state.withLockedValue { $0.ensuringStream = false }
        }
    }

    private var isStopped: Bool {
        if case .stopped = state.withLockedValue({ $0.phase }) { return true }
        return false
    }

    /// The log line of a failed stream lookup or creation: which stream, which NATS, what to check.
    private func logStreamNotReady(_ failure: StormError, attempt: Int, retryIn: Duration?) {
        let name = state.withLockedValue { $0.jetStream }?.settings.streamName ?? "?"
        let retry = retryIn.map { "retrying in about \(milliseconds($0)) ms" } ?? "retrying in the background"
        logger.warning(
            "JetStream stream '\(name)' is not ready on \(endpointDescription): \(failure.message); \(retry). Check that JetStream is enabled (nats-server -js), that a JetStream cluster has a leader and at least --stream-replicas servers, and that no other stream captures the subjects (or run with --jetstream off for core NATS without history); /readyz answers 503 meanwhile",
            metadata: ["nats.stream": "\(name)", "nats.url": "\(endpointDescription)", "storm.attempt": "\(attempt)"])
    }

    /// The JetStream context when durability is on (its stream may not be ready yet).
    private func readyJetStream() -> JetStreamContext? {
        state.withLockedValue { $0.jetStream }
    }

    /// Why publishing cannot work right now, for `/readyz`: NATS disconnected, the stream not ready, or
    /// the store full (until a publish is stored again), or publishes failing as unavailable (`PublishHealth`).
    package var unavailableReason: String? {
        guard isConnected else { return "broker \(endpointDescription) is not connected" }
        if let waited = subscribeWaits.longestWait(), waited >= BlockingWaits.threshold {
            return "a subscribe has waited \(waited.nanoseconds / 1_000_000_000) s for NATS at \(endpointDescription) (its thread pool is busy or the server does not answer): new subscribes cannot be served"
        }
        guard let context = state.withLockedValue({ $0.jetStream }) else { return nil }
        if let problem = context.streamProblem { return problem }
        if context.storeHealth.isFull {
            context.probeRoomIfFull()
            return "JetStream stream '\(context.settings.streamName)' is full: publishes are refused as storage_full; \(context.storeHealth.action)"
        }
        if let problem = context.publishHealth.problem {
            context.probePublishPathIfFailing()
            return problem
        }
        return nil
    }

    package var epoch: String {
        state.withLockedValue { $0.jetStream }?.epoch ?? ""
    }

    package func history(of channel: ChannelName, after offset: UInt64, limit: Int, bounds: HistoryReadBounds) async throws(StormError) -> ChannelHistory {
        _ = try connectedConnection(orElse: "history cannot be read")
        guard let context = readyJetStream() else {
            throw StormError(.notFound, "history is not kept: JetStream is off (--jetstream off)")
        }
        let subject = subject(for: channel)
        let allocator = self.allocator
        // On the history pool: a read that waits on a slow stream never holds a thread that a subscribe needs.
        let outcome: Result<ChannelHistory, StormError> = await runBlocking(on: HistoryThreads.pool) {
            do throws(StormError) {
                return .success(try context.history(subject: subject, after: offset, limit: limit, bounds: bounds, allocator: allocator))
            } catch {
                return .failure(error)
            }
        }
        return try outcome.get()
    }

    /// Validates the configuration, builds nats.c options and connects. Returns the connection, which may still
    /// be retrying in the background.
    private func connect() async throws(StormError) -> NATSConnectionHandle {
        let config = configuration
        try Self.validate(config)
        let servers = endpointDescription
        let events = NATSConnectionEvents(logger: logger, endpoint: servers, backoff: config.reconnectBackoff)
        self.events.withLockedValue { $0 = events }
        // Retained for nats.c; released by natsClosedCallback, or below if no connection ever exists.
        let eventsPointer = Unmanaged.passRetained(events).toOpaque()
        let options: OpaquePointer
        do {
            options = try makeNATSOptions(config, events: eventsPointer)
        } catch {
            Unmanaged<NATSConnectionEvents>.fromOpaque(eventsPointer).release()
            throw error
        }
        defer { natsOptions_Destroy(options) }

        // natsConnection_Connect blocks for a TCP connect and handshake per server (or, without retries,
        // through the whole list): keep it off the event loops and the cooperative pool.
        let sendableOptions = NATSOptionsHandle(raw: options)
        let outcome: NATSConnectOutcome = await runBlocking { connectNATS(sendableOptions, servers: servers) }

        guard let connection = outcome.connection, outcome.failure == nil else {
            // No connection object survives a failed connect, so no callback can ever use the box.
            Unmanaged<NATSConnectionEvents>.fromOpaque(eventsPointer).release()
            throw outcome.failure
                ?? StormError(.connection, "NATS could not connect to \(servers): no connection was returned [natsConnection_Connect]")
        }
        if outcome.stillRetrying {
            logger.warning(
                "NATS is unreachable; retrying in the background (forever, capped backoff), publishing and subscribing fail until it answers; check that nats-server runs and listens there",
                metadata: ["nats.url": "\(servers)", "nats.reconnect_wait_ms": "\(milliseconds(config.reconnectWait))"])
        } else {
            logger.info("NATS connected", metadata: ["nats.url": "\(connectedURL(connection.raw) ?? servers)"])
        }
        return connection
    }

    /// Refuses what nats.c would only catch later or misread: empty lists, unparsable URLs, a prefix that is
    /// not a valid subject, limits that mean nothing.
    package static func validate(_ config: NATSBrokerConfiguration) throws(StormError) {
        guard !config.urls.isEmpty else {
            throw StormError(.configuration, "no NATS server URL is configured: give at least one, e.g. nats://127.0.0.1:4222")
        }
        for url in config.urls {
            if let problem = natsURLProblem(url) {
                throw StormError(.configuration, "NATS URL '\(redactedNATSURL(url))' is invalid: \(problem)")
            }
        }
        do {
            _ = try ChannelName(validating: config.subjectPrefix)
        } catch {
            throw StormError(
                .configuration,
                "NATS subject prefix '\(config.subjectPrefix)' is invalid: it must be a valid channel name (\(error.message))")
        }
        guard config.pendingMessagesLimit > 0, config.pendingBytesLimit > 0 else {
            throw StormError(.configuration, "NATS pending limits must be positive (messages \(config.pendingMessagesLimit), bytes \(config.pendingBytesLimit))")
        }
        guard config.deliveryThreads >= 1 else {
            throw StormError(.configuration, "NATS delivery threads must be at least 1, not \(config.deliveryThreads)")
        }
        guard config.reconnectWait >= .zero, config.connectTimeout > .zero, config.subscribeTimeout > .zero,
            config.drainTimeout > .zero
        else {
            throw StormError(.configuration, "NATS timeouts must be positive and the reconnect wait not negative")
        }
    }

    // MARK: publish and subscribe

    package func publish(_ envelope: ByteBuffer, on channel: ChannelName, idempotencyKey: String, trace: TraceHeaders?, eventLoop: any EventLoop) -> EventLoopFuture<PublishReceipt> {
        do {
            _ = try connectedConnection(orElse: "nothing was published")
            if let context = readyJetStream() {
                return context.publish(envelope, subject: subject(for: channel), messageID: idempotencyKey, trace: trace, eventLoop: eventLoop)
            }
            try publishNow(envelope, on: channel, trace: trace)
            return eventLoop.makeSucceededFuture(PublishReceipt(offset: 0, duplicate: false))
        } catch {
            return eventLoop.makeFailedFuture(error)
        }
    }

    /// Hands the envelope to nats.c, which copies it into its outbound buffer (its flusher thread writes
    /// it out): cheap and non-blocking in normal operation, so it runs on the caller's event loop.
    private func publishNow(_ envelope: ByteBuffer, on channel: ChannelName, trace: TraceHeaders?) throws(StormError) {
        try publishNow(envelope, subject: subject(for: channel), trace: trace)
    }

    private func publishNow(_ envelope: ByteBuffer, subject: String, trace: TraceHeaders?) throws(StormError) {
        let connection = try connectedConnection(orElse: "nothing was published")
        guard envelope.readableBytes <= Int(Int32.max) else {
            throw StormError(.messageTooLarge, "envelope of \(envelope.readableBytes) bytes is too large for NATS")
        }
        if let trace {
            // With trace context: a message with headers (natsConnection_PublishMsg copies it).
            let message = try makeNATSMessage(envelope, subject: subject, trace: trace)
            defer { natsMsg_Destroy(message) }
            try natsCall("natsConnection_PublishMsg", .brokerUnavailable, "publish on '\(subject)'") {
                natsConnection_PublishMsg(connection.raw, message)
            }
            return
        }
        try natsCall("natsConnection_Publish", .brokerUnavailable, "publish on '\(subject)'") {
            envelope.withUnsafeReadableBytes { bytes in
                natsConnection_Publish(connection.raw, subject, bytes.baseAddress, Int32(bytes.count))
            }
        }
    }

    package func subscribe(to channel: ChannelName, deliver: @escaping BrokerDelivery) async throws(StormError) -> any BrokerSubscription {
        try await subscribe(to: channel, readingTrace: false) { envelope, offset, _ in deliver(envelope, offset) }
    }

    package func subscribeTraced(to channel: ChannelName, deliver: @escaping TracedBrokerDelivery) async throws(StormError) -> any BrokerSubscription {
        try await subscribe(to: channel, readingTrace: true, deliver: deliver)
    }

    private func subscribe(to channel: ChannelName, readingTrace: Bool, deliver: @escaping TracedBrokerDelivery) async throws(StormError) -> any BrokerSubscription {
        try await subscribe(subject: subject(for: channel), throughStream: true, readingTrace: readingTrace, deliver: deliver)
    }

    // MARK: control plane

    /// The core NATS subject of a gateway's control requests: outside `<prefix>.>`, so no channel name
    /// maps onto it and the stream never captures it; the prefix keeps clusters that share NATS apart.
    package func controlSubject(of gateway: String) -> String {
        "_STORM.control.\(configuration.subjectPrefix).\(gateway)"
    }

    package func sendControl(_ message: [UInt8], to gateway: String) async throws(StormError) {
        try publishNow(ByteBuffer(bytes: message), subject: controlSubject(of: gateway), trace: nil)
    }

    package func subscribeControl(gateway: String, deliver: @escaping @Sendable ([UInt8]) -> Void) async throws(StormError) -> any BrokerSubscription {
        try await subscribe(subject: controlSubject(of: gateway), throughStream: false, readingTrace: false) { message, _, _ in
            deliver(Array(message.readableBytesView))
        }
    }

    /// One subscription routine for channels (`throughStream`: an ordered JetStream consumer when the
    /// stream is in use) and the control plane (always core NATS, never stored).
    private func subscribe(subject: String, throughStream: Bool, readingTrace: Bool, deliver: @escaping TracedBrokerDelivery) async throws(StormError) -> any BrokerSubscription {
        // A core subscription (the control plane) can be made while nats.c is still connecting or
        // reconnecting: it sends the SUB once connected. So a gateway started before NATS still gets its
        // control requests. A stream subscription needs the server (it creates a consumer).
        let connection = throughStream
            ? try connectedConnection(orElse: "the subscription was not made")
            : try openConnection(orElse: "the subscription was not made")
        let box = NATSDeliveryBox(deliver: deliver, readsTrace: readingTrace, allocator: allocator)
        // Retained for nats.c; released by natsSubscriptionCompleteCallback.
        let boxPointer = Unmanaged.passRetained(box).toOpaque()
        let jetStream = throughStream ? readyJetStream() : nil

        var subscriptionPointer: OpaquePointer?
        do {
            if let jetStream {
                // An ordered consumer delivers each message with its stream sequence (the offset). Making
                // it is a request to the server, hence the thread pool; once it exists, every message
                // stored from now on is delivered, so no flush is needed.
                guard jetStream.isStreamReady else {
                    throw StormError(.brokerUnavailable, "JetStream stream '\(jetStream.settings.streamName)' is not ready yet; the subscription was not made")
                }
                let pointerBits = UInt(bitPattern: boxPointer)
                let wait = subscribeWaits.begin()
                defer { subscribeWaits.end(wait) }
                let made: Result<UInt, StormError> = await runBlocking {
                    do throws(StormError) {
                        guard let box = UnsafeMutableRawPointer(bitPattern: pointerBits) else {
                            throw StormError(.internalError, "lost the delivery box")
                        }
                        return .success(UInt(bitPattern: try jetStream.subscribeOrdered(subject, box: box)))
                    } catch {
                        return .failure(error)
                    }
                }
                subscriptionPointer = OpaquePointer(bitPattern: try made.get())
            } else {
                try natsCall("natsConnection_Subscribe", .brokerUnavailable, "subscribe to '\(subject)'") {
                    natsConnection_Subscribe(&subscriptionPointer, connection.raw, subject, natsDeliveryCallback, boxPointer)
                }
            }
        } catch let error as StormError {
            Unmanaged<NATSDeliveryBox>.fromOpaque(boxPointer).release()  // no subscription, so no callback
            throw error
        } catch {
            Unmanaged<NATSDeliveryBox>.fromOpaque(boxPointer).release()
            throw StormError(.internalError, "\(error)")
        }
        guard let rawSubscription = subscriptionPointer else {
            Unmanaged<NATSDeliveryBox>.fromOpaque(boxPointer).release()
            throw StormError(.internalError, "NATS returned no subscription for '\(subject)' [natsConnection_Subscribe]")
        }
        do {
            try natsCall("natsSubscription_SetOnCompleteCB", .brokerUnavailable, "watch the subscription to '\(subject)'") {
                natsSubscription_SetOnCompleteCB(rawSubscription, natsSubscriptionCompleteCallback, boxPointer)
            }
        } catch {
            // The subscription closed under us (the connection is closing). Its handler may still run once and
            // nothing will tell us when it is done, so the box is deliberately leaked rather than freed under it.
            box.cancelled.store(true, ordering: .releasing)
            natsSubscription_Destroy(rawSubscription)
            throw error
        }

        let subscription = NATSSubscription(
            subject: subject, pointer: NATSSubscriptionHandle(raw: rawSubscription), cancelled: box.cancelled,
            broker: self,
            logger: logger)
        let registered: Bool = state.withLockedValue { state in
            guard case .running = state.phase else { return false }
            state.subscriptions[ObjectIdentifier(subscription)] = subscription
            return true
        }
        guard registered else {
            subscription.cancel()
            throw StormError(.brokerUnavailable, "the NATS broker is shutting down; the subscription was not made")
        }

        let config = configuration
        do throws(StormError) {
            try natsCall("natsSubscription_SetPendingLimits", .configuration, "set pending limits on '\(subject)'") {
                natsSubscription_SetPendingLimits(
                    rawSubscription, Int32(clamping: config.pendingMessagesLimit),
                    Int32(clamping: config.pendingBytesLimit))
            }
            // A round trip: once the server answers the PING it has processed our SUB, so a message published
            // anywhere from now on is delivered. It waits on the network, hence the thread pool.
            let timeout = milliseconds(config.subscribeTimeout)
            let connected = natsConnection_Status(connection.raw) == NATS_CONN_STATUS_CONNECTED
            let flushFailure: StormError? = jetStream != nil || !connected ? nil : await runBlocking { () -> StormError? in
                do throws(StormError) {
                    try natsCall(
                        "natsConnection_FlushTimeout", .brokerUnavailable,
                        "confirm the subscription to '\(subject)' with the server"
                    ) {
                        natsConnection_FlushTimeout(connection.raw, timeout)
                    }
                    return nil
                } catch {
                    return error
                }
            }
            if let flushFailure { throw flushFailure }
        } catch {
            subscription.cancel()
            throw error
        }
        return subscription
    }

    /// The connection, if it can be used right now; otherwise why not, ending with `consequence`.
    private func connectedConnection(orElse consequence: String) throws(StormError) -> NATSConnectionHandle {
        switch state.withLockedValue({ $0.phase }) {
        case .idle, .starting:
            throw StormError(.brokerUnavailable, "NATS is not connected yet (the broker was not started); \(consequence)")
        case .stopped:
            throw StormError(.brokerUnavailable, "the NATS broker is shut down; \(consequence)")
        case .running(let connection):
            let status = natsConnection_Status(connection.raw)
            guard status == NATS_CONN_STATUS_CONNECTED else {
                throw StormError(
                    .brokerUnavailable, "NATS is disconnected (\(connectionStatusName(status)) to \(endpointDescription)); \(consequence)")
            }
            return connection
        }
    }

    /// The connection, if it is connected or still trying to (not closed or draining).
    private func openConnection(orElse consequence: String) throws(StormError) -> NATSConnectionHandle {
        guard case .running(let connection) = state.withLockedValue({ $0.phase }) else {
            return try connectedConnection(orElse: consequence)  // throws the reason
        }
        switch natsConnection_Status(connection.raw) {
        case NATS_CONN_STATUS_CONNECTED, NATS_CONN_STATUS_CONNECTING, NATS_CONN_STATUS_RECONNECTING, NATS_CONN_STATUS_DISCONNECTED:
            return connection
        default:
            return try connectedConnection(orElse: consequence)
        }
    }

    fileprivate func forget(_ subscription: NATSSubscription) {
        state.withLockedValue { _ = $0.subscriptions.removeValue(forKey: ObjectIdentifier(subscription)) }
    }

    // MARK: shutdown

    package func shutdown() async {
        let (connection, leftovers): (NATSConnectionHandle?, [NATSSubscription]) = state.withLockedValue { state in
            let leftovers = Array(state.subscriptions.values)
            state.subscriptions.removeAll()
            switch state.phase {
            case .idle, .starting:
                state.phase = .stopped(nil)  // a start() in flight closes its own connection
                return (nil, leftovers)
            case .running(let connection):
                state.phase = .stopped(connection)
                return (connection, leftovers)
            case .stopped:
                return (nil, leftovers)  // already shut down
            }
        }
        guard let connection else { return }
        events.withLockedValue { $0 }?.stopping.store(true, ordering: .releasing)

        let drainTimeout = milliseconds(configuration.drainTimeout)
        if natsConnection_Status(connection.raw) == NATS_CONN_STATUS_CONNECTED {
            do {
                // Delivers what is already queued to the subscribers, flushes publishes, then closes.
                try natsCall("natsConnection_DrainTimeout", .brokerUnavailable, "drain the connection") {
                    natsConnection_DrainTimeout(connection.raw, drainTimeout)
                }
                let deadline = ContinuousClock.now + configuration.drainTimeout + .seconds(1)
                while natsConnection_Status(connection.raw) != NATS_CONN_STATUS_CLOSED, ContinuousClock.now < deadline {
                    do {
                        try await Task.sleep(for: .milliseconds(10))
                    } catch {
                        break  // cancelled: stop waiting, close below
                    }
                }
            } catch {
                logger.warning("NATS drain failed; closing without it", metadata: ["nats.error": "\(error.message)"])
            }
        }
        // A no-op if draining closed it; otherwise stops reconnect attempts and cuts what is left. It joins
        // nats.c's connection threads, so it waits on the thread pool.
        await runBlocking { natsConnection_Close(connection.raw) }
        state.withLockedValue { $0.jetStream }?.failPending()
        for subscription in leftovers {
            subscription.release()
        }
        logger.info("NATS broker stopped", metadata: ["nats.url": "\(endpointDescription)"])
    }
}

// MARK: - Subscriptions

/// One channel's interest on NATS.
package final class NATSSubscription: BrokerSubscription {
    package let subject: String
    /// Nil once cancelled or released: guards the single `natsSubscription_Destroy`.
    private let pointer: NIOLockedValueBox<NATSSubscriptionHandle?>
    /// Shared with the delivery box. The handle holds only this flag, not the box, so the delivery closure
    /// (and whatever it captures) is freed as soon as nats.c is done with it, even if the caller keeps the handle.
    private let cancelled: ManagedAtomic<Bool>
    private weak let broker: NATSBroker?
    private let logger: Logger

    fileprivate init(
        subject: String, pointer: NATSSubscriptionHandle, cancelled: ManagedAtomic<Bool>, broker: NATSBroker,
        logger: Logger
    ) {
        self.subject = subject
        self.pointer = NIOLockedValueBox(pointer)
        self.cancelled = cancelled
        self.broker = broker
        self.logger = logger
    }

    deinit {
        // Reached only after cancel() or shutdown (the broker holds live ones), so normally nil here.
        if let handle = pointer.withLockedValue({ $0 }) {
            natsSubscription_Destroy(handle.raw)
        }
    }

    /// Stops deliveries; idempotent and safe after the broker's shutdown.
    package func cancel() {
        // First, so a message nats.c already queued is dropped by the callback instead of delivered after
        // cancel() returns.
        cancelled.store(true, ordering: .releasing)
        guard let handle = take() else { return }
        broker?.forget(self)
        let status = natsSubscription_Unsubscribe(handle.raw)
        switch status {
        case NATS_OK, NATS_CONNECTION_CLOSED, NATS_INVALID_SUBSCRIPTION, NATS_DRAINING:
            break  // gone already, or going with the connection: nothing to undo
        default:
            // The server may keep sending until the connection's next reconnect; the callback drops those.
            let error = natsError("natsSubscription_Unsubscribe", status, .brokerUnavailable, "unsubscribe from '\(subject)'")
            logger.warning("\(error.message)", metadata: ["nats.subject": "\(subject)"])
        }
        natsSubscription_Destroy(handle.raw)
    }

    /// Frees the nats.c object after the connection closed (shutdown), when unsubscribing means nothing.
    fileprivate func release() {
        cancelled.store(true, ordering: .releasing)
        guard let handle = take() else { return }
        natsSubscription_Destroy(handle.raw)
    }

    private func take() -> NATSSubscriptionHandle? {
        pointer.withLockedValue { current in
            defer { current = nil }
            return current
        }
    }
}

// MARK: - Boxes handed to nats.c

/// What a subscription's message callback needs. Immutable apart from an atomic, hence really `Sendable`.
package final class NATSDeliveryBox: Sendable {
    package let deliver: TracedBrokerDelivery
    /// Whether deliveries read the trace headers (only when the gateway traces).
    package let readsTrace: Bool
    package let allocator: ByteBufferAllocator
    /// Set by cancel() and shutdown; checked before every delivery.
    package let cancelled = ManagedAtomic(false)

    package init(deliver: @escaping TracedBrokerDelivery, readsTrace: Bool = false, allocator: ByteBufferAllocator) {
        self.deliver = deliver
        self.readsTrace = readsTrace
        self.allocator = allocator
    }
}

/// What the connection-event callbacks need. Immutable apart from an atomic, hence really `Sendable`.
package final class NATSConnectionEvents: Sendable {
    package let logger: Logger
    package let endpoint: String
    /// The delay between passes through the server list while reconnecting.
    package let backoff: RetryBackoff
    /// Set by shutdown(), so the disconnect it causes is not reported as an outage.
    package let stopping = ManagedAtomic(false)

    package init(logger: Logger, endpoint: String, backoff: RetryBackoff = RetryBackoff()) {
        self.logger = logger
        self.endpoint = endpoint
        self.backoff = backoff
    }
}

/// A `natsConnection*`. `@unchecked Sendable` because nats.c locks every connection call internally, and
/// the pointer stays valid until the owning `NATSBroker`'s `deinit`, after its last user is gone.
package struct NATSConnectionHandle: @unchecked Sendable {
    package let raw: OpaquePointer
}

/// A `natsSubscription*`. `@unchecked Sendable` because nats.c locks subscription calls internally, and the
/// owning `NATSSubscription` hands it to `natsSubscription_Destroy` exactly once, under its lock.
package struct NATSSubscriptionHandle: @unchecked Sendable {
    package let raw: OpaquePointer
}

/// A `natsOptions*` crossing into the thread pool for the connect. `@unchecked Sendable` because the
/// caller waits for that thread to finish before it touches or destroys the options again.
package struct NATSOptionsHandle: @unchecked Sendable {
    package let raw: OpaquePointer
}

package struct NATSConnectOutcome: Sendable {
    package var connection: NATSConnectionHandle?
    package var stillRetrying: Bool
    package var failure: StormError?
}

// MARK: - C callbacks (nats.c threads)

/// Copies the message out of nats.c's memory and hands it to the subscriber, on a delivery-pool thread.
private func natsDeliveryCallback(
    _ connection: OpaquePointer?, _ subscription: OpaquePointer?, _ message: OpaquePointer?,
    _ closure: UnsafeMutableRawPointer?
) {
    deliver(message, to: closure, readingOffset: false)
}

/// Like `natsDeliveryCallback`, for JetStream consumers: the offset is the message's stream sequence.
package func natsDeliveryWithOffsetCallback(
    _ connection: OpaquePointer?, _ subscription: OpaquePointer?, _ message: OpaquePointer?,
    _ closure: UnsafeMutableRawPointer?
) {
    deliver(message, to: closure, readingOffset: true)
}

/// The one delivery path of both callbacks: checks the box, copies the data (and the offset and trace
/// headers when wanted), frees the message, then hands the copy over.
private func deliver(_ message: OpaquePointer?, to closure: UnsafeMutableRawPointer?, readingOffset: Bool) {
    guard let message else { return }
    guard let closure else {
        natsMsg_Destroy(message)
        return
    }
    let box = Unmanaged<NATSDeliveryBox>.fromOpaque(closure).takeUnretainedValue()
    guard !box.cancelled.load(ordering: .acquiring) else {
        natsMsg_Destroy(message)
        return
    }
    var offset: UInt64 = 0
    if readingOffset {
        var meta: UnsafeMutablePointer<jsMsgMetaData>?
        if natsMsg_GetMetaData(&meta, message) == NATS_OK, let meta {
            offset = meta.pointee.Sequence.Stream
            jsMsgMetaData_Destroy(meta)
        }
    }
    let buffer = copyData(of: message, allocator: box.allocator)
    let trace = box.readsTrace ? traceHeaders(of: message) : nil
    natsMsg_Destroy(message)
    box.deliver(buffer, offset, trace)
}

/// Runs once the subscription is closed and its handler has returned for the last time: the only moment the
/// box can be freed without racing a delivery.
private func natsSubscriptionCompleteCallback(_ closure: UnsafeMutableRawPointer?) {
    guard let closure else { return }
    Unmanaged<NATSDeliveryBox>.fromOpaque(closure).release()
}

private func natsConnectedCallback(_ connection: OpaquePointer?, _ closure: UnsafeMutableRawPointer?) {
    guard let closure else { return }
    let events = Unmanaged<NATSConnectionEvents>.fromOpaque(closure).takeUnretainedValue()
    let url = connection.flatMap(connectedURL) ?? events.endpoint
    events.logger.notice("NATS connected after retrying", metadata: ["nats.url": "\(url)"])
}

private func natsDisconnectedCallback(_ connection: OpaquePointer?, _ closure: UnsafeMutableRawPointer?) {
    guard let closure else { return }
    let events = Unmanaged<NATSConnectionEvents>.fromOpaque(closure).takeUnretainedValue()
    if events.stopping.load(ordering: .acquiring) {
        events.logger.debug("NATS disconnected for shutdown", metadata: ["nats.url": "\(events.endpoint)"])
    } else {
        events.logger.warning(
            "NATS connection lost; reconnecting", metadata: ["nats.url": "\(events.endpoint)"])
    }
}

private func natsReconnectedCallback(_ connection: OpaquePointer?, _ closure: UnsafeMutableRawPointer?) {
    guard let closure else { return }
    let events = Unmanaged<NATSConnectionEvents>.fromOpaque(closure).takeUnretainedValue()
    let url = connection.flatMap(connectedURL) ?? events.endpoint
    events.logger.notice("NATS connection restored", metadata: ["nats.url": "\(url)"])
}

/// The last event a connection raises: logs why, then frees the events box that nats.c held for us.
private func natsClosedCallback(_ connection: OpaquePointer?, _ closure: UnsafeMutableRawPointer?) {
    guard let closure else { return }
    let unmanaged = Unmanaged<NATSConnectionEvents>.fromOpaque(closure)
    let events = unmanaged.takeUnretainedValue()
    if events.stopping.load(ordering: .acquiring) {
        events.logger.debug("NATS connection closed", metadata: ["nats.url": "\(events.endpoint)"])
    } else {
        events.logger.error(
            "NATS connection closed for good: reconnect attempts are exhausted; restart stormd or raise the NATS max reconnect attempts",
            metadata: ["nats.url": "\(events.endpoint)"])
    }
    unmanaged.release()
}

private func natsAsyncErrorCallback(
    _ connection: OpaquePointer?, _ subscription: OpaquePointer?, _ status: natsStatus,
    _ closure: UnsafeMutableRawPointer?
) {
    guard let closure else { return }
    let events = Unmanaged<NATSConnectionEvents>.fromOpaque(closure).takeUnretainedValue()
    let subject = subscription.flatMap { natsSubscription_GetSubject($0) }.map { String(cString: $0) } ?? "-"
    if status == NATS_SLOW_CONSUMER {
        events.logger.warning(
            "NATS dropped messages: a subscription's backlog passed its pending limit (raise the NATS pending limits or add gateways)",
            metadata: ["nats.subject": "\(subject)", "nats.url": "\(events.endpoint)"])
    } else {
        events.logger.warning(
            "NATS reported an asynchronous error: \(natsStatusText(status))",
            metadata: ["nats.subject": "\(subject)", "nats.url": "\(events.endpoint)"])
    }
}

// MARK: - The one connect routine (gateway and history consumer)

/// TLS to NATS: required (`natsOptions_SetSecure`) for `tls://` URLs or when a CA or client certificate is
/// given; the server's certificate is verified against `caFile`, or the system's trust store without it.
private func applyTLS(_ tls: NATSTLSFiles, urls: [String], to options: OpaquePointer) throws(StormError) {
    guard tls.isSecure(urls: urls) else { return }
    try natsCall("natsOptions_SetSecure", .configuration, "require TLS (this libnats may be built without TLS)") {
        natsOptions_SetSecure(options, true)
    }
    if let ca = tls.caFile {
        try natsCall("natsOptions_LoadCATrustedCertificates", .configuration, "load the NATS CA certificates from '\(ca)' (--nats-ca; expected PEM)") {
            natsOptions_LoadCATrustedCertificates(options, ca)
        }
    }
    if let cert = tls.certificateFile, let key = tls.keyFile {
        try natsCall("natsOptions_LoadCertificatesChain", .configuration, "load the NATS client certificate '\(cert)' and key '\(key)' (--nats-cert, --nats-key; expected PEM, matching)") {
            natsOptions_LoadCertificatesChain(options, cert, key)
        }
    }
}

/// nats.c options for `config`: servers, name, timeouts, reconnecting forever (by default) with capped,
/// jittered backoff, the global delivery pool, and, when `events` is given, the connection-event
/// callbacks (the caller retains the box; nats.c's closed callback releases it). The caller destroys the
/// options. Shared by `NATSBroker` and `JetStreamSession`, so both roles connect and reconnect alike.
package func makeNATSOptions(_ config: NATSBrokerConfiguration, events eventsPointer: UnsafeMutableRawPointer?) throws(StormError) -> OpaquePointer {
    var optionsPointer: OpaquePointer?
    try natsCall("natsOptions_Create", .internalError, "allocate connection options") {
        natsOptions_Create(&optionsPointer)
    }
    guard let options = optionsPointer else {
        throw StormError(.internalError, "NATS could not allocate connection options [natsOptions_Create]")
    }
    do {
        let servers = config.urls.map(redactedNATSURL).joined(separator: ",")
        try withCStringArray(config.urls) { (array, count) throws(StormError) in
            try natsCall("natsOptions_SetServers", .configuration, "use the server list '\(servers)'") {
                natsOptions_SetServers(options, array, count)
            }
        }
        try applyTLS(config.tls, urls: config.urls, to: options)
        try natsCall("natsOptions_SetName", .configuration, "set the connection name") {
            natsOptions_SetName(options, config.connectionName)
        }
        try natsCall("natsOptions_SetTimeout", .configuration, "set the connect timeout") {
            natsOptions_SetTimeout(options, milliseconds(config.connectTimeout))
        }
        try natsCall("natsOptions_SetReconnectWait", .configuration, "set the reconnect wait") {
            natsOptions_SetReconnectWait(options, milliseconds(config.reconnectWait))
        }
        let jitter = milliseconds(config.reconnectWait) / 5
        try natsCall("natsOptions_SetReconnectJitter", .configuration, "set the reconnect jitter") {
            natsOptions_SetReconnectJitter(options, jitter, jitter)
        }
        // After each pass through the server list: capped exponential backoff with jitter (the box's, or
        // the defaults without one), so a long outage costs a retry every few seconds, not four a second.
        try natsCall("natsOptions_SetCustomReconnectDelay", .configuration, "set the reconnect backoff") {
            natsOptions_SetCustomReconnectDelay(options, natsReconnectDelayCallback, eventsPointer)
        }
        try natsCall("natsOptions_SetMaxReconnect", .configuration, "set the reconnect attempts") {
            natsOptions_SetMaxReconnect(options, Int32(clamping: config.maxReconnectAttempts))
        }
        try natsCall("nats_SetMessageDeliveryPoolSize", .configuration, "size the delivery pool") {
            nats_SetMessageDeliveryPoolSize(Int32(clamping: config.deliveryThreads))
        }
        try natsCall("natsOptions_UseGlobalMessageDelivery", .configuration, "use the global delivery pool") {
            natsOptions_UseGlobalMessageDelivery(options, true)
        }
        if let eventsPointer {
            try natsCall("natsOptions_SetDisconnectedCB", .configuration, "register the disconnect handler") {
                natsOptions_SetDisconnectedCB(options, natsDisconnectedCallback, eventsPointer)
            }
            try natsCall("natsOptions_SetReconnectedCB", .configuration, "register the reconnect handler") {
                natsOptions_SetReconnectedCB(options, natsReconnectedCallback, eventsPointer)
            }
            try natsCall("natsOptions_SetClosedCB", .configuration, "register the close handler") {
                natsOptions_SetClosedCB(options, natsClosedCallback, eventsPointer)
            }
            try natsCall("natsOptions_SetErrorHandler", .configuration, "register the error handler") {
                natsOptions_SetErrorHandler(options, natsAsyncErrorCallback, eventsPointer)
            }
        }
        try natsCall("natsOptions_SetRetryOnFailedConnect", .configuration, "enable connect retries") {
            natsOptions_SetRetryOnFailedConnect(
                options, config.retryOnFailedConnect,
                config.retryOnFailedConnect && eventsPointer != nil ? natsConnectedCallback : nil, eventsPointer)
        }
    } catch {
        natsOptions_Destroy(options)
        throw error
    }
    return options
}

/// `natsConnection_Connect` with `options`: blocking, run it on the thread pool (or a blocking caller's
/// thread). `stillRetrying` when the server is not up yet and nats.c keeps trying in the background.
package func connectNATS(_ options: NATSOptionsHandle, servers: String) -> NATSConnectOutcome {
    var connectionPointer: OpaquePointer?
    let status = natsConnection_Connect(&connectionPointer, options.raw)
    // Built here: nats.c's detailed last error is thread-local.
    let failure = status == NATS_OK || status == NATS_NOT_YET_CONNECTED
        ? nil
        : natsError(
            "natsConnection_Connect", status, status == NATS_INVALID_ARG ? .configuration : .connection,
            "connect to \(servers)")
    return NATSConnectOutcome(
        connection: connectionPointer.map(NATSConnectionHandle.init(raw:)), stillRetrying: status == NATS_NOT_YET_CONNECTED,
        failure: failure)
}

/// How long nats.c waits before its next pass through the server list (`attempts` passes so far).
private func natsReconnectDelayCallback(_ connection: OpaquePointer?, _ attempts: Int32, _ closure: UnsafeMutableRawPointer?) -> Int64 {
    let backoff = closure.map { Unmanaged<NATSConnectionEvents>.fromOpaque($0).takeUnretainedValue().backoff } ?? RetryBackoff()
    return max(1, milliseconds(backoff.delay(attempt: Int(attempts) - 1)))
}

// MARK: - Helpers

/// The server this connection is on now, without credentials; nil while it is not connected.
private func connectedURL(_ connection: OpaquePointer) -> String? {
    withUnsafeTemporaryAllocation(of: CChar.self, capacity: 512) { buffer -> String? in
        guard let base = buffer.baseAddress,
            natsConnection_GetConnectedUrl(connection, base, buffer.count) == NATS_OK
        else { return nil }
        let url = String(cString: base)
        return url.isEmpty ? nil : redactedNATSURL(url)
    }
}

/// Why a server URL would not work, or nil if it looks usable. nats.c would accept some of these and fail
/// later with "no server available", which does not tell the operator which entry is wrong.
package func natsURLProblem(_ url: String) -> String? {
    guard let components = URLComponents(string: url) else {
        return "it is not a URL; use nats://HOST:PORT"
    }
    guard let scheme = components.scheme?.lowercased(), ["nats", "tls"].contains(scheme) else {
        return "the scheme must be nats:// or tls://, e.g. nats://127.0.0.1:4222"
    }
    guard let host = components.host, !host.isEmpty else {
        return "it names no host; use nats://HOST:PORT"
    }
    if let port = components.port, !(1...65535).contains(port) {
        return "port \(port) is out of range"
    }
    if components.port == nil, let authority = url.split(separator: "/", omittingEmptySubsequences: true).dropFirst().first,
        authority.hasSuffix(":")
    {
        return "the port is empty"
    }
    return nil
}

/// A server URL without its user and password, for logs, errors and `/readyz`.
package func redactedNATSURL(_ url: String) -> String {
    guard let schemeEnd = url.range(of: "://") else { return url }
    let rest = url[schemeEnd.upperBound...]
    let authorityEnd = rest.firstIndex(of: "/") ?? rest.endIndex
    guard let at = rest[..<authorityEnd].lastIndex(of: "@") else { return url }
    return String(url[..<schemeEnd.upperBound]) + "***@" + String(rest[rest.index(after: at)...])
}

private func connectionStatusName(_ status: natsConnStatus) -> String {
    switch status {
    case NATS_CONN_STATUS_DISCONNECTED: return "disconnected"
    case NATS_CONN_STATUS_CONNECTING: return "connecting"
    case NATS_CONN_STATUS_CONNECTED: return "connected"
    case NATS_CONN_STATUS_CLOSED: return "closed"
    case NATS_CONN_STATUS_RECONNECTING: return "reconnecting"
    case NATS_CONN_STATUS_DRAINING_SUBS, NATS_CONN_STATUS_DRAINING_PUBS: return "draining"
    default: return "status \(status.rawValue)"
    }
}


/// Passes `strings` to C as a `const char**` that lives for the duration of `body`.
private func withCStringArray<R>(
    _ strings: [String], _ body: (UnsafeMutablePointer<UnsafePointer<CChar>?>, Int32) throws(StormError) -> R
) throws(StormError) -> R {
    let owned = strings.map { strdup($0) }
    defer { owned.forEach { free($0) } }
    var pointers: [UnsafePointer<CChar>?] = owned.map { $0.map { UnsafePointer($0) } }
    let result: Result<R, StormError> = pointers.withUnsafeMutableBufferPointer { buffer in
        guard let base = buffer.baseAddress else {
            return .failure(StormError(.configuration, "no NATS server URL is configured"))
        }
        do throws(StormError) {
            return .success(try body(base, Int32(clamping: buffer.count)))
        } catch {
            return .failure(error)
        }
    }
    return try result.get()
}

/// Blocking calls under way (queued for a thread or running) and since when, so `/readyz` can say when
/// subscribes cannot be served: one waiting longer than `threshold` (10 s, twice the subscribe timeout)
/// is stuck behind other work or a server that does not answer.
package final class BlockingWaits: Sendable {
    package static let threshold = TimeAmount.seconds(10)
    private let state = NIOLockedValueBox<(next: UInt64, started: [UInt64: NIODeadline])>((0, [:]))

    package func begin() -> UInt64 {
        state.withLockedValue { state in
            let id = state.next
            state.next &+= 1
            state.started[id] = .now()
            return id
        }
    }

    package func end(_ id: UInt64) {
        state.withLockedValue { _ = $0.started.removeValue(forKey: id) }
    }

    /// How long the oldest call under way has waited, nil when none is.
    package func longestWait() -> TimeAmount? {
        guard let oldest = state.withLockedValue({ $0.started.values.min() }) else { return nil }
        return .now() - oldest
    }
}

/// The threads of history reads, apart from `NIOThreadPool.singleton`, which makes subscriptions: a read
/// stuck on a slow stream can then never delay a subscribe. One pool per process, started once and never
/// stopped (a started `NIOThreadPool` must not be deinitialised); each gateway's `HistoryReader` bounds
/// its own reads in flight to `HistoryReaderConfiguration.maxInFlight` (4, the pool's size).
package enum HistoryThreads {
    package static let size = 4
    package static let pool: NIOThreadPool = {
        let pool = NIOThreadPool(numberOfThreads: size)
        pool.start()
        return pool
    }()
}

/// Runs blocking nats.c work (network waits) on NIO's thread pool (or `pool`), so it never stalls an event
/// loop or the cooperative pool. Falls back to the calling thread only if the pool has been shut down.
package func runBlocking<T: Sendable>(on pool: NIOThreadPool = .singleton, _ body: @escaping @Sendable () -> T) async -> T {
    do {
        return try await pool.runIfActive(body)
    } catch {
        return body()
    }
}
