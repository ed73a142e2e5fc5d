/// The kind a `# TYPE` line gives a metric family; `untyped` when there is none.
public enum PrometheusMetricType: String, Sendable, Equatable, CaseIterable {
    case counter, gauge, histogram, summary, untyped
}

/// A sample's label set, in the order the exposition wrote it.
///
/// Kept as an ordered array rather than a dictionary because label sets are tiny (a handful of pairs) and
/// the order is what an operator expects to see back; lookups compare by name, equality ignores order.
public struct PrometheusLabels: Sendable, Hashable, CustomStringConvertible, ExpressibleByDictionaryLiteral {
    public private(set) var pairs: [(name: String, value: String)]

    public init(_ pairs: [(name: String, value: String)] = []) { self.pairs = pairs }

    public init(dictionaryLiteral elements: (String, String)...) {
        self.pairs = elements.map { (name: $0.0, value: $0.1) }
    }

    public subscript(name: String) -> String? {
        pairs.first { $0.name == name }?.value
    }

    public var isEmpty: Bool { pairs.isEmpty }

    /// The same set without the named label: a histogram's series identity is its labels minus `le`.
    public func removing(_ name: String) -> PrometheusLabels {
        PrometheusLabels(pairs.filter { $0.name != name })
    }

    /// True when every label of `selector` is present here with the same value (extra labels allowed).
    public func matches(_ selector: PrometheusLabels) -> Bool {
        selector.pairs.allSatisfy { self[$0.name] == $0.value }
    }

    public static func == (lhs: PrometheusLabels, rhs: PrometheusLabels) -> Bool {
        lhs.pairs.count == rhs.pairs.count && lhs.matches(rhs)
    }

    public func hash(into hasher: inout Hasher) {
        for pair in pairs.sorted(by: { $0.name < $1.name }) {
            hasher.combine(pair.name)
            hasher.combine(pair.value)
        }
    }

    /// `{a="1",b="x\"y"}` with the exposition's escaping, or the empty string for no labels.
    public var description: String {
        guard !pairs.isEmpty else { return "" }
        return "{" + pairs.map { "\($0.name)=\"\(Self.escape($0.value))\"" }.joined(separator: ",") + "}"
    }

    static func escape(_ value: String) -> String {
        var out = ""
        for character in value {
            switch character {
            case "\\": out += "\\\\"
            case "\"": out += "\\\""
            case "\n": out += "\\n"
            default: out.append(character)
            }
        }
        return out
    }
}

/// One line of an exposition: `name{labels} value [timestamp]`.
public struct PrometheusSample: Sendable, Equatable {
    public var name: String
    public var labels: PrometheusLabels
    public var value: Double
    /// Milliseconds since the epoch, when the exporter wrote one (stormd does not).
    public var timestampMilliseconds: Int64?

    public init(name: String, labels: PrometheusLabels = [:], value: Double, timestampMilliseconds: Int64? = nil) {
        self.name = name
        self.labels = labels
        self.value = value
        self.timestampMilliseconds = timestampMilliseconds
    }

    public static func == (lhs: PrometheusSample, rhs: PrometheusSample) -> Bool {
        // NaN is a legitimate sample value: two NaN samples are the same sample.
        lhs.name == rhs.name && lhs.labels == rhs.labels && lhs.timestampMilliseconds == rhs.timestampMilliseconds
            && (lhs.value == rhs.value || (lhs.value.isNaN && rhs.value.isNaN))
    }
}

/// Every sample of one metric, with its HELP and TYPE: a histogram family holds its `_bucket`, `_sum`
/// and `_count` samples.
public struct PrometheusMetricFamily: Sendable, Equatable {
    public var name: String
    public var type: PrometheusMetricType
    public var help: String?
    public var samples: [PrometheusSample]

    public init(name: String, type: PrometheusMetricType = .untyped, help: String? = nil, samples: [PrometheusSample] = []) {
        self.name = name
        self.type = type
        self.help = help
        self.samples = samples
    }
}

/// A parsed `/metrics` answer, with the lookups a dashboard or CLI needs.
///
/// Lookups take a label *selector*: a sample matches when it carries every selector label with the same
/// value, as in PromQL's `name{a="b"}`.
public struct PrometheusExposition: Sendable, Equatable {
    /// Families in the order their first line appeared.
    public private(set) var families: [PrometheusMetricFamily]
    private var indexByName: [String: Int]

    public init(families: [PrometheusMetricFamily] = []) {
        self.families = []
        self.indexByName = [:]
        for family in families { append(family) }
    }

    public static func == (lhs: PrometheusExposition, rhs: PrometheusExposition) -> Bool {
        lhs.families == rhs.families
    }

    mutating func append(_ family: PrometheusMetricFamily) {
        indexByName[family.name] = families.count
        families.append(family)
    }

    mutating func withFamily<T>(named name: String, _ body: (inout PrometheusMetricFamily) throws(PrometheusParseError) -> T) throws(PrometheusParseError) -> T {
        guard let index = indexByName[name] else {
            append(PrometheusMetricFamily(name: name))
            return try body(&families[families.count - 1])
        }
        return try body(&families[index])
    }

    public func family(named name: String) -> PrometheusMetricFamily? {
        indexByName[name].map { families[$0] }
    }

    /// Every sample whose own name is `name` (for a histogram, ask for `name_bucket`, `name_sum`…).
    public func samples(named name: String, matching selector: PrometheusLabels = [:]) -> [PrometheusSample] {
        let familyName = familyName(ofSample: name)
        guard let family = familyName.flatMap({ family(named: $0) }) else { return [] }
        return family.samples.filter { $0.name == name && $0.labels.matches(selector) }
    }

    /// The value of the first matching sample, or nil when there is none.
    public func value(_ name: String, matching selector: PrometheusLabels = [:]) -> Double? {
        samples(named: name, matching: selector).first?.value
    }

    /// The sum over all matching samples (`sum(name{selector})`), or nil when none matches, so that a
    /// metric that is absent reads differently from one that is zero.
    public func sum(_ name: String, matching selector: PrometheusLabels = [:]) -> Double? {
        let matching = samples(named: name, matching: selector)
        return matching.isEmpty ? nil : matching.reduce(0) { $0 + $1.value }
    }

    /// Each series of histogram `name` (labels minus `le`) rebuilt from its `_bucket`, `_sum` and `_count`
    /// samples.
    public func histograms(_ name: String, matching selector: PrometheusLabels = [:]) -> [PrometheusHistogram] {
        var order: [PrometheusLabels] = []
        var buckets: [PrometheusLabels: [PrometheusHistogram.Bucket]] = [:]
        var sums: [PrometheusLabels: Double] = [:]
        var counts: [PrometheusLabels: Double] = [:]
        for sample in samples(named: name + "_bucket", matching: selector) {
            guard let bound = sample.labels["le"].flatMap(PrometheusTextParser.parseFloat) else { continue }
            let series = sample.labels.removing("le")
            if buckets[series] == nil { order.append(series) }
            buckets[series, default: []].append(.init(upperBound: bound, cumulativeCount: sample.value))
        }
        for sample in samples(named: name + "_sum", matching: selector) { sums[sample.labels] = sample.value }
        for sample in samples(named: name + "_count", matching: selector) { counts[sample.labels] = sample.value }
        return order.map { series in
            PrometheusHistogram(
                labels: series, buckets: buckets[series] ?? [], sum: sums[series] ?? .nan,
                count: counts[series] ?? (buckets[series]?.last(where: { $0.upperBound == .infinity })?.cumulativeCount ?? .nan))
        }
    }

    /// All matching series of histogram `name` added up bucket by bucket (`sum by (le) (…)`), or nil when
    /// there is none.
    public func histogram(_ name: String, matching selector: PrometheusLabels = [:]) -> PrometheusHistogram? {
        let all = histograms(name, matching: selector)
        guard var merged = all.first else { return nil }
        for next in all.dropFirst() { merged = merged.adding(next) }
        merged.labels = selector
        return merged
    }

    /// The family a sample name belongs to: itself, or for `x_bucket`/`x_sum`/`x_count`/`x_total` the
    /// family `x` when that was declared as a histogram, summary or counter.
    func familyName(ofSample name: String) -> String? {
        if indexByName[name] != nil { return name }
        for suffix in ["_bucket", "_sum", "_count", "_total"] where name.hasSuffix(suffix) {
            let base = String(name.dropLast(suffix.count))
            if let family = family(named: base), family.type.owns(suffix: suffix) { return base }
        }
        return nil
    }
}

extension PrometheusMetricType {
    /// Which sample-name suffixes a family of this type collects under its own name.
    func owns(suffix: String) -> Bool {
        switch self {
        case .histogram: return suffix == "_bucket" || suffix == "_sum" || suffix == "_count"
        case .summary: return suffix == "_sum" || suffix == "_count"
        case .counter: return suffix == "_total"
        case .gauge, .untyped: return false
        }
    }
}
