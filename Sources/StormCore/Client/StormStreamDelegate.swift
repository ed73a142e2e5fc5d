import NIOCore

/// Receives what one streaming connection (WebSocket or SSE) delivers.
///
/// Every call happens on the connection's event loop, one at a time, so an implementation keeps plain
/// mutable state without locks. That is what lets the bench hold tens of thousands of connections, each
/// with a few counters, without a lock or an allocation per message.
public protocol StormStreamDelegate: AnyObject {
    /// One WebSocket text frame, or one SSE event's `data`. The buffer is only valid during the call.
    func streamDidReceive(text: ByteBuffer)
    /// One whole Server-Sent Event (SSE only). The default forwards `data` to `streamDidReceive(text:)`.
    func streamDidReceive(event: ServerSentEvent)
    /// The connection ended: `nil` after a clean close we asked for, otherwise why.
    func streamDidClose(error: StormError?)
}

extension StormStreamDelegate {
    public func streamDidReceive(event: ServerSentEvent) {
        streamDidReceive(text: ByteBuffer(bytes: event.data))
    }
}

/// Builds a delegate for a new connection. Called on the connection's event loop, which it is given,
/// so the delegate can bind itself to per-loop state.
public typealias StormStreamDelegateFactory = @Sendable (any EventLoop) -> any StormStreamDelegate
