import Foundation
import StormCore

#if canImport(Glibc)
import Glibc
#endif

/// The figures `stormctl bench` reports, as a table or as JSON (`--json`, snake_case keys).
struct BenchReport: Codable {
    struct Latency: Codable {
        var p50Ms: Double?
        var p95Ms: Double?
        var p99Ms: Double?
        var maxMs: Double?
        var meanMs: Double?

        init(_ histogram: LatencyHistogram) {
            func ms(_ micros: UInt64?) -> Double? { micros.map { (Double($0) / 1000 * 1000).rounded() / 1000 } }
            p50Ms = ms(histogram.percentile(0.50))
            p95Ms = ms(histogram.percentile(0.95))
            p99Ms = ms(histogram.percentile(0.99))
            maxMs = histogram.count > 0 ? ms(histogram.max) : nil
            meanMs = histogram.mean.map { ($0).rounded() / 1000 }
        }
    }

    var server: String
    var transport: String
    /// How the publishers published: `http` or `ws`.
    var publishOver: String
    /// The channel, or the first and last of them with `--channels`.
    var channel: String
    var channels: Int
    var processes: Int
    var subscribersRequested: Int
    var subscribersConnected: Int
    var subscribersFailed: Int
    var subscribersDropped: Int
    var connectSeconds: Double
    var firstConnectError: String?
    var firstDropReason: String?
    var publishRate: Double
    var durationSeconds: Double
    var payloadSize: Int
    var publishers: Int
    var published: Int
    var publishFailed: Int
    var publishSkipped: Int
    var firstPublishError: String?
    var publishRoundTrip: Latency
    var expectedDeliveries: UInt64
    var delivered: UInt64
    /// Deliveries missing, summed channel by channel.
    var lost: UInt64
    var channelsWithLoss: Int
    /// Messages a subscriber got from another channel than its own.
    var misrouted: UInt64
    var outOfOrder: UInt64
    var unreadable: UInt64
    var deliveredPerSecond: Double
    var latency: Latency
    /// When the last publisher finished (Unix epoch, ms): what `bench/run W4` measures storage lag from.
    var publishEndedUnixMs: Double
    /// The bench's own CPU use while publishing and draining, in percent of one core (all its processes).
    var benchCPUPercent: Double

    var isClean: Bool {
        subscribersFailed == 0 && subscribersDropped == 0 && publishFailed == 0 && lost == 0 && outOfOrder == 0
            && misrouted == 0
            && unreadable == 0
    }

    func json() -> String {
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        guard let data = try? encoder.encode(self) else { return "{}" }
        return String(decoding: data, as: UTF8.self) + "\n"
    }

    func table() -> String {
        func ms(_ value: Double?) -> String { value.map { Milliseconds.format(micros: $0 * 1000) } ?? "–" }
        var table = KeyValueTable()
        table.add(
            "server",
            "\(server)  transport \(transport)  publish over \(publishOver)  "
                + (channels > 1 ? "\(channels) channels \(channel)" : "channel \(channel)"))
        table.add(
            "subscribers",
            "\(subscribersConnected) connected of \(subscribersRequested) in \(String(format: "%.1f", connectSeconds)) s"
                + " (\(subscribersFailed) failed, \(subscribersDropped) dropped later)"
                + (processes > 1 ? " over \(processes) processes" : ""))
        if let firstConnectError { table.add("  first connect error", firstConnectError) }
        if let firstDropReason { table.add("  first drop reason", firstDropReason) }
        table.add(
            "published",
            "\(published) of \(Int((publishRate * durationSeconds).rounded())) at \(publishRate) msg/s for \(durationSeconds) s"
                + " (\(payloadSize) B, \(publishers) connections; \(publishFailed) failed, \(publishSkipped) skipped)")
        if let firstPublishError { table.add("  first publish error", firstPublishError) }
        table.add("publish round trip", "p50 \(ms(publishRoundTrip.p50Ms))  p95 \(ms(publishRoundTrip.p95Ms))")
        table.add(
            "delivered",
            "\(delivered) of \(expectedDeliveries) expected (\(lost) lost"
                + (channels > 1 ? " on \(channelsWithLoss) channels" : "")
                + ", \(outOfOrder) out of order\(misrouted > 0 ? ", \(misrouted) from another channel" : ""))")
        table.add("delivered/s", String(format: "%.0f", deliveredPerSecond))
        table.add(
            "latency (gateway ts)",
            "p50 \(ms(latency.p50Ms))  p95 \(ms(latency.p95Ms))  p99 \(ms(latency.p99Ms))  max \(ms(latency.maxMs))")
        table.add("bench CPU", String(format: "%.0f %% of one core", benchCPUPercent))
        return table.render()
    }
}

/// CPU seconds (user + system) this process has used so far.
func processCPUSeconds() -> Double {
    var usage = rusage()
    getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
    func seconds(_ time: timeval) -> Double { Double(time.tv_sec) + Double(time.tv_usec) / 1e6 }
    return seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// Raises the soft open-file limit to the hard one: each subscriber is a socket, and the default soft
/// limit (1,024) is far below what the bench holds. Returns the limit now in force.
@discardableResult
func raiseOpenFileLimit() -> Int {
    var limit = rlimit()
    let resource = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
    guard getrlimit(resource, &limit) == 0 else { return 1024 }
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max
        _ = setrlimit(resource, &limit)
        _ = getrlimit(resource, &limit)
    }
    return Int(clamping: limit.rlim_cur)
}
