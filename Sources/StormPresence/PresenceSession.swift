import StormCore
import StormObservability

/// What presence needs of a client connection: its transport (shown in each presence entry) and a way
/// to close it when presence is turned off under it. The gateway's sessions conform through
/// `FanoutSubscriber`; presence never sees their fan-out side.
package protocol PresenceSession: AnyObject {
    var transport: GatewayMetrics.Transport { get }

    /// Closes the connection for a gateway shutdown (WebSocket close 1001, SSE stream end).
    func closeForShutdown()

    /// Closes the connection because a disconnect request named it (`POST …/disconnect`), with the
    /// request's reason when it gave one (the WebSocket close frame's reason, at most 123 bytes).
    func closeOnRequest(reason: String?)
}

extension PresenceSession {
    /// A transport with no close reason to carry (an SSE stream ends) closes as for a shutdown.
    package func closeOnRequest(reason: String?) { closeForShutdown() }
}
