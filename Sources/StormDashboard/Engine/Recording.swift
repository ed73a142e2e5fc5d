import Foundation
import StormCore

/// `--record FILE` and `--replay FILE`: one JSON line per poll holding what stormtop knew at that instant
/// (each gateway's and consumer's last two scrapes, or why it was down, its channel lists, and what Redis
/// said). A line is self-contained, so replaying it recomputes exactly the figures, rates and alerts the
/// screen showed, through the same code, and stepping backwards is as cheap as forwards.
///
/// The scrapes are kept as parsed samples, not as derived figures: a newer stormtop replaying an old
/// recording computes its new columns too, where the metrics were there.
package struct RecordedPoll: Codable, Sendable, Equatable {
    /// Format version, 1.
    package var version = 1
    /// Seconds since the epoch when the line was written.
    package var time: Double
    package var interval: Double
    package var gateways: [RecordedTracker]
    package var consumers: [RecordedTracker]
    package var presence: RecordedPresence?
}

package struct RecordedTracker: Codable, Sendable, Equatable {
    package var url: String
    package var path: String
    package var registryID: String?
    package var latest: RecordedSample?
    package var previous: RecordedSample?
    package var failure: String?
    package var channelsLatest: ChannelSample?
    package var channelsPrevious: ChannelSample?
    package var channelsFailure: String?
}

package struct RecordedSample: Codable, Sendable, Equatable {
    package struct Family: Codable, Sendable, Equatable {
        package var name: String
        package var type: String
        package var samples: [Sample]
    }
    package struct Sample: Codable, Sendable, Equatable {
        package var name: String
        /// Label pairs in exposition order, `[name, value]` each.
        package var labels: [[String]]
        package var value: Double
    }
    package var elapsed: Double
    package var wallClock: Double
    package var ready: Bool?
    package var readyReason: String?
    package var families: [Family]
}

package struct RecordedPresence: Codable, Sendable, Equatable {
    package var endpoint: String
    /// `waiting`, `up` or `down`.
    package var state: String
    package var error: String?
    package var gateways: [DiscoveredGateway]
    package var channels: [ChannelFigures]
    package var truncated: Bool
    package var readSeconds: Double?
}


package enum Recording {
    package static func encoder() -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        // Histograms have +Inf buckets; a gauge may be NaN.
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "+Inf", negativeInfinity: "-Inf", nan: "NaN")
        return encoder
    }

    package static func decoder() -> JSONDecoder {
        let decoder = JSONDecoder()
        decoder.nonConformingFloatDecodingStrategy = .convertFromString(positiveInfinity: "+Inf", negativeInfinity: "-Inf", nan: "NaN")
        return decoder
    }

    // MARK: store → line

    package static func poll(_ state: DashboardStore.State, time: Double, interval: Double) -> RecordedPoll {
        RecordedPoll(
            time: time, interval: interval, gateways: state.trackers.map(tracker), consumers: state.consumers.map(tracker),
            presence: state.presence.map(presence))
    }

    package static func line(_ poll: RecordedPoll) throws(StormError) -> [UInt8] {
        do {
            return Array(try encoder().encode(poll)) + [UInt8(ascii: "\n")]
        } catch {
            throw StormError(.internalError, "cannot encode a poll for --record: \(error)")
        }
    }

    package static func tracker(_ tracker: GatewayTracker) -> RecordedTracker {
        RecordedTracker(
            url: tracker.target.url, path: tracker.target.path, registryID: tracker.target.registryID,
            latest: tracker.latest.map(sample), previous: tracker.previous.map(sample), failure: tracker.failure,
            channelsLatest: tracker.channelsLatest, channelsPrevious: tracker.channelsPrevious, channelsFailure: tracker.channelsFailure)
    }

    package static func sample(_ sample: ScrapeSample) -> RecordedSample {
        RecordedSample(
            elapsed: sample.elapsed, wallClock: sample.wallClock, ready: sample.ready, readyReason: sample.readyReason,
            families: sample.exposition.families.map { family in
                RecordedSample.Family(
                    name: family.name, type: family.type.rawValue,
                    samples: family.samples.map { RecordedSample.Sample(name: $0.name, labels: $0.labels.pairs.map { [$0.name, $0.value] }, value: $0.value) })
            })
    }

    package static func presence(_ snapshot: PresenceSnapshot) -> RecordedPresence {
        var state = "waiting"
        var error: String?
        switch snapshot.state {
        case .waiting: break
        case .up: state = "up"
        case .down(let reason):
            state = "down"
            error = reason
        }
        return RecordedPresence(
            endpoint: snapshot.endpoint, state: state, error: error, gateways: snapshot.gateways, channels: snapshot.channels,
            truncated: snapshot.truncated, readSeconds: snapshot.readSeconds)
    }

    // MARK: line → store

    /// Parses a recording: one poll per non-empty line. A line that does not parse is an error naming it.
    package static func read(_ bytes: [UInt8], file: String) throws(StormError) -> [RecordedPoll] {
        var polls: [RecordedPoll] = []
        let decoder = decoder()
        for (number, line) in bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).enumerated() where !line.isEmpty {
            do {
                polls.append(try decoder.decode(RecordedPoll.self, from: Data(line)))
            } catch {
                throw StormError(.badRequest, "\(file):\(number + 1) is not a stormtop --record line: \(error)")
            }
        }
        guard !polls.isEmpty else { throw StormError(.badRequest, "\(file) holds no recorded poll") }
        return polls
    }

    package static func state(_ poll: RecordedPoll, history: [Double?], generation: Int) throws(StormError) -> DashboardStore.State {
        var state = DashboardStore.State(trackers: try poll.gateways.map(tracker))
        state.consumers = try poll.consumers.map(tracker)
        state.history = history
        state.generation = generation
        state.presence = poll.presence.map(presence)
        return state
    }

    package static func tracker(_ recorded: RecordedTracker) throws(StormError) -> GatewayTracker {
        var target = GatewayTarget(endpoint: try StormEndpoint(url: recorded.url), path: recorded.path)
        target.registryID = recorded.registryID
        return GatewayTracker(
            target: target, latest: try recorded.latest.map(sample), previous: try recorded.previous.map(sample), failure: recorded.failure,
            channelsLatest: recorded.channelsLatest, channelsPrevious: recorded.channelsPrevious, channelsFailure: recorded.channelsFailure)
    }

    package static func sample(_ recorded: RecordedSample) throws(StormError) -> ScrapeSample {
        var families: [PrometheusMetricFamily] = []
        for family in recorded.families {
            guard let type = PrometheusMetricType(rawValue: family.type) else {
                throw StormError(.badRequest, "metric family '\(family.name)' has an unknown type '\(family.type)'")
            }
            families.append(
                PrometheusMetricFamily(
                    name: family.name, type: type,
                    samples: family.samples.map { sample in
                        PrometheusSample(
                            name: sample.name, labels: PrometheusLabels(sample.labels.compactMap { $0.count == 2 ? (name: $0[0], value: $0[1]) : nil }),
                            value: sample.value)
                    }))
        }
        return ScrapeSample(
            exposition: PrometheusExposition(families: families), elapsed: recorded.elapsed, wallClock: recorded.wallClock,
            ready: recorded.ready, readyReason: recorded.readyReason)
    }

    package static func presence(_ recorded: RecordedPresence) -> PresenceSnapshot {
        var snapshot = PresenceSnapshot(endpoint: recorded.endpoint)
        switch recorded.state {
        case "up": snapshot.state = .up
        case "down": snapshot.state = .down(recorded.error ?? "")
        default: snapshot.state = .waiting
        }
        snapshot.gateways = recorded.gateways
        snapshot.channels = recorded.channels
        snapshot.truncated = recorded.truncated
        snapshot.readSeconds = recorded.readSeconds
        return snapshot
    }

    /// Every frame of a recording, in order, as the screen showed them (sparkline included).
    package static func frames(_ polls: [RecordedPoll], thresholds: AlertThresholds) throws(StormError) -> [DashboardFrame] {
        let store = DashboardStore(targets: [], thresholds: thresholds)
        var history: [Double?] = []
        var frames: [DashboardFrame] = []
        for (index, poll) in polls.enumerated() {
            store.restore(try state(poll, history: history, generation: index))
            let rate = store.frame(wallClock: poll.time).cluster.deliveredPerSecond
            history.append(rate)
            if history.count > DashboardStore.historyLimit { history.removeFirst(history.count - DashboardStore.historyLimit) }
            store.restore(try state(poll, history: history, generation: index + 1))
            frames.append(store.frame(wallClock: poll.time))
        }
        return frames
    }
}

/// Appends one line per poll to `--record FILE` (created or truncated at start); a line that cannot be
/// written (disk full) is dropped, the dashboard goes on.
/// `@unchecked`: only the poller writes, one poll after the other.
package final class Recorder: @unchecked Sendable {
    package let path: String
    private let handle: FileHandle

    package init(path: String) throws(StormError) {
        self.path = path
        guard FileManager.default.createFile(atPath: path, contents: nil), let handle = FileHandle(forWritingAtPath: path) else {
            throw StormError(.configuration, "--record: cannot create \(path)")
        }
        self.handle = handle
    }

    package func write(_ store: DashboardStore, interval: Double, time: Double = Date().timeIntervalSince1970) {
        guard let line = try? Recording.line(Recording.poll(store.snapshot, time: time, interval: interval)) else { return }
        try? handle.write(contentsOf: line)
    }

    package func close() { try? handle.close() }
}
