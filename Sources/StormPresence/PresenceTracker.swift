import Atomics
import Dispatch
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import StormBroker
import StormConfiguration
import StormCore
import StormObservability

/// One gateway's presence: sessions report joins and leaves here, and a writer thread of its own turns
/// them into batched, pipelined writes to the `PresenceStore`.
///
/// Why a thread of its own: Redis round trips block, and an event loop must never block. Sessions only
/// take a lock, append to a queue and (for the first change of a batch) signal the writer, so presence
/// costs the join/leave path a few hundred nanoseconds and the fan-out path nothing. The writer waits
/// `batchInterval` after the first change so that a burst (10,000 clients joining within a second)
/// becomes a handful of pipelined round trips, each grouping its joins into one command per channel.
///
/// The local tables are the truth: every `heartbeatInterval` the writer refreshes the gateway's registry
/// record and the expiry of its keys, and whenever the store was unreachable, or its record was found
/// missing (Redis restarted or was flushed), it writes the whole local state again, deleting what it may
/// have left behind. So presence heals within one heartbeat of Redis returning, while messages keep
/// flowing regardless: nothing here is on the message path, and `/readyz` only reports `degraded`.
///
/// Identity: an anonymous connection's user is its client id (one user per connection); a connection
/// with a token is known under the token's `sub`. Client ids are `<gateway id>-<n>`, so a client is
/// routed to its gateway without a lookup; named users are routed through the store's per-user table.
/// A connection enters presence at its first subscribe (that is where `SessionChannels` sees it).
///
/// Disconnects travel through the broker's control plane, never through a channel: every gateway
/// listens for its own control requests (`MessageBroker.subscribeControl`), and
/// `disconnectEverywhere(client:)`/`(user:)` send `{"disconnect":{"client":…}}` or
/// `{"disconnect":{"user":…}}` to the gateways that hold the target. A control request is not stored
/// and no channel name reaches it, so only the admin API (which checks the admin grant) can send one.
package final class PresenceTracker: Sendable {
    package let configuration: PresenceConfiguration
    package let store: any PresenceStore
    package let gatewayID: String
    private let broker: any MessageBroker
    /// Join and leave events go out through the one publish path.
    private let publisher: Publisher
    private let metrics: GatewayMetrics
    private let logger: Logger
    private let startedMillis = unixMillisNow()
    private let clientCounter = ManagedAtomic<UInt64>(0)
    /// Runs the store's blocking reads for the HTTP API, off the event loops.
    package let readers = NIOThreadPool(numberOfThreads: 2)

    private let local = NIOLockedValueBox(Local())
    private let wake = DispatchSemaphore(value: 0)
    private let connected = NIOLockedValueBox(false)
    /// Connected and a full resync written since the last (re)connect: reads are the truth again.
    private let synced = NIOLockedValueBox(false)
    private let events: AsyncStream<(ChannelName, [UInt8])>.Continuation
    private let eventStream: AsyncStream<(ChannelName, [UInt8])>
    private let lifecycle = NIOLockedValueBox(Lifecycle())

    private struct Lifecycle {
        var started = false
        var finished: CheckedContinuation<Void, Never>?
        var threadDone = false
        var eventsTask: Task<Void, Never>?
        var control: (any BrokerSubscription)?
        var httpURL = ""
    }

    /// How a stop ends the writer.
    package enum StopMode: Sendable {
        /// Flush pending changes, delete this gateway's entries and registry record.
        case clean
        /// Stop writing at once, leaving everything to expire: what a crash looks like (tests).
        case abandon
    }

    private struct LocalClient {
        var user: String
        var named: Bool
        var sinceMillis: UInt64
        var info: [UInt8]?
        var channels: Set<ChannelName> = []
        var handle: SessionHandle
    }

    private enum Op {
        case join(ChannelName, PresenceEntry)
        case leave(ChannelName, String)
        case user(String)
    }

    private struct Local {
        var clients: [String: LocalClient] = [:]
        /// Entries of channels with presence enabled: what the store should hold for this gateway.
        var channels: [ChannelName: [String: PresenceEntry]] = [:]
        /// Named users with connections here.
        var users: [String: Int] = [:]
        var ops: [Op] = []
        var signalled = false
        var stop: StopMode?
    }

    package init(
        configuration: PresenceConfiguration, store: any PresenceStore, broker: any MessageBroker, publisher: Publisher, ids: MessageIDGenerator,
        metrics: GatewayMetrics, logger: Logger
    ) {
        self.publisher = publisher
        self.configuration = configuration
        self.store = store
        self.gatewayID = ids.instanceID
        self.broker = broker
        self.metrics = metrics
        self.logger = logger
        (eventStream, events) = AsyncStream.makeStream(of: (ChannelName, [UInt8]).self, bufferingPolicy: .bufferingNewest(100_000))
    }

    /// Builds the store the configuration asks for: Redis with `--redis`, else the in-memory one.
    package static func makeStore(_ configuration: PresenceConfiguration) -> any PresenceStore {
        if let redis = configuration.redis {
            return RedisPresenceStore(endpoint: redis, keyPrefix: configuration.redisKeyPrefix, ttlMillis: Int(configuration.ttl.nanoseconds / 1_000_000))
        }
        return MemoryPresenceStore(ttl: configuration.ttl)
    }

    /// The URL other gateways and tools reach this gateway at, unless `--advertise-url` says otherwise:
    /// the bound address, with the host name in place of an all-addresses bind (0.0.0.0 is no address).
    package static func advertisedURL(bound: SocketAddress?, listen: ListenAddress, scheme: String = "http") -> String {
        var host = bound?.ipAddress ?? listen.host
        if host == "0.0.0.0" || host == "::" { host = ProcessInfo.processInfo.hostName }
        if host.contains(":") { host = "[\(host)]" }
        return "\(scheme)://\(host):\(bound?.port ?? listen.port)"
    }

    /// The gateway that created a client id (`<gateway>-<n>`).
    package static func gateway(ofClient client: String) -> String? {
        guard let dash = client.lastIndex(of: "-"), dash > client.startIndex else { return nil }
        return String(client[..<dash])
    }

    // MARK: Lifecycle

    /// Starts the writer thread, the join/leave event publisher and the control subscription.
    /// `httpURL` is this gateway's advertised address (the registry record's `http`).
    package func start(httpURL: String) async {
        let first = lifecycle.withLockedValue { state -> Bool in
            guard !state.started else { return false }
            state.started = true
            state.httpURL = configuration.advertiseURL ?? httpURL
            return true
        }
        guard first else { return }
        readers.start()
        metrics.redisConnected.set(Int64(0))
        let thread = Thread { [self] in
            self.runWriter()
        }
        thread.name = "storm-presence"
        thread.start()
        let stream = eventStream
        let publisher = self.publisher
        let logger = self.logger
        let task = Task {
            for await (channel, payload) in stream {
                do {
                    _ = try await publisher.publishEvent(payload, on: channel, eventLoop: MultiThreadedEventLoopGroup.singleton.any()).get()
                } catch {
                    logger.debug("presence event not published", metadata: ["storm.channel": "\(channel)", "error": "\(error)"])
                }
            }
        }
        lifecycle.withLockedValue { $0.eventsTask = task }
        do {
            let subscription = try await broker.subscribeControl(gateway: gatewayID) { [weak self] request in
                self?.handleControl(request)
            }
            lifecycle.withLockedValue { $0.control = subscription }
        } catch {
            logger.warning("cannot listen for control requests: disconnect requests will not reach this gateway", metadata: ["error": "\(error)"])
        }
    }

    /// Stops the writer (see `StopMode`) and waits for it; then the event publisher and readers.
    package func stop(_ mode: StopMode = .clean) async {
        let started = lifecycle.withLockedValue { $0.started }
        guard started else { return }
        let alreadyStopping = local.withLockedValue { local -> Bool in
            if local.stop != nil { return true }
            local.stop = mode
            return false
        }
        if !alreadyStopping { wake.signal() }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let done = lifecycle.withLockedValue { state -> Bool in
                if state.threadDone { return true }
                state.finished = continuation
                return false
            }
            if done { continuation.resume() }
        }
        guard !alreadyStopping else { return }
        let (task, control) = lifecycle.withLockedValue { ($0.eventsTask, $0.control) }
        control?.cancel()
        events.finish()
        await task?.value
        try? await readers.shutdownGracefully()
    }

    // MARK: Sessions (event loops: cheap, never blocking)

    /// Registers a connection; returns its client id. `user` nil means anonymous (the client id).
    package func connect(session: any PresenceSession, on eventLoop: any EventLoop, user: String? = nil) -> String {
        let client = "\(gatewayID)-\(clientCounter.wrappingIncrementThenLoad(ordering: .relaxed))"
        let handle = SessionHandle(session: session, eventLoop: eventLoop)
        let info = Array("{\"transport\":\(JSONWriter.quoted(session.transport.rawValue))}".utf8)
        let named = user != nil
        let state = LocalClient(user: user ?? client, named: named, sinceMillis: unixMillisNow(), info: info, handle: handle)
        let signal = local.withLockedValue { local -> Bool in
            local.clients[client] = state
            guard named else { return false }
            local.users[state.user, default: 0] += 1
            return Self.enqueue(.user(state.user), in: &local)
        }
        if signal { wake.signal() }
        return client
    }

    /// A channel rule's `presence` option (`stormctl channel create … --presence on|off`), consulted
    /// before `--presence-channels`: `nil` when no rule says.
    ///
    /// Boxed in a struct on purpose: a bare function type inside the generic lock box is re-abstracted on
    /// every `withLockedValue` and written back one thunk deeper, so each join made the next one slower
    /// (the 100,000-connection ramp spent two thirds of its CPU unwinding thunks).
    private let channelOverride = NIOLockedValueBox<ChannelOverride?>(nil)

    private struct ChannelOverride: Sendable {
        let decide: @Sendable (ChannelName) -> Bool?
    }

    /// Lets channel rules switch presence on or off per channel (set once by the gateway).
    package func setChannelOverride(_ override: @escaping @Sendable (ChannelName) -> Bool?) {
        channelOverride.withLockedValue { $0 = ChannelOverride(decide: override) }
    }

    /// Whether presence is recorded for `channel`: its channel rule decides, else `--presence-channels`.
    package func recordsPresence(_ channel: ChannelName) -> Bool {
        if let override = channelOverride.withLockedValue({ $0 }), let decided = override.decide(channel) { return decided }
        return configuration.channels.matches(channel)
    }

    /// Whether `channel` is tracked at all (presence recorded, or join/leave events sent).
    package func tracks(_ channel: ChannelName) -> Bool {
        recordsPresence(channel) || configuration.events.matches(channel)
    }

    /// Records that `client` receives `channel` (after the subscription was confirmed).
    package func join(_ client: String, channel: ChannelName) {
        guard tracks(channel) else { return }
        let recorded = recordsPresence(channel)
        let result = local.withLockedValue { local -> (signal: Bool, user: String?) in
            guard var state = local.clients[client], !state.channels.contains(channel) else { return (false, nil) }
            state.channels.insert(channel)
            local.clients[client] = state
            guard recorded else { return (false, state.user) }
            let entry = PresenceEntry(client: client, user: state.user, gateway: gatewayID, sinceMillis: state.sinceMillis, info: state.info)
            local.channels[channel, default: [:]][client] = entry
            return (Self.enqueue(.join(channel, entry), in: &local), state.user)
        }
        if result.signal { wake.signal() }
        if let user = result.user, configuration.events.matches(channel) { emit("join", channel: channel, client: client, user: user) }
    }

    /// Connections this gateway tracks now (what a resync writes): for tests waiting on a disconnect.
    package var localClientCount: Int { local.withLockedValue { $0.clients.count } }

    /// Records that `client` no longer receives `channel`.
    package func leave(_ client: String, channel: ChannelName) {
        guard tracks(channel) else { return }
        let result = local.withLockedValue { local -> (signal: Bool, user: String?) in
            guard var state = local.clients[client], state.channels.remove(channel) != nil else { return (false, nil) }
            local.clients[client] = state
            return (Self.removeEntry(client, from: channel, in: &local), state.user)
        }
        if result.signal { wake.signal() }
        if let user = result.user, configuration.events.matches(channel) { emit("leave", channel: channel, client: client, user: user) }
    }

    /// Forgets a connection: it leaves every channel and its user's routing.
    package func disconnect(_ client: String) {
        let result = local.withLockedValue { local -> (signal: Bool, state: LocalClient?) in
            guard let state = local.clients.removeValue(forKey: client) else { return (false, nil) }
            var signal = false
            for channel in state.channels { signal = Self.removeEntry(client, from: channel, in: &local) || signal }
            if state.named {
                let remaining = (local.users[state.user] ?? 1) - 1
                local.users[state.user] = remaining > 0 ? remaining : nil
                signal = Self.enqueue(.user(state.user), in: &local) || signal
            }
            return (signal, state)
        }
        if result.signal { wake.signal() }
        guard let state = result.state else { return }
        for channel in state.channels.sorted() where configuration.events.matches(channel) {
            emit("leave", channel: channel, client: client, user: state.user)
        }
    }

    private static func removeEntry(_ client: String, from channel: ChannelName, in local: inout Local) -> Bool {
        guard local.channels[channel]?.removeValue(forKey: client) != nil else { return false }
        if local.channels[channel]?.isEmpty == true { local.channels[channel] = nil }
        return enqueue(.leave(channel, client), in: &local)
    }

    /// Queues a change; returns whether the writer needs a signal (the first change since it last looked).
    private static func enqueue(_ op: Op, in local: inout Local) -> Bool {
        local.ops.append(op)
        if local.signalled { return false }
        local.signalled = true
        return true
    }

    /// `{"presence":"join","client":…,"user":…,"gateway":…}` on the channel itself, through the broker.
    private func emit(_ kind: String, channel: ChannelName, client: String, user: String) {
        let payload = "{\"presence\":\(JSONWriter.quoted(kind)),\"client\":\(JSONWriter.quoted(client)),\"user\":\(JSONWriter.quoted(user)),\"gateway\":\(JSONWriter.quoted(gatewayID))}"
        events.yield((channel, Array(payload.utf8)))
    }

    // MARK: State for the API

    /// `ok`; `degraded` while the store cannot be written (Redis down); `resyncing` once it is
    /// reachable again until this gateway's entries are all rewritten. `/readyz` reports it.
    package var health: String {
        guard isDegraded else { return "ok" }
        return connected.withLockedValue { $0 } ? "resyncing" : "degraded"
    }

    /// Not whole: the store is down, or reconnected and not yet fully rewritten by this gateway.
    /// (The in-memory store is this process: it is whole as soon as it is connected.)
    package var isDegraded: Bool {
        guard lifecycle.withLockedValue({ $0.started }) else { return false }
        return store.isShared ? !synced.withLockedValue { $0 } : !connected.withLockedValue { $0 }
    }

    /// Why presence reads would not be the truth now (the presence API answers 503 with it), or nil.
    package var unavailableReason: String? {
        switch health {
        case "degraded": return "presence store \(store.endpointDescription) is unavailable; messages still flow, presence returns when the store does"
        case "resyncing": return "presence store \(store.endpointDescription) is back and this gateway is rewriting its entries; retry in a moment"
        default: return nil
        }
    }

    /// Runs a blocking store read on the reader threads.
    package func read<T: Sendable>(on eventLoop: any EventLoop, _ body: @escaping @Sendable (any PresenceStore) throws -> T) -> EventLoopFuture<T> {
        let store = self.store
        return readers.runIfActive(eventLoop: eventLoop) { try body(store) }
    }

    // MARK: Disconnects (through the broker)

    /// Most bytes of a disconnect reason carried: a WebSocket close frame's reason holds 123.
    package static let maximumReasonBytes = 123

    /// `reason` cut to `maximumReasonBytes` on a character boundary; nil when empty.
    package static func disconnectReason(_ reason: String?) -> String? {
        guard let reason, !reason.isEmpty else { return nil }
        var budget = maximumReasonBytes
        var cut = ""
        for scalar in reason.unicodeScalars {
            let size = String(scalar).utf8.count
            if size > budget { break }
            budget -= size
            cut.unicodeScalars.append(scalar)
        }
        return cut
    }

    private static func controlPayload(_ key: String, _ name: String, reason: String?) -> String {
        var target = JSONWriter.quoted(key) + ":" + JSONWriter.quoted(name)
        if let reason = disconnectReason(reason) { target += ",\"reason\":" + JSONWriter.quoted(reason) }
        return "{\"disconnect\":{" + target + "}}"
    }

    /// Asks the gateway that holds `client` to close it (`reason`: the close frame's reason). Returns
    /// the gateways asked.
    package func disconnectEverywhere(client: String, reason: String? = nil) async throws(StormError) -> [String] {
        guard let gateway = Self.gateway(ofClient: client) else {
            throw StormError(.badRequest, "'\(client)' is not a client id (expected <gateway id>-<n>, as GET /api/v1/channels/{channel}/presence lists them)")
        }
        try await sendControl(Self.controlPayload("client", client, reason: reason), to: [gateway])
        return [gateway]
    }

    /// Asks every gateway that holds connections of `user` to close them. An anonymous user is its
    /// client id, so a user with no routing entry that looks like a client id is treated as one.
    package func disconnectEverywhere(user: String, reason: String? = nil) async throws(StormError) -> [String] {
        let store = self.store
        let gateways: [String]
        do {
            gateways = try await readers.runIfActive { try store.gateways(ofUser: user) }
        } catch let error as StormError {
            throw error
        } catch {
            throw StormError(.connection, "presence store \(store.endpointDescription) cannot be read: \(error)")
        }
        if gateways.isEmpty, let owner = Self.gateway(ofClient: user), owner.count == 12, owner.allSatisfy(\.isHexDigit) {
            return try await disconnectEverywhere(client: user, reason: reason)
        }
        try await sendControl(Self.controlPayload("user", user, reason: reason), to: gateways)
        return gateways
    }

    private func sendControl(_ payload: String, to gateways: [String]) async throws(StormError) {
        for gateway in gateways {
            try await broker.sendControl(Array(payload.utf8), to: gateway)
        }
    }

    /// A control request for this gateway (a broker thread): closes the named local connections.
    private func handleControl(_ request: [UInt8]) {
        guard let members = try? JSONScanner.objectMembers(request), let disconnect = members["disconnect"],
            let target = try? JSONScanner.objectMembers(disconnect)
        else {
            logger.debug("ignored a control message that is not a disconnect request")
            return
        }
        let client = target["client"].flatMap { try? JSONScanner.string($0) }
        let user = target["user"].flatMap { try? JSONScanner.string($0) }
        let reason = Self.disconnectReason(target["reason"].flatMap { try? JSONScanner.string($0) })
        let handles = local.withLockedValue { local -> [SessionHandle] in
            if let client { return local.clients[client].map { [$0.handle] } ?? [] }
            guard let user else { return [] }
            return local.clients.values.filter { $0.user == user }.map(\.handle)
        }
        if !handles.isEmpty {
            logger.info("disconnecting on request", metadata: ["storm.client": "\(client ?? "-")", "storm.user": "\(user ?? "-")", "storm.connections": "\(handles.count)"])
        }
        for handle in handles { handle.close(reason: reason) }
    }

    // MARK: The writer thread

    private func setConnected(_ value: Bool) {
        connected.withLockedValue { $0 = value }
        if !value { synced.withLockedValue { $0 = false } }
        metrics.redisConnected.set(Int64(value && store.isShared ? 1 : 0))
    }

    /// What the store may hold for this gateway: every entry ever attempted and not yet deleted for
    /// sure. A resync deletes what is here but no longer live (leaves lost while Redis was away).
    private struct Known {
        var entries: [ChannelName: Set<String>] = [:]
        var users: Set<String> = []
    }

    private func runWriter() {
        var known = Known()
        var isConnected = false
        var needsResync = true
        var loggedDown = false
        let heartbeatInterval = configuration.heartbeatInterval
        var nextHeartbeat = NIODeadline.now()
        var nextConnect = NIODeadline.now()
        var again = false
        while true {
            let now = NIODeadline.now()
            let wakeAt = isConnected ? nextHeartbeat : min(nextHeartbeat, nextConnect)
            if !again, wakeAt > now {
                let woke = wake.wait(timeout: .now() + .nanoseconds(Int(max(0, (wakeAt - now).nanoseconds)))) == .success
                let stopping = local.withLockedValue { $0.stop != nil }
                if woke, !stopping, configuration.batchInterval > .zero {
                    // Let a burst gather into one batch.
                    Thread.sleep(forTimeInterval: Double(configuration.batchInterval.nanoseconds) / 1e9)
                }
            }
            again = false
            let stopMode = local.withLockedValue { $0.stop }
            if stopMode == .abandon { break }
            let current = NIODeadline.now()
            if !isConnected, current >= nextConnect || stopMode == .clean {
                do {
                    try store.connect()
                    isConnected = true
                    needsResync = true
                    synced.withLockedValue { $0 = false }
                    setConnected(true)
                    if loggedDown { logger.notice("presence store reachable again: re-registering every connection", metadata: ["storm.presence": "\(store.endpointDescription)"]) }
                    loggedDown = false
                } catch {
                    nextConnect = current + .seconds(1)
                    setConnected(false)
                    if !loggedDown {
                        logger.warning("presence store unreachable: presence is degraded, messages keep flowing; retrying every second", metadata: ["error": "\(error.message)"])
                        loggedDown = true
                    }
                }
            }
            let heartbeatDue = current >= nextHeartbeat
            if heartbeatDue { nextHeartbeat = current + heartbeatInterval }
            let resync = isConnected && needsResync && stopMode == nil
            var batch = PresenceBatch(gateway: gatewayID)
            var liveEntries: [ChannelName: Set<String>] = [:]
            local.withLockedValue { local in
                let ops = local.ops
                local.ops = []
                local.signalled = false
                guard isConnected else { return }
                if stopMode == .clean {
                    return  // the final batch deletes everything known below
                }
                if resync {
                    for (channel, entries) in local.channels {
                        batch.joined[channel] = Array(entries.values)
                        liveEntries[channel] = Set(entries.keys)
                    }
                    for (user, count) in local.users { batch.userCounts[user] = count }
                } else {
                    var joined: [ChannelName: [String: PresenceEntry]] = [:]
                    var left: [ChannelName: Set<String>] = [:]
                    var users: Set<String> = []
                    for op in ops {
                        switch op {
                        case .join(let channel, let entry):
                            joined[channel, default: [:]][entry.client] = entry
                            left[channel]?.remove(entry.client)
                        case .leave(let channel, let client):
                            joined[channel]?[client] = nil
                            left[channel, default: []].insert(client)
                        case .user(let user):
                            users.insert(user)
                        }
                    }
                    for (channel, entries) in joined where !entries.isEmpty { batch.joined[channel] = Array(entries.values) }
                    for (channel, clients) in left where !clients.isEmpty { batch.left[channel] = Array(clients) }
                    for user in users { batch.userCounts[user] = local.users[user] ?? 0 }
                }
                if heartbeatDue || resync {
                    let httpURL = lifecycle.withLockedValue { $0.httpURL }
                    batch.heartbeat = .init(
                        record: GatewayRecord(
                            id: gatewayID, httpURL: httpURL, metricsURL: httpURL + "/metrics", version: StormVersion.current,
                            startedMillis: startedMillis, heartbeatMillis: unixMillisNow()),
                        channels: Array(local.channels.keys), users: Array(local.users.keys))
                }
            }
            if isConnected {
                if stopMode == .clean {
                    for (channel, clients) in known.entries where !clients.isEmpty { batch.left[channel] = Array(clients) }
                    for user in known.users { batch.userCounts[user] = 0 }
                    batch.deregister = true
                } else if resync {
                    for (channel, clients) in known.entries {
                        let stale = clients.subtracting(liveEntries[channel] ?? [])
                        if !stale.isEmpty { batch.left[channel] = Array(stale) }
                    }
                    for user in known.users where batch.userCounts[user] == nil { batch.userCounts[user] = 0 }
                }
                // Joins count as possibly written from the moment they are attempted.
                for (channel, entries) in batch.joined { known.entries[channel, default: []].formUnion(entries.map(\.client)) }
                for (user, count) in batch.userCounts where count > 0 { known.users.insert(user) }
                if !batch.isEmpty {
                    do {
                        let outcome = try store.write(batch)
                        metrics.presenceBatches.increment()
                        metrics.presenceWrites.increment(by: Int64(batch.changeCount))
                        for (channel, clients) in batch.left {
                            known.entries[channel]?.subtract(clients)
                            if known.entries[channel]?.isEmpty == true { known.entries[channel] = nil }
                        }
                        for (user, count) in batch.userCounts where count == 0 { known.users.remove(user) }
                        if resync {
                            needsResync = false
                            synced.withLockedValue { $0 = true }
                        }
                        if outcome.registrationWasMissing, !resync, stopMode == nil {
                            logger.notice("this gateway's presence registration was missing (Redis restarted or a heartbeat was late): writing everything again")
                            needsResync = true
                            synced.withLockedValue { $0 = false }
                            again = true
                        }
                    } catch {
                        metrics.presenceErrors.increment()
                        store.disconnect()
                        isConnected = false
                        needsResync = true
                        setConnected(false)
                        // One quick retry: a dropped connection to a live Redis comes straight back.
                        nextConnect = NIODeadline.now() + .milliseconds(200)
                        logger.warning("presence write failed: presence is degraded, messages keep flowing", metadata: ["error": "\(error.message)"])
                        loggedDown = true
                    }
                }
            }
            if stopMode != nil { break }
        }
        store.disconnect()
        let continuation = lifecycle.withLockedValue { state -> CheckedContinuation<Void, Never>? in
            state.threadDone = true
            defer { state.finished = nil }
            return state.finished
        }
        continuation?.resume()
    }
}

/// How the tracker reaches a session to close it: from any thread, hopping to the session's loop.
///
/// The session is held strongly, and that is safe: its entry leaves the tracker when the session ends
/// (`tearDown` → `SessionChannels.removeAll` → `disconnect`, from both `channelInactive` and
/// `handlerRemoved`, which NIO always calls), so a handle never outlives its connection. Not weak on
/// purpose: a weak reference gives every session a side table, and every retain of a session in the
/// fan-out pass then takes the runtime's slow path (3 % of the gateway's CPU at 500,000 deliveries/s).
package struct SessionHandle: Sendable {
    private let session: NIOLoopBound<any PresenceSession>
    private let eventLoop: any EventLoop

    package init(session: any PresenceSession, eventLoop: any EventLoop) {
        self.session = NIOLoopBound(session, eventLoop: eventLoop)
        self.eventLoop = eventLoop
    }

    /// Closes the connection on a disconnect request (WebSocket close 1001 with `reason`, or the
    /// default reason; SSE end of stream).
    package func close(reason: String? = nil) {
        let session = self.session
        eventLoop.execute { session.value.closeOnRequest(reason: reason) }
    }
}
