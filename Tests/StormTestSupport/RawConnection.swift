import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import StormCore

/// A test client that speaks bytes, so tests can send exactly what a broken or hostile client would
/// (unmasked frames, bad UTF-8, a reader that stops reading) and see exactly what the server answers.
/// Reads are asynchronous and bounded by a deadline: no test can hang on a silent server.
package final class RawConnection: @unchecked Sendable {
    // @unchecked: `buffer` and `closed` are guarded by `lock`.
    package struct Timeout: Error, CustomStringConvertible {
        package let what: String
        package var description: String { "timed out waiting for \(what)" }
    }

    package struct Closed: Error {}

    package let channel: any Channel
    private let lock = NIOLock()
    private var buffer = ByteBuffer()
    private var closed = false

    /// Test clients get loops of their own, so nothing else in the test process (servers, brokers,
    /// other suites running in parallel) can delay what they observe.
    package static let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)

    private init(channel: any Channel) {
        self.channel = channel
    }

    package static func connect(port: Int, host: String = "127.0.0.1", receiveBuffer: Int? = nil, autoRead: Bool = true) async throws -> RawConnection {
        let box = NIOLockedValueBox<RawConnection?>(nil)
        var bootstrap = ClientBootstrap(group: group)
            .channelOption(.autoRead, value: autoRead)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let connection = RawConnection(channel: channel)
                    box.withLockedValue { $0 = connection }
                    try channel.pipeline.syncOperations.addHandler(Collector(connection: connection))
                }
            }
        if let receiveBuffer {
            bootstrap = bootstrap.channelOption(.socketOption(.so_rcvbuf), value: SocketOptionValue(receiveBuffer))
        }
        _ = try await bootstrap.connect(host: host, port: port).get()
        guard let connection = box.withLockedValue({ $0 }) else { throw Closed() }
        return connection
    }

    package func send(_ bytes: [UInt8]) async throws {
        try await channel.writeAndFlush(ByteBuffer(bytes: bytes))
    }

    package func send(_ text: String) async throws {
        try await send(Array(text.utf8))
    }

    package func close() async {
        try? await channel.close()
    }

    package var isClosed: Bool { lock.withLock { closed } }

    /// Waits until `parse` can take something from the received bytes; `parse` returns nil to wait for
    /// more. Throws `Closed` when the peer closed first and `Timeout` after `seconds`.
    package func read<T>(_ what: String, seconds: Double = 30, _ parse: (inout ByteBuffer) throws -> T?) async throws -> T {
        let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
        while true {
            let (value, isClosed): (T?, Bool) = try lock.withLock {
                var view = buffer
                if let value = try parse(&view) {
                    buffer = view
                    buffer.discardReadBytes()
                    return (value, closed)
                }
                return (nil, closed)
            }
            if let value { return value }
            if isClosed { throw Closed() }
            guard ContinuousClock.now < deadline else { throw Timeout(what: what) }
            await waitForData(until: deadline)
        }
    }

    /// Waits until the server closes the connection.
    package func waitUntilClosed(seconds: Double = 30) async throws {
        let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
        while !isClosed {
            guard ContinuousClock.now < deadline else { throw Timeout(what: "the server to close the connection") }
            await waitForData(until: deadline)
        }
    }

    /// Waits until the server closes the connection and returns every byte received and not yet read.
    package func readUntilClosed(seconds: Double = 30) async throws -> [UInt8] {
        try await waitUntilClosed(seconds: seconds)
        return lock.withLock { Array(buffer.readableBytesView) }
    }

    private func waitForData(until deadline: ContinuousClock.Instant) async {
        // Polling keeps this simple and immune to missed wake-ups; 5 ms is invisible in a test.
        try? await Task.sleep(for: .milliseconds(5))
    }

    fileprivate func received(_ bytes: ByteBuffer) {
        lock.withLock {
            var bytes = bytes
            buffer.writeBuffer(&bytes)
        }
    }

    fileprivate func peerClosed() {
        lock.withLock { closed = true }
    }

    private final class Collector: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = ByteBuffer
        let connection: RawConnection
        init(connection: RawConnection) { self.connection = connection }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            connection.received(unwrapInboundIn(data))
        }
        func channelInactive(context: ChannelHandlerContext) {
            connection.peerClosed()
        }
        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            context.close(promise: nil)
        }
    }
}
