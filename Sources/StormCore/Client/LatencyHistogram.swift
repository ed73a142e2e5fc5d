/// Latencies in microseconds, counted in log-linear buckets (HdrHistogram's layout, 5 bits of
/// sub-bucket precision): values below 64 µs are exact, above that each power of two is split into 32
/// buckets, so a reported percentile is within about 3 % of the true one.
///
/// Why not keep samples: the bench records millions of deliveries; fixed storage (1,920 counters) means no
/// allocation per message and histograms from several event loops or processes merge by addition.
public struct LatencyHistogram: Sendable, Equatable {
    static let subBucketBits = 5
    static let subBucketCount = 1 << subBucketBits
    /// Values below this are their own bucket.
    static let exactLimit = UInt64(2 * subBucketCount)
    /// Exponents from `subBucketBits + 1` to 63, each `subBucketCount` buckets, after the exact ones.
    public static let bucketCount = Int(exactLimit) + (63 - subBucketBits) * subBucketCount

    public private(set) var counts: [UInt64]
    public private(set) var count: UInt64 = 0
    public private(set) var sum: UInt64 = 0
    public private(set) var min: UInt64 = .max
    public private(set) var max: UInt64 = 0

    public init() {
        counts = Array(repeating: 0, count: Self.bucketCount)
    }

    @inline(__always)
    public static func bucketIndex(of value: UInt64) -> Int {
        if value < exactLimit { return Int(value) }
        let exponent = 63 - value.leadingZeroBitCount  // >= subBucketBits + 1
        let shift = exponent - subBucketBits
        let sub = Int((value >> UInt64(shift)) & UInt64(subBucketCount - 1))
        return Int(exactLimit) + (exponent - subBucketBits - 1) * subBucketCount + sub
    }

    /// The smallest and largest value that land in bucket `index`.
    public static func bucketRange(_ index: Int) -> ClosedRange<UInt64> {
        if index < Int(exactLimit) { return UInt64(index)...UInt64(index) }
        let offset = index - Int(exactLimit)
        let exponent = offset / subBucketCount + subBucketBits + 1
        let sub = UInt64(offset % subBucketCount)
        let shift = UInt64(exponent - subBucketBits)
        let lower = (UInt64(subBucketCount) + sub) << shift
        let width: UInt64 = 1 << shift
        return lower...(lower &+ (width - 1))
    }

    @inline(__always)
    public mutating func record(_ value: UInt64) {
        counts[Self.bucketIndex(of: value)] &+= 1
        count &+= 1
        sum &+= value
        if value < min { min = value }
        if value > max { max = value }
    }

    /// Adds a bucket count read back from elsewhere (another process's report).
    public mutating func add(bucket index: Int, count bucketCount: UInt64) {
        guard counts.indices.contains(index), bucketCount > 0 else { return }
        counts[index] &+= bucketCount
        count &+= bucketCount
        let range = Self.bucketRange(index)
        sum &+= range.lowerBound &* bucketCount
        if range.lowerBound < min { min = range.lowerBound }
        if range.upperBound > max { max = range.upperBound }
    }

    public mutating func merge(_ other: LatencyHistogram) {
        for index in other.counts.indices where other.counts[index] > 0 {
            counts[index] &+= other.counts[index]
        }
        count &+= other.count
        sum &+= other.sum
        min = Swift.min(min, other.min)
        max = Swift.max(max, other.max)
    }

    /// Restores the exact extremes and sum that `add(bucket:count:)` could only estimate.
    public mutating func setExact(min: UInt64, max: UInt64, sum: UInt64) {
        guard count > 0 else { return }
        self.min = min
        self.max = max
        self.sum = sum
    }

    /// The value at quantile `q` (0...1): the upper end of the bucket holding the ceil(q × count)-th
    /// smallest value, clamped to the recorded extremes. `nil` when empty.
    public func percentile(_ q: Double) -> UInt64? {
        guard count > 0 else { return nil }
        let rank = Swift.max(1, UInt64((q * Double(count)).rounded(.up)))
        var seen: UInt64 = 0
        for index in counts.indices where counts[index] > 0 {
            seen &+= counts[index]
            if seen >= rank {
                return Swift.min(Swift.max(Self.bucketRange(index).upperBound, min), max)
            }
        }
        return max
    }

    public var mean: Double? { count > 0 ? Double(sum) / Double(count) : nil }

    /// Non-empty buckets as `(index, count)`, for shipping a histogram between processes.
    public var nonEmptyBuckets: [(index: Int, count: UInt64)] {
        counts.indices.compactMap { counts[$0] > 0 ? ($0, counts[$0]) : nil }
    }
}
