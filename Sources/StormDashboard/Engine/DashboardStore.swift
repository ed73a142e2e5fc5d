import Foundation
import StormCore
import Synchronization

/// A gateway to poll: given on the command line, or found in the registry in Redis.
package struct GatewayTarget: Sendable, Equatable {
    package var endpoint: StormEndpoint
    /// The metrics path: `/metrics` unless the registry advertises another.
    package var path: String = "/metrics"
    /// The gateway's id in the registry, when it was discovered there.
    package var registryID: String?
    /// `host:port`, what the table shows.
    package var address: String { endpoint.hostHeader }
    package var url: String { endpoint.description }
    /// What identifies the gateway across polls: a discovered gateway also given with `--gateway` is
    /// polled once.
    package var key: String { endpoint.description + path }

    /// Parses every `--gateway` value and `STORM_GATEWAYS` entry; duplicates are dropped so one gateway
    /// is not polled (and counted) twice.
    package static func parse(_ values: [String]) throws(StormError) -> [GatewayTarget] {
        var targets: [GatewayTarget] = []
        for value in values {
            for part in value.split(separator: ",") {
                let trimmed = part.trimmingCharacters(in: .whitespaces)
                guard !trimmed.isEmpty else { continue }
                let target = GatewayTarget(endpoint: try StormEndpoint(url: trimmed))
                if !targets.contains(target) { targets.append(target) }
            }
        }
        return targets
    }

    /// The target of a registry record: its advertised metrics URL, with the path it names.
    package init(discovered gateway: DiscoveredGateway) throws(StormError) {
        endpoint = try StormEndpoint(url: gateway.metricsURL)
        var rest = Substring(gateway.metricsURL)
        if let scheme = rest.range(of: "://") { rest = rest[scheme.upperBound...] }
        if let slash = rest.firstIndex(of: "/") { path = String(rest[slash...]) }
        registryID = gateway.id
    }

    package init(endpoint: StormEndpoint, path: String = "/metrics") {
        self.endpoint = endpoint
        self.path = path
    }
}

/// What is known of one gateway: its last two good scrapes, or why it is down.
package struct GatewayTracker: Sendable {
    package let target: GatewayTarget
    private(set) var latest: ScrapeSample?
    private(set) var previous: ScrapeSample?
    private(set) var failure: String?
    /// The last two reads of `GET /api/v1/channels` (gateways only), or why it failed.
    private(set) var channelsLatest: ChannelSample?
    private(set) var channelsPrevious: ChannelSample?
    private(set) var channelsFailure: String?

    package init(target: GatewayTarget) { self.target = target }

    /// A tracker as `--record` wrote it.
    package init(
        target: GatewayTarget, latest: ScrapeSample?, previous: ScrapeSample?, failure: String?,
        channelsLatest: ChannelSample?, channelsPrevious: ChannelSample?, channelsFailure: String?
    ) {
        self.target = target
        self.latest = latest
        self.previous = previous
        self.failure = failure
        self.channelsLatest = channelsLatest
        self.channelsPrevious = channelsPrevious
        self.channelsFailure = channelsFailure
    }

    package mutating func recordChannels(_ result: Result<ChannelSample, StormError>) {
        switch result {
        case .success(let sample):
            channelsPrevious = channelsLatest
            channelsLatest = sample
            channelsFailure = nil
        case .failure(let error):
            channelsFailure = DashboardStore.reason(error)
            channelsLatest = nil
            channelsPrevious = nil
        }
    }

    /// The rows of the connections view from this gateway.
    package var channelRates: [ChannelRate] {
        guard failure == nil, let channelsLatest else { return [] }
        return ChannelSample.rates(gateway: target.address, latest: channelsLatest, previous: channelsPrevious)
    }

    /// The figures of a history consumer (the consumers view).
    package var consumerFigures: ConsumerFigures {
        if let failure {
            var figures = ConsumerFigures(address: target.address, url: target.url)
            figures.state = .down(failure)
            return figures
        }
        guard let latest else { return ConsumerFigures(address: target.address, url: target.url) }
        return ConsumerFigures(address: target.address, url: target.url, latest: latest, previous: previous)
    }

    package mutating func record(_ sample: ScrapeSample) {
        previous = latest
        latest = sample
        failure = nil
    }

    /// A failed poll forgets the samples: rates restart from the next two good scrapes instead of
    /// averaging over the outage (and over a restart's counter reset).
    package mutating func recordFailure(_ reason: String) {
        failure = reason
        latest = nil
        previous = nil
    }

    package var figures: GatewayFigures {
        if let failure {
            var figures = GatewayFigures(address: target.address, url: target.url)
            figures.state = .down(failure)
            return figures
        }
        guard let latest else { return GatewayFigures(address: target.address, url: target.url) }
        return GatewayFigures(address: target.address, url: target.url, latest: latest, previous: previous)
    }
}

/// Everything stormtop shows at one instant.
package struct DashboardFrame: Sendable {
    package var gateways: [GatewayFigures]
    package var cluster: ClusterFigures
    /// Cluster delivered messages per second, one value per interval, oldest first; nil where no gateway
    /// had a rate yet.
    package var deliveryHistory: [Double?]
    package var wallClock: Double
    /// Completed poll rounds (interactive: history samples taken).
    package var generation: Int
    /// What was read from Redis; nil without `--redis`.
    package var presence: PresenceSnapshot? = nil
    /// History consumers (`--consumer`).
    package var consumers: [ConsumerFigures] = []
    /// Every gateway's channels from `GET /api/v1/channels`.
    package var channelRates: [ChannelRate] = []
    /// Why a gateway's channel list could not be read, by gateway address.
    package var channelFailures: [String: String] = [:]
    /// The header's alerts.
    package var alerts: [Alert] = []
    /// `--replay`: which recorded poll this is ("replay 3/120"), for the header.
    package var replayPosition: String? = nil
}

/// The shared state between the pollers (which write) and the screen or report (which read).
///
/// A `Mutex` rather than an actor: the curses loop runs synchronously on the main thread and must read
/// the latest figures without awaiting, and the critical sections are a copy of a few structs.
///
/// The gateways are those given on the command line, always, plus those the registry in Redis lists at
/// the last successful read: a gateway whose registry record expired leaves the table (one still given
/// with `--gateway` stays, and shows DOWN once it stops answering). While Redis cannot be read the last
/// list is kept, so a Redis outage does not empty the screen.
package final class DashboardStore: Sendable {
    package struct State: Sendable {
        package var trackers: [GatewayTracker]
        package var consumers: [GatewayTracker] = []
        package var history: [Double?] = []
        package var generation = 0
        package var presence: PresenceSnapshot?
    }

    /// How many delivery-rate samples the sparkline keeps: 20 minutes at the default interval, more than
    /// any terminal is wide.
    package static let historyLimit = 1200

    /// Gateways given on the command line.
    package let configured: [GatewayTarget]
    package let thresholds: AlertThresholds
    private let state: Mutex<State>

    package init(targets: [GatewayTarget], consumers: [GatewayTarget] = [], presence: PresenceSnapshot? = nil, thresholds: AlertThresholds = AlertThresholds()) {
        self.configured = targets
        self.thresholds = thresholds
        self.state = Mutex(State(trackers: targets.map(GatewayTracker.init(target:)), consumers: consumers.map(GatewayTracker.init(target:)), presence: presence))
    }

    /// The history consumers to poll.
    package var consumerTargets: [GatewayTarget] { state.withLock { $0.consumers.map(\.target) } }

    package func recordConsumer(_ target: GatewayTarget, _ result: Result<ScrapeSample, StormError>) {
        state.withLock { state in
            guard let index = state.consumers.firstIndex(where: { $0.target.key == target.key }) else { return }
            switch result {
            case .success(let sample): state.consumers[index].record(sample)
            case .failure(let error): state.consumers[index].recordFailure(Self.reason(error))
            }
        }
    }

    package func recordChannels(_ target: GatewayTarget, _ result: Result<ChannelSample, StormError>) {
        state.withLock { state in
            guard let index = state.trackers.firstIndex(where: { $0.target.key == target.key }) else { return }
            state.trackers[index].recordChannels(result)
        }
    }

    /// A copy of everything known, for `--record`.
    package var snapshot: State { state.withLock { $0 } }

    /// Replaces everything known (`--replay`).
    package func restore(_ replacement: State) {
        state.withLock { $0 = replacement }
    }

    /// The gateways to poll now.
    package var targets: [GatewayTarget] { state.withLock { $0.trackers.map(\.target) } }

    /// Whether `target` is still to be polled (a discovered gateway that left the registry is not).
    package func isPolled(_ target: GatewayTarget) -> Bool {
        state.withLock { $0.trackers.contains { $0.target.key == target.key } }
    }

    package func record(_ target: GatewayTarget, _ result: Result<ScrapeSample, StormError>) {
        state.withLock { state in
            guard let index = state.trackers.firstIndex(where: { $0.target.key == target.key }) else { return }
            switch result {
            case .success(let sample): state.trackers[index].record(sample)
            case .failure(let error): state.trackers[index].recordFailure(Self.reason(error))
            }
        }
    }

    /// Records a read of Redis and, when it succeeded, makes the polled gateways the configured ones plus
    /// the registry's (keeping the samples of those already known).
    package func record(_ snapshot: PresenceSnapshot) {
        var discovered: [GatewayTarget] = []
        for gateway in snapshot.gateways {
            // A record with an unusable URL is skipped rather than failing the whole view.
            guard let target = try? GatewayTarget(discovered: gateway) else { continue }
            if !discovered.contains(where: { $0.key == target.key }) { discovered.append(target) }
        }
        state.withLock { state in
            if snapshot.state == .up {
                var trackers: [GatewayTracker] = []
                for target in configured + discovered where !trackers.contains(where: { $0.target.key == target.key }) {
                    trackers.append(state.trackers.first { $0.target.key == target.key } ?? GatewayTracker(target: target))
                }
                state.trackers = trackers
                state.presence = snapshot
            } else {
                // Keep the last good figures on screen, with the new state.
                var kept = state.presence ?? snapshot
                kept.state = snapshot.state
                kept.readSeconds = snapshot.readSeconds
                state.presence = kept
            }
        }
    }

    /// Appends the current cluster delivery rate to the sparkline history.
    package func sampleHistory() {
        state.withLock { state in
            let cluster = ClusterFigures(state.trackers.map(\.figures))
            state.history.append(cluster.deliveredPerSecond)
            if state.history.count > Self.historyLimit { state.history.removeFirst(state.history.count - Self.historyLimit) }
            state.generation += 1
        }
    }

    package func frame(wallClock: Double) -> DashboardFrame {
        let copy = state.withLock { $0 }
        let gateways = copy.trackers.map(\.figures)
        let consumers = copy.consumers.map(\.consumerFigures)
        var failures: [String: String] = [:]
        for tracker in copy.trackers { if let failure = tracker.channelsFailure { failures[tracker.target.address] = failure } }
        return DashboardFrame(
            gateways: gateways, cluster: ClusterFigures(gateways), deliveryHistory: copy.history, wallClock: wallClock,
            generation: copy.generation, presence: copy.presence, consumers: consumers,
            channelRates: copy.trackers.flatMap(\.channelRates), channelFailures: failures,
            alerts: Alert.evaluate(gateways: gateways, consumers: consumers, thresholds: thresholds))
    }

    /// A short reason for the table: the error message without the code prefix and the repeated URL.
    package static func reason(_ error: StormError) -> String {
        var message = error.message
        // The client's hint for stormctl users ("— is stormd running? (set --server …)") does not apply.
        if let hint = message.range(of: " — ") { message = String(message[..<hint.lowerBound]) }
        return message.replacingOccurrences(of: "http://", with: "")
    }
}
