#if os(Linux)
import CStormLinux
import Foundation
import Glibc
import NIOConcurrencyHelpers
import NIOCore
import StormCore

/// The bench's WebSocket subscribers on plain non-blocking sockets: one thread per core, each an epoll
/// loop over its share of the connections.
///
/// Why not NIO, which every other STORM client uses: on one host the bench shares the two cores with the
/// gateway, and every microsecond it spends per read is taken from the gateway's writes. At 500,000
/// deliveries/s the profile of the NIO bench showed a quarter of its CPU in the event loop's own
/// bookkeeping per read (registration lookup, pipeline dispatch, retains, buffer allocation) and another
/// fifth in passing frames through it; the kernel's `read()` and the ACK it sends were the rest. Here a
/// read is `epoll_wait`, `read()` into one buffer per thread, and the frames parsed in place by the same
/// `ServerFrameParser` the NIO client uses. Per connection it keeps only its state and the start of a
/// frame that has not fully arrived.
///
/// The opening handshake is RFC 6455 section 4.1 from the client's side: a fixed `GET` with a random
/// key, and the checks the RFC asks of the answer (status 101, `Upgrade: websocket`, `Connection:
/// Upgrade`, the `Sec-WebSocket-Accept` derived from the key). Anything else fails the connection with
/// the gateway's status line.
///
/// While traffic flows, a loop rests `--poll-interval` between polls rather than sleeping in
/// `epoll_wait` until the next socket is readable: a sleeping reader must be woken for each write the
/// gateway makes, and on one host that wakeup is paid inside the gateway's `send()`. Resting half a
/// millisecond lets one poll collect every socket that became readable meanwhile (W2: p95 96-104 ms →
/// 82-94 ms, bench CPU 84-87 → 75-80 %); the rest is added to the measured latency, never taken from it.
final class RawSubscriberLoops: RawSubscriberSource {
    private let loops: [RawSubscriberLoop]
    private let threads: [ConditionLock<Bool>]

    /// One connection to open: from which source address (nil: any), to which channel (its index).
    struct Connect: Sendable {
        var sourceAddress: String?
        var channel: Int
    }

    /// `report` is called once per connection, from a loop thread, with the connection's channel index:
    /// nil when it is subscribed.
    init(
        threads count: Int, endpoint: StormEndpoint, channels: BenchChannels, publishers: Int,
        connectTimeout: TimeAmount, pollInterval: TimeAmount, report: @escaping @Sendable (StormError?, Int) -> Void
    ) throws(StormError) {
        let plan = try RawSubscriberPlan(
            endpoint: endpoint, channels: channels, publishers: publishers, connectTimeout: connectTimeout,
            pollInterval: pollInterval)
        var loops: [RawSubscriberLoop] = []
        var threads: [ConditionLock<Bool>] = []
        for _ in 0..<max(1, count) {
            let loop = try RawSubscriberLoop(plan: plan, report: report)
            let finished = ConditionLock(value: false)
            let thread = Thread {
                loop.run()
                finished.lock()
                finished.unlock(withValue: true)
            }
            thread.name = "bench-raw-ws"
            thread.start()
            loops.append(loop)
            threads.append(finished)
        }
        self.loops = loops
        self.threads = threads
    }

    var count: Int { loops.count }

    /// Opens one connection per entry on loop `loop`, each bound to its source address (nil: any) and
    /// subscribing to its channel; each outcome goes to `report`.
    func connect(loop: Int, _ connects: [Connect]) {
        loops[loop % loops.count].connect(connects)
    }

    /// What every subscriber has counted so far (each loop publishes its figures every 100 ms).
    func figures() -> SubscriberFigures {
        var total = SubscriberFigures()
        for loop in loops { total.merge(loop.publishedFigures) }
        return total
    }

    /// Closes every connection and waits for the threads; the figures are final afterwards.
    func stop() {
        for loop in loops { loop.stop() }
        for finished in threads {
            finished.lock(whenValue: true)
            finished.unlock()
        }
    }
}

/// What every connection of a run shares: where to connect and what to send.
private struct RawSubscriberPlan: Sendable {
    let address: SocketAddress
    /// `http://host:port`, for messages.
    let server: String
    let hostHeader: String
    let authorization: String?
    /// The subscribe request of each channel; masked afresh for each connection (RFC 6455 section 5.3).
    let subscribeRequests: [[UInt8]]
    let publishers: Int
    let connectTimeoutMicros: UInt64
    let pollInterval: TimeAmount
    let parser = ServerFrameParser(maximumFrameSize: StormWebSocketClient.maximumFrameSize)

    init(
        endpoint: StormEndpoint, channels: BenchChannels, publishers: Int, connectTimeout: TimeAmount,
        pollInterval: TimeAmount
    ) throws(StormError) {
        self.address = try endpoint.socketAddress()
        self.server = endpoint.description
        self.hostHeader = endpoint.hostHeader
        self.authorization = endpoint.authorization
        self.subscribeRequests = channels.names.map { Array(SubscriberFleet.subscribeRequest(to: $0).utf8) }
        self.publishers = max(1, publishers)
        self.connectTimeoutMicros = UInt64(max(0, connectTimeout.nanoseconds / 1_000))
        self.pollInterval = pollInterval
    }

    func handshakeRequest(key: String) -> [UInt8] {
        var request = "GET /ws HTTP/1.1\r\nHost: \(hostHeader)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        request += "Sec-WebSocket-Key: \(key)\r\nSec-WebSocket-Version: 13\r\n"
        if let authorization { request += "Authorization: \(authorization)\r\n" }
        request += "\r\n"
        return Array(request.utf8)
    }
}

/// One connection's state. Used only on its loop's thread.
private final class RawSubscriber {
    enum State {
        case connecting
        case handshaking
        case subscribing
        case streaming
    }

    let fd: Int32
    /// Index of its channel in the run's `BenchChannels`.
    let channel: Int
    var state = State.connecting
    let key: String
    let deadlineMicros: UInt64
    /// The start of a frame (or of the handshake answer) that has not fully arrived.
    var carried: ByteBuffer?
    /// The fragments of a text message the server split (our gateway never does).
    var fragments: ByteBuffer?
    /// Last sequence number seen from each publisher.
    var lastSequence: [UInt64]

    init(fd: Int32, channel: Int, key: String, deadlineMicros: UInt64, publishers: Int) {
        self.fd = fd
        self.channel = channel
        self.key = key
        self.deadlineMicros = deadlineMicros
        self.lastSequence = Array(repeating: 0, count: publishers)
    }
}

/// One thread's epoll loop. Everything but `inbox` and `published` is used only on that thread.
private final class RawSubscriberLoop: @unchecked Sendable {
    private let plan: RawSubscriberPlan
    private let report: @Sendable (StormError?, Int) -> Void
    private let epoll: Int32
    private let wakeup: Int32
    private static let wakeupToken = UInt64.max

    private struct Inbox {
        var connects: [RawSubscriberLoops.Connect] = []
        var stopping = false
    }
    private let inbox = NIOLockedValueBox(Inbox())
    private let published = NIOLockedValueBox(SubscriberFigures())

    private var subscribers: [RawSubscriber?] = []
    private var freeSlots: [Int] = []
    /// Slots still connecting, handshaking or subscribing: checked against their deadline.
    private var opening: Set<Int> = []
    private var figures = SubscriberFigures()
    private var readBuffer = ByteBufferAllocator().buffer(capacity: 1 << 16)
    private let allocator = ByteBufferAllocator()
    private var stopping = false

    init(plan: RawSubscriberPlan, report: @escaping @Sendable (StormError?, Int) -> Void) throws(StormError) {
        self.plan = plan
        self.report = report
        epoll = epoll_create1(Int32(EPOLL_CLOEXEC))
        wakeup = eventfd(0, Int32(EFD_NONBLOCK | EFD_CLOEXEC))
        guard epoll >= 0, wakeup >= 0 else {
            throw StormError(.internalError, "cannot create the bench's epoll loop: \(String(cString: strerror(errno)))")
        }
        var event = epoll_event()
        event.events = EPOLLIN.rawValue
        event.data.u64 = Self.wakeupToken
        epoll_ctl(epoll, EPOLL_CTL_ADD, wakeup, &event)
    }

    var publishedFigures: SubscriberFigures { published.withLockedValue { $0 } }

    func connect(_ connects: [RawSubscriberLoops.Connect]) {
        inbox.withLockedValue { $0.connects.append(contentsOf: connects) }
        signal()
    }

    func stop() {
        inbox.withLockedValue { $0.stopping = true }
        signal()
    }

    private func signal() {
        var one: UInt64 = 1
        _ = write(wakeup, &one, 8)
    }

    // MARK: The loop

    func run() {
        var events = [epoll_event](repeating: epoll_event(), count: 512)
        var lastHousekeeping = unixMicrosNow()
        // While traffic flows, rest `pollInterval` between polls instead of being woken per readable
        // socket (see `RawSubscriberLoops`); a poll that finds nothing goes back to waiting.
        let pollMicros = UInt32(clamping: max(0, plan.pollInterval.nanoseconds / 1_000))
        var busy = false
        while !stopping {
            let polling = busy && pollMicros > 0
            if polling { usleep(pollMicros) }
            let ready = epoll_wait(epoll, &events, Int32(events.count), polling ? 0 : 50)
            busy = ready > 0
            for index in 0..<max(0, Int(ready)) {
                let token = events[index].data.u64
                if token == Self.wakeupToken {
                    takeInbox()
                } else {
                    handle(slot: Int(token), events: events[index].events)
                }
            }
            let now = unixMicrosNow()
            if now &- lastHousekeeping >= 100_000 {
                lastHousekeeping = now
                expire(now: now)
                let snapshot = figures
                published.withLockedValue { $0 = snapshot }
            }
        }
        for slot in subscribers.indices where subscribers[slot] != nil { end(slot, because: nil) }
        let snapshot = figures
        published.withLockedValue { $0 = snapshot }
    }

    /// The descriptors outlive the thread, so that a late `stop()` never writes to a reused number.
    deinit {
        close(epoll)
        close(wakeup)
    }

    private func takeInbox() {
        var drained: UInt64 = 0
        _ = read(wakeup, &drained, 8)
        let (connects, stop) = inbox.withLockedValue { inbox in
            defer { inbox.connects.removeAll(keepingCapacity: true) }
            return (inbox.connects, inbox.stopping)
        }
        for connect in connects { open(connect) }
        if stop { stopping = true }
    }

    // MARK: Connecting

    private func open(_ connect: RawSubscriberLoops.Connect) {
        let source = connect.sourceAddress
        let channel = connect.channel
        let family = plan.address.protocol.rawValue
        let fd = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return report(Self.systemError("socket", errno), channel) }
        var on: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &on, socklen_t(MemoryLayout<Int32>.size))
        if let source {
            // IP_BIND_ADDRESS_NO_PORT: the port is chosen at connect(), per destination (see ClientBootstraps).
            setsockopt(fd, Int32(IPPROTO_IP), 24, &on, socklen_t(MemoryLayout<Int32>.size))
            let bound: Int32
            do {
                bound = try SocketAddress(ipAddress: source, port: 0).withSockAddr { bind(fd, $0, socklen_t($1)) }
            } catch {
                close(fd)
                return report(StormError(.configuration, "local address '\(source)' is not an IP address"), channel)
            }
            guard bound == 0 else {
                let code = errno
                close(fd)
                return report(Self.systemError("bind to \(source)", code), channel)
            }
        }
        let connected = plan.address.withSockAddr { Glibc.connect(fd, $0, socklen_t($1)) }
        guard connected == 0 || errno == EINPROGRESS else {
            let code = errno
            close(fd)
            return report(Self.systemError("cannot connect to \(plan.server)", code), channel)
        }
        let key = Data((0..<16).map { _ in UInt8.random(in: 0...255) }).base64EncodedString()
        let subscriber = RawSubscriber(
            fd: fd, channel: channel, key: key, deadlineMicros: unixMicrosNow() + plan.connectTimeoutMicros, publishers: plan.publishers)
        let slot = freeSlots.popLast() ?? subscribers.count
        if slot == subscribers.count { subscribers.append(subscriber) } else { subscribers[slot] = subscriber }
        opening.insert(slot)
        var event = epoll_event()
        event.events = EPOLLOUT.rawValue
        event.data.u64 = UInt64(slot)
        epoll_ctl(epoll, EPOLL_CTL_ADD, fd, &event)
    }

    private func handle(slot: Int, events: UInt32) {
        guard slot < subscribers.count, let subscriber = subscribers[slot] else { return }
        if subscriber.state == .connecting {
            var failure: Int32 = 0
            var length = socklen_t(MemoryLayout<Int32>.size)
            getsockopt(subscriber.fd, SOL_SOCKET, SO_ERROR, &failure, &length)
            if failure != 0 { return end(slot, because: Self.systemError("cannot connect to \(plan.server)", failure)) }
            guard send(plan.handshakeRequest(key: subscriber.key), on: subscriber) else {
                return end(slot, because: StormError(.connection, "could not send the WebSocket handshake"))
            }
            subscriber.state = .handshaking
            var event = epoll_event()
            event.events = EPOLLIN.rawValue
            event.data.u64 = UInt64(slot)
            epoll_ctl(epoll, EPOLL_CTL_MOD, subscriber.fd, &event)
            return
        }
        readAvailable(slot, subscriber)
    }

    // MARK: Reading

    private func readAvailable(_ slot: Int, _ subscriber: RawSubscriber) {
        readBuffer.clear()
        if var carried = subscriber.carried {
            readBuffer.writeBuffer(&carried)
            subscriber.carried = nil
        }
        var result = 0
        readBuffer.writeWithUnsafeMutableBytes(minimumWritableBytes: 16 << 10) { space in
            result = read(subscriber.fd, space.baseAddress, space.count)
            return max(0, result)
        }
        if result == 0 { return end(slot, because: StormError(.connection, "the gateway closed the connection")) }
        if result < 0 {
            let code = errno
            if code == EAGAIN || code == EINTR { return carry(subscriber) }
            return end(slot, because: Self.systemError("read", code))
        }
        let now = unixMicrosNow()
        if subscriber.state == .handshaking {
            guard finishHandshake(slot, subscriber) else { return }
        }
        do {
            while let frame = try plan.parser.next(&readBuffer) {
                guard subscribers[slot] === subscriber else { return }
                handle(frame, slot: slot, subscriber, now: now)
            }
        } catch {
            return end(slot, because: StormError(.protocolViolation, error.message))
        }
        if subscribers[slot] === subscriber { carry(subscriber) }
    }

    /// Keeps what is left of the read for the next one, copied so that the thread's buffer stays its own.
    private func carry(_ subscriber: RawSubscriber) {
        guard readBuffer.readableBytes > 0 else { return }
        var carried = allocator.buffer(capacity: readBuffer.readableBytes)
        carried.writeBuffer(&readBuffer)
        subscriber.carried = carried
    }

    /// Consumes the handshake answer once it is whole and sends the subscribe; false while it is not.
    private func finishHandshake(_ slot: Int, _ subscriber: RawSubscriber) -> Bool {
        let view = readBuffer.readableBytesView
        guard let end = view.firstRange(of: [13, 10, 13, 10]) else {
            if readBuffer.readableBytes > 16 << 10 {
                self.end(slot, because: StormError(.protocolViolation, "the gateway's handshake answer is larger than 16 KiB"))
            } else {
                carry(subscriber)
            }
            return false
        }
        let headLength = end.lowerBound - view.startIndex
        let head = readBuffer.readString(length: headLength) ?? ""
        readBuffer.moveReaderIndex(forwardBy: 4)
        if let problem = HandshakeCheck.problem(with: head, key: subscriber.key) {
            self.end(slot, because: StormError(.connection, problem))
            return false
        }
        guard plan.subscribeRequests.indices.contains(subscriber.channel),
            send(ClientFrame.masked(opcode: ServerFrame.text, payload: plan.subscribeRequests[subscriber.channel]), on: subscriber)
        else {
            self.end(slot, because: StormError(.connection, "could not send the subscribe request"))
            return false
        }
        subscriber.state = .subscribing
        return true
    }

    private func handle(_ frame: ServerFrame, slot: Int, _ subscriber: RawSubscriber, now: UInt64) {
        switch frame.opcode {
        case ServerFrame.text where frame.fin && subscriber.fragments == nil:
            message(frame.payload, slot: slot, subscriber, now: now)
        case ServerFrame.text where subscriber.fragments == nil:
            var first = allocator.buffer(capacity: frame.payload.readableBytes)
            var payload = frame.payload
            first.writeBuffer(&payload)
            subscriber.fragments = first
        case ServerFrame.continuation where subscriber.fragments != nil:
            var payload = frame.payload
            subscriber.fragments?.writeBuffer(&payload)
            if frame.fin, let whole = subscriber.fragments {
                subscriber.fragments = nil
                message(whole, slot: slot, subscriber, now: now)
            }
        case ServerFrame.ping:
            if !send(ClientFrame.masked(opcode: ServerFrame.pong, payload: Array(frame.payload.readableBytesView)), on: subscriber) {
                end(slot, because: StormError(.connection, "could not answer the gateway's ping"))
            }
        case ServerFrame.pong:
            break
        case ServerFrame.close:
            _ = send(ClientFrame.masked(opcode: ServerFrame.close, payload: Array(frame.payload.readableBytesView.prefix(2))), on: subscriber)
            var payload = frame.payload
            let code = payload.readInteger(as: UInt16.self).map { " (\($0))" } ?? ""
            let reason = payload.readString(length: payload.readableBytes).map { $0.isEmpty ? "" : ": \($0)" } ?? ""
            end(slot, because: StormError(.connection, "the gateway closed the WebSocket\(code)\(reason)"))
        case ServerFrame.binary:
            figures.unreadable += 1
        default:
            end(slot, because: StormError(.protocolViolation, "the server sent a continuation frame with nothing to continue"))
        }
    }

    /// A whole text message: a bench delivery (checked like `BenchSubscriber` does), or the reply to
    /// the subscribe.
    private func message(_ payload: ByteBuffer, slot: Int, _ subscriber: RawSubscriber, now: UInt64) {
        payload.withUnsafeReadableBytes { bytes in
            if let fields = EnvelopeProbe.benchFields(bytes) {
                return figures.count(fields, channel: subscriber.channel, at: now, lastSequence: &subscriber.lastSequence)
            }
            switch EnvelopeProbe.kind(bytes) {
            case .reply where subscriber.state == .subscribing:
                subscriber.state = .streaming
                opening.remove(slot)
                report(nil, subscriber.channel)
            case .error where subscriber.state == .subscribing:
                end(slot, because: MessagePrinter.serverError(Array(bytes)))
            case .reply, .error:
                break
            case .message, .other:
                figures.unreadable += 1
            }
        }
    }

    // MARK: Ending

    /// Closes a connection. `reason` nil: the bench is done with it. Otherwise a connection still opening
    /// failed (reported), or a subscribed one was dropped (counted).
    private func end(_ slot: Int, because reason: StormError?) {
        guard let subscriber = subscribers[slot] else { return }
        subscribers[slot] = nil
        freeSlots.append(slot)
        epoll_ctl(epoll, EPOLL_CTL_DEL, subscriber.fd, nil)
        close(subscriber.fd)
        if opening.remove(slot) != nil {
            report(reason ?? StormError(.connection, "the bench stopped before the subscription completed"), subscriber.channel)
        } else if let reason, !stopping {
            figures.dropped += 1
            if figures.firstDropReason == nil { figures.firstDropReason = reason.message }
        }
    }

    private func expire(now: UInt64) {
        for slot in opening {
            guard let subscriber = subscribers[slot], now > subscriber.deadlineMicros else { continue }
            let what = subscriber.state == .subscribing ? "no reply to subscribe" : "the WebSocket handshake did not complete"
            end(slot, because: StormError(.connection, "\(what) within the connect timeout"))
        }
    }

    // MARK: Helpers

    /// Small frames and the handshake go out in one `write()`; a socket that cannot take them is broken.
    private func send(_ bytes: [UInt8], on subscriber: RawSubscriber) -> Bool {
        bytes.withUnsafeBytes { write(subscriber.fd, $0.baseAddress, $0.count) } == bytes.count
    }

    private static func systemError(_ call: String, _ code: Int32) -> StormError {
        StormError(.connection, "\(call): \(StormError.socketFailureReason(code))")
    }
}
#endif
