/// One series of a Prometheus histogram: cumulative bucket counts by upper bound, plus sum and count.
///
/// Percentiles are estimated exactly as PromQL's `histogram_quantile` does (linear interpolation inside
/// the bucket that holds the rank), so stormtop shows the figure a Grafana panel over the same scrape
/// would show. Windows come from `increase(since:)`: the quantile of the observations *between* two
/// scrapes, like `histogram_quantile(0.95, rate(x_bucket[1m]))`.
public struct PrometheusHistogram: Sendable, Equatable {
    public struct Bucket: Sendable, Equatable {
        /// The bucket's `le`; `+Inf` for the last one.
        public var upperBound: Double
        /// Observations less than or equal to `upperBound` (cumulative, as exposed).
        public var cumulativeCount: Double

        public init(upperBound: Double, cumulativeCount: Double) {
            self.upperBound = upperBound
            self.cumulativeCount = cumulativeCount
        }
    }

    /// The series' labels without `le`.
    public var labels: PrometheusLabels
    /// Sorted by upper bound.
    public private(set) var buckets: [Bucket]
    public var sum: Double
    public var count: Double

    public init(labels: PrometheusLabels = [:], buckets: [Bucket], sum: Double, count: Double) {
        self.labels = labels
        self.buckets = buckets.sorted { $0.upperBound < $1.upperBound }
        self.sum = sum
        self.count = count
    }

    /// The mean observation, or nil without observations.
    public var mean: Double? {
        count > 0 && sum.isFinite ? sum / count : nil
    }

    /// The estimated `q`-quantile (0...1), or nil when it cannot be estimated: no observations, fewer
    /// than two buckets, no `+Inf` bucket, or `q` outside 0...1.
    ///
    /// Same rules as Prometheus: a rank falling in the `+Inf` bucket answers the highest finite bound
    /// (the histogram cannot say more); the first bucket interpolates from 0 when its bound is positive;
    /// bucket counts that decrease (a torn scrape) are treated as flat.
    public func quantile(_ q: Double) -> Double? {
        guard (0...1).contains(q), buckets.count >= 2, let last = buckets.last, last.upperBound == .infinity else {
            return nil
        }
        var monotonic = buckets
        for index in monotonic.indices.dropFirst() where monotonic[index].cumulativeCount < monotonic[index - 1].cumulativeCount {
            monotonic[index].cumulativeCount = monotonic[index - 1].cumulativeCount
        }
        let observations = monotonic[monotonic.count - 1].cumulativeCount
        guard observations > 0, observations.isFinite else { return nil }
        var rank = q * observations
        guard let index = monotonic.firstIndex(where: { $0.cumulativeCount >= rank }) else { return nil }
        if index == monotonic.count - 1 { return monotonic[monotonic.count - 2].upperBound }
        if index == 0, monotonic[0].upperBound <= 0 { return monotonic[0].upperBound }
        var lower = 0.0
        var inBucket = monotonic[index].cumulativeCount
        if index > 0 {
            lower = monotonic[index - 1].upperBound
            inBucket -= monotonic[index - 1].cumulativeCount
            rank -= monotonic[index - 1].cumulativeCount
        }
        guard inBucket > 0 else { return lower }
        return lower + (monotonic[index].upperBound - lower) * (rank / inBucket)
    }

    /// The observations made since `previous` (an earlier scrape of the same series): bucket by bucket
    /// differences.
    ///
    /// When the server restarted in between (any count went down) or the buckets changed, the current
    /// histogram is the increase, as PromQL's counter-reset rule has it.
    public func increase(since previous: PrometheusHistogram) -> PrometheusHistogram {
        guard previous.buckets.map(\.upperBound) == buckets.map(\.upperBound), previous.count <= count,
            zip(previous.buckets, buckets).allSatisfy({ $0.cumulativeCount <= $1.cumulativeCount })
        else { return self }
        return PrometheusHistogram(
            labels: labels,
            buckets: zip(previous.buckets, buckets).map {
                Bucket(upperBound: $1.upperBound, cumulativeCount: $1.cumulativeCount - $0.cumulativeCount)
            },
            sum: sum - previous.sum, count: count - previous.count)
    }

    /// Two series added up bucket by bucket (`sum by (le)`), to aggregate gateways.
    ///
    /// Bounds present in only one side take, for the other side, the count of its nearest lower bound,
    /// which is what a cumulative histogram means; histograms from the same stormd build share their
    /// bounds, so this only matters across versions.
    public func adding(_ other: PrometheusHistogram) -> PrometheusHistogram {
        let bounds = Set(buckets.map(\.upperBound)).union(other.buckets.map(\.upperBound)).sorted()
        func cumulative(_ histogram: PrometheusHistogram, at bound: Double) -> Double {
            histogram.buckets.last { $0.upperBound <= bound }?.cumulativeCount ?? 0
        }
        return PrometheusHistogram(
            labels: labels,
            buckets: bounds.map { Bucket(upperBound: $0, cumulativeCount: cumulative(self, at: $0) + cumulative(other, at: $0)) },
            sum: sum + other.sum, count: count + other.count)
    }
}

/// Counter arithmetic between two scrapes, with Prometheus's rules for restarts.
public enum PrometheusRate {
    /// How much a counter grew from `previous` to `current`. A counter that went down was reset (the
    /// process restarted), so everything it counts now is new: the increase is `current`.
    public static func increase(from previous: Double, to current: Double) -> Double {
        guard previous.isFinite, current.isFinite else { return .nan }
        return current >= previous ? current - previous : current
    }

    /// The per-second rate of a counter between two scrapes `seconds` apart, or nil when the interval is
    /// not positive or a value is missing.
    public static func perSecond(from previous: Double?, to current: Double?, over seconds: Double) -> Double? {
        guard let previous, let current, seconds > 0, seconds.isFinite else { return nil }
        let grown = increase(from: previous, to: current)
        return grown.isNaN ? nil : grown / seconds
    }
}
