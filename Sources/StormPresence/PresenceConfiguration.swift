import NIOCore
import StormConfiguration
import StormCore

/// Presence settings (one `Sendable` struct, every field with its documented default):
///
/// | key | environment | default |
/// |---|---|---|
/// | `redis` (`--redis URL`) | `STORM_REDIS_URL` | none: the in-memory store (this process sees only itself) |
/// | `redis-prefix` | `STORM_REDIS_PREFIX` | `storm`: first part of every Redis key, so clusters can share a Redis |
/// | `presence-channels` | `STORM_PRESENCE_CHANNELS` | empty: no channel records presence (as Centrifugo's namespaces) |
/// | `presence-events` | `STORM_PRESENCE_EVENTS` | empty: no join/leave messages |
/// | `presence-ttl` | `STORM_PRESENCE_TTL` | `30s`: a crashed gateway's entries vanish within this; heartbeats every third of it |
/// | `advertise-url` | `STORM_ADVERTISE_URL` | `http://<listen address>` (the host name when listening on all addresses) |
///
/// Channel patterns are comma lists: `*` is every channel, `chat.*` every channel whose first tokens are
/// `chat` (one or more tokens after it), anything else one exact channel.
package struct PresenceConfiguration: Sendable {
    package var redis: RedisEndpoint?
    package var redisKeyPrefix = "storm"
    package var channels = ChannelPatterns()
    package var events = ChannelPatterns()
    package var ttl: TimeAmount = .seconds(30)
    package var advertiseURL: String?
    /// How long the writer lets joins and leaves gather before one pipelined write (not a flag: tests
    /// shorten it). At 100 ms, 10,000 joins within a second are about ten round trips.
    package var batchInterval: TimeAmount = .milliseconds(100)

    package init(
        redis: RedisEndpoint? = nil, redisKeyPrefix: String = "storm", channels: ChannelPatterns = ChannelPatterns(),
        events: ChannelPatterns = ChannelPatterns(), ttl: TimeAmount = .seconds(30), advertiseURL: String? = nil,
        batchInterval: TimeAmount = .milliseconds(100)
    ) {
        self.redis = redis
        self.redisKeyPrefix = redisKeyPrefix
        self.channels = channels
        self.events = events
        self.ttl = ttl
        self.advertiseURL = advertiseURL
        self.batchInterval = batchInterval
    }

    /// Heartbeats come every third of the TTL, so two can be lost before entries expire.
    package var heartbeatInterval: TimeAmount { .nanoseconds(ttl.nanoseconds / 3) }

    /// Reads the presence settings from `sources`; errors name the setting and show a valid value.
    package mutating func load(from sources: ConfigurationSources) throws(StormError) {
        if let value = sources.value(.redis), !value.value.isEmpty {
            do {
                redis = try RedisEndpoint(url: value.value)
            } catch {
                throw StormError(.configuration, "\(value.origin): \(error.message)")
            }
        }
        if let value = sources.value(.redisPrefix) {
            guard !value.value.isEmpty, value.value.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F && $0 != UInt8(ascii: ":") }) else {
                throw StormError(.configuration, "\(value.origin): '\(value.value)' is not a key prefix (printable ASCII without spaces or ':', e.g. storm)")
            }
            redisKeyPrefix = value.value
        }
        if let value = sources.value(.presenceChannels) { channels = try ChannelPatterns(parsing: value.value, origin: value.origin) }
        if let value = sources.value(.presenceEvents) { events = try ChannelPatterns(parsing: value.value, origin: value.origin) }
        if let value = sources.value(.presenceTTL) {
            ttl = try ConfigurationSources.parseDuration(value, range: .seconds(1)...TimeAmount.hours(1))
        }
        if let value = sources.value(.advertiseURL), !value.value.isEmpty {
            guard value.value.hasPrefix("http://") || value.value.hasPrefix("https://") else {
                throw StormError(.configuration, "\(value.origin): '\(value.value)' is not an http:// or https:// URL (the address other gateways and stormctl reach this one at)")
            }
            advertiseURL = value.value.hasSuffix("/") ? String(value.value.dropLast()) : value.value
        }
    }

    /// `--print-config` lines (the Redis password is masked).
    package var rendered: String {
        """
        redis = \(redis?.description ?? "")
        redis-prefix = \(redisKeyPrefix)
        presence-channels = \(channels)
        presence-events = \(events)
        presence-ttl = \(ttl.nanoseconds / 1_000_000)ms
        advertise-url = \(advertiseURL ?? "")
        """
    }
}

