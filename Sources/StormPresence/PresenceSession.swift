import StormCore
import StormObservability

/// What presence needs of a client connection: its transport (shown in each presence entry) and a way
/// to close it when presence is turned off under it. The gateway's sessions conform through
/// `FanoutSubscriber`; presence never sees their fan-out side.
package protocol PresenceSession: AnyObject {
    var transport: GatewayMetrics.Transport { get }

    /// Closes the connection for a gateway shutdown (WebSocket close 1001, SSE stream end).
    func closeForShutdown()
}
