#if canImport(Glibc)
import Glibc
#endif
import Logging
import NIOCore
import StormCore

/// Pauses accepting for `delay` when accept fails for lack of resources (EMFILE, ENFILE, ENOBUFS,
/// ENOMEM), on the listening channel: without it the event loop spins.
///
/// Why not NIO's `AcceptBackoffHandler` (which the future-based `ServerBootstrap.bind` does not add
/// anyway): it delays the next `read()`, but when the first accept of a readable event fails, NIO 2.101
/// leaves the read pending and the listener registered for readability, so no `read()` comes to delay
/// and epoll reports the listener readable again at once, for ever (measured: 2.2 CPU-seconds in 3 s
/// with `ulimit -n 40` and 300 pending connections, with `AcceptBackoffHandler` in the pipeline). Turning
/// `autoRead` off unregisters the listener from epoll; turning it back on after the delay accepts again.
package final class AcceptBackoff: ChannelInboundHandler, RemovableChannelHandler {
    package typealias InboundIn = any Channel
    package typealias InboundOut = any Channel

    package static let delay = TimeAmount.milliseconds(100)

    private let logger: Logger
    private let delay: TimeAmount
    private var paused = false
    private var lastLog: NIODeadline?

    package init(logger: Logger, delay: TimeAmount = AcceptBackoff.delay) {
        self.logger = logger
        self.delay = delay
    }

    package func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard let error = error as? IOError, [EMFILE, ENFILE, ENOBUFS, ENOMEM].contains(error.errnoCode) else {
            context.fireErrorCaught(error)
            return
        }
        let now = NIODeadline.now()
        if lastLog.map({ now - $0 >= .seconds(60) }) ?? true {
            lastLog = now
            logger.error(
                "cannot accept connections: \(error); pausing accepts for \(delay.nanoseconds / 1_000_000) ms at a time (lower --max-connections or raise the open-files limit)")
        }
        guard !paused, let options = context.channel.syncOptions else { return }
        paused = true
        try? options.setOption(.autoRead, value: false)
        let channel = context.channel
        context.eventLoop.assumeIsolated().scheduleTask(in: delay) { [self] in
            self.paused = false
            try? channel.syncOptions?.setOption(.autoRead, value: true)
        }
    }
}
