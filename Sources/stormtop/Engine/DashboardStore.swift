import Foundation
import StormCore
import Synchronization

/// A gateway given on the command line.
struct GatewayTarget: Sendable, Equatable {
    var endpoint: StormEndpoint
    /// `host:port`, what the table shows.
    var address: String { endpoint.hostHeader }
    var url: String { endpoint.description }

    /// Parses every `--gateway` value and `STORM_GATEWAYS` entry; duplicates are dropped so one gateway
    /// is not polled (and counted) twice.
    static func parse(_ values: [String]) throws(StormError) -> [GatewayTarget] {
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
}

/// What is known of one gateway: its last two good scrapes, or why it is down.
struct GatewayTracker: Sendable {
    let target: GatewayTarget
    private(set) var latest: ScrapeSample?
    private(set) var previous: ScrapeSample?
    private(set) var failure: String?

    init(target: GatewayTarget) { self.target = target }

    mutating func record(_ sample: ScrapeSample) {
        previous = latest
        latest = sample
        failure = nil
    }

    /// A failed poll forgets the samples: rates restart from the next two good scrapes instead of
    /// averaging over the outage (and over a restart's counter reset).
    mutating func recordFailure(_ reason: String) {
        failure = reason
        latest = nil
        previous = nil
    }

    var figures: GatewayFigures {
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
struct DashboardFrame: Sendable {
    var gateways: [GatewayFigures]
    var cluster: ClusterFigures
    /// Cluster delivered messages per second, one value per interval, oldest first; nil where no gateway
    /// had a rate yet.
    var deliveryHistory: [Double?]
    var wallClock: Double
    /// Completed poll rounds (interactive: history samples taken).
    var generation: Int
}

/// The shared state between the pollers (which write) and the screen or report (which read).
///
/// A `Mutex` rather than an actor: the curses loop runs synchronously on the main thread and must read
/// the latest figures without awaiting, and the critical sections are a copy of a few structs.
final class DashboardStore: Sendable {
    struct State: Sendable {
        var trackers: [GatewayTracker]
        var history: [Double?] = []
        var generation = 0
    }

    /// How many delivery-rate samples the sparkline keeps: 20 minutes at the default interval, more than
    /// any terminal is wide.
    static let historyLimit = 1200

    let targets: [GatewayTarget]
    private let state: Mutex<State>

    init(targets: [GatewayTarget]) {
        self.targets = targets
        self.state = Mutex(State(trackers: targets.map(GatewayTracker.init(target:))))
    }

    func record(_ index: Int, _ result: Result<ScrapeSample, StormError>) {
        state.withLock { state in
            guard state.trackers.indices.contains(index) else { return }
            switch result {
            case .success(let sample): state.trackers[index].record(sample)
            case .failure(let error): state.trackers[index].recordFailure(Self.reason(error))
            }
        }
    }

    /// Appends the current cluster delivery rate to the sparkline history.
    func sampleHistory() {
        state.withLock { state in
            let cluster = ClusterFigures(state.trackers.map(\.figures))
            state.history.append(cluster.deliveredPerSecond)
            if state.history.count > Self.historyLimit { state.history.removeFirst(state.history.count - Self.historyLimit) }
            state.generation += 1
        }
    }

    func frame(wallClock: Double) -> DashboardFrame {
        let copy = state.withLock { $0 }
        let gateways = copy.trackers.map(\.figures)
        return DashboardFrame(
            gateways: gateways, cluster: ClusterFigures(gateways), deliveryHistory: copy.history, wallClock: wallClock,
            generation: copy.generation)
    }

    /// A short reason for the table: the error message without the code prefix and the repeated URL.
    static func reason(_ error: StormError) -> String {
        var message = error.message
        // The client's hint for stormctl users ("— is stormd running? (set --server …)") does not apply.
        if let hint = message.range(of: " — ") { message = String(message[..<hint.lowerBound]) }
        return message.replacingOccurrences(of: "http://", with: "")
    }
}
