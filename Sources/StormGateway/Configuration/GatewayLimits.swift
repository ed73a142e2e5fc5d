import NIOCore
import StormCore

/// The per-connection limits and timings every session applies. Defaults are the documented ones
/// (`stormd --help`, man/stormd.8).
package struct GatewayLimits: Sendable {
    /// Largest payload accepted, in bytes (`--max-message-size`, default 64 KiB).
    package var maxMessageSize = 64 * 1024
    /// Outbound bytes a connection may have pending before it is disconnected as too slow
    /// (`--client-buffer`, default 1 MiB).
    package var clientBufferBytes = 1 << 20
    /// How long a connection being closed may take to let its last bytes out (the close frame, the SSE
    /// end of stream) before its TCP connection is cut anyway: a peer that stopped reading never lets
    /// them out. Not a flag; tests raise it so that a slow reader can be observed reading its 4008.
    package var closeGrace: TimeAmount = .seconds(2)
    /// Subscriptions one connection may hold (`--max-channels-per-connection`, default 128).
    package var maxChannelsPerConnection = 128
    /// Distinct channels this gateway serves at once (`--max-channels`, default 20,000): each costs a
    /// broker subscription (a JetStream consumer on NATS), so a token allowed `chat.*` must not be able
    /// to open unbounded numbers of them with random names. A subscribe past it is `too_many_channels`.
    package var maxChannels = 20_000
    /// Publishes one connection may make per second, with a burst of as many (`--client-publish-rate`,
    /// default 1,000; 0 turns the limit off). A publish past it is `rate_limited`; the connection stays.
    package var clientPublishRate = 1_000
    /// Silence after which a WebSocket client is pinged; twice this and it is dropped (`--ws-ping-interval`).
    package var webSocketPingInterval: TimeAmount = .seconds(20)
    /// Interval of SSE heartbeat comments (`--sse-heartbeat`).
    package var sseHeartbeatInterval: TimeAmount = .seconds(15)
    /// Delay before a batch of deliveries is written and flushed (`--flush-interval`, default 1 ms): a
    /// bounded latency cost that lets one `writev` carry many messages.
    package var flushDelay: TimeAmount = .milliseconds(1)
    /// Upper bound of the adaptive batch delay under heavy load (`--max-flush-interval`); `nil`, the
    /// default, means `flushDelay`: no stretching. Fan-out passes batch by themselves under load (each
    /// carries what arrived during the last), so stretching only adds latency unless fewer, larger
    /// writes are wanted (W2: p95 106-110 ms unstretched, 112 ms up to 5 ms, 135 ms up to 50 ms).
    package var maxFlushDelay: TimeAmount?

    /// `maxFlushDelay` as applied.
    package var effectiveMaxFlushDelay: TimeAmount { max(flushDelay, maxFlushDelay ?? flushDelay) }

    /// Whether the live web page is served at `/` and `/ui/` (`--web-ui`, default on).
    package var webUI = true

    /// A WebSocket request carries the payload inside JSON, perhaps as base64 (4/3 larger), so the frame
    /// limit is above the payload limit.
    package var maxWebSocketMessageSize: Int { maxMessageSize / 3 * 4 + 8 * 1024 }
}
