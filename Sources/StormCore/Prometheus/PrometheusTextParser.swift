/// Why an exposition could not be read: the 1-based line and what was wrong with it.
public struct PrometheusParseError: Error, Sendable, Equatable, CustomStringConvertible {
    public var line: Int
    public var reason: String

    public init(line: Int, reason: String) {
        self.line = line
        self.reason = reason
    }

    public var description: String { "line \(line): \(reason)" }
}

/// A parser for the Prometheus text exposition format 0.0.4, the one `/metrics` endpoints answer with.
///
/// It follows the reference parser (`prometheus/common/expfmt`) where that one is strict, so a scrape that
/// Prometheus would reject is rejected here too rather than half-read:
/// - `# HELP name text` (escapes `\\` and `\n`) and `# TYPE name counter|gauge|histogram|summary|untyped`,
///   at most one of each per family, TYPE before the family's first sample; other `#` lines are comments;
/// - samples `name{label="value",…} value [timestamp_ms]`, label values escaped with `\\`, `\"` and `\n`
///   (any other escape is an error), an optional trailing comma in the label list;
/// - values are Go floats, including `+Inf`, `-Inf` and `NaN`;
/// - a histogram `x` collects `x_bucket{le=…}`, `x_sum` and `x_count`; a summary `x_sum` and `x_count`;
///   a sample with no TYPE becomes its own `untyped` family.
///
/// It works on the UTF-8 bytes as received, so a large scrape costs one pass and no intermediate strings
/// beyond names and label values.
public enum PrometheusTextParser {
    public static func parse(_ text: String) throws(PrometheusParseError) -> PrometheusExposition {
        try parse(Array(text.utf8))
    }

    public static func parse(_ bytes: [UInt8]) throws(PrometheusParseError) -> PrometheusExposition {
        var exposition = PrometheusExposition()
        var typed: Set<String> = []
        var helped: Set<String> = []
        var lineNumber = 0
        var start = 0
        while start < bytes.count {
            lineNumber += 1
            var end = start
            while end < bytes.count, bytes[end] != UInt8(ascii: "\n") { end += 1 }
            var line = LineCursor(bytes: bytes, position: start, end: end, line: lineNumber)
            if line.end > line.position, bytes[line.end - 1] == UInt8(ascii: "\r") { line.end -= 1 }
            try parseLine(&line, into: &exposition, typed: &typed, helped: &helped)
            start = end + 1
        }
        return exposition
    }

    /// Parses a Go-style float as the format allows it (`+Inf`, `-Inf`, `Inf`, `NaN`, decimal or exponent
    /// notation); nil when it is not one.
    public static func parseFloat(_ text: String) -> Double? {
        switch text.lowercased() {
        case "+inf", "inf", "+infinity", "infinity": return .infinity
        case "-inf", "-infinity": return -.infinity
        case "nan": return .nan
        default:
            // Swift's initializer also takes hexadecimal and other spellings of NaN; the format does not.
            guard let first = text.utf8.first, first == UInt8(ascii: "-") || first == UInt8(ascii: "+")
                || first == UInt8(ascii: ".") || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(first),
                !text.contains("x"), !text.contains("X"), !text.lowercased().contains("n")
            else { return nil }
            return Double(text)
        }
    }

    // MARK: - Lines

    private static func parseLine(
        _ line: inout LineCursor, into exposition: inout PrometheusExposition, typed: inout Set<String>,
        helped: inout Set<String>
    ) throws(PrometheusParseError) {
        line.skipBlanks()
        guard let first = line.peek() else { return }  // empty line
        if first == UInt8(ascii: "#") {
            line.advance()
            try parseComment(&line, into: &exposition, typed: &typed, helped: &helped)
            return
        }
        var sample = PrometheusSample(name: try line.metricName(), value: 0)
        var separated = line.skipBlanks() > 0
        if line.peek() == UInt8(ascii: "{") {
            line.advance()
            sample.labels = try line.labels()
            separated = true
            line.skipBlanks()
        }
        guard separated else { throw line.error("expected a space before the value of \(sample.name)") }
        guard !line.atEnd else { throw line.error("missing value for \(sample.name)") }
        let valueText = line.token()
        guard let value = parseFloat(valueText) else { throw line.error("'\(valueText)' is not a valid value for \(sample.name)") }
        sample.value = value
        if line.skipBlanks() > 0, !line.atEnd {
            let timestampText = line.token()
            guard let timestamp = Int64(timestampText) else {
                throw line.error("'\(timestampText)' is not a valid timestamp for \(sample.name)")
            }
            sample.timestampMilliseconds = timestamp
            line.skipBlanks()
        }
        guard line.atEnd else { throw line.error("unexpected text after the sample of \(sample.name)") }
        try validate(sample, line: line)
        let familyName = exposition.familyName(ofSample: sample.name) ?? sample.name
        try exposition.withFamily(named: familyName) { (family: inout PrometheusMetricFamily) throws(PrometheusParseError) in
            family.samples.append(sample)
        }
    }

    private static func validate(_ sample: PrometheusSample, line: LineCursor) throws(PrometheusParseError) {
        var seen: Set<String> = []
        for pair in sample.labels.pairs where !seen.insert(pair.name).inserted {
            throw line.error("label '\(pair.name)' appears twice in \(sample.name)")
        }
        if sample.name.hasSuffix("_bucket"), sample.labels["le"] != nil,
            sample.labels["le"].flatMap(parseFloat) == nil
        {
            throw line.error("bucket bound le=\"\(sample.labels["le"] ?? "")\" of \(sample.name) is not a number")
        }
    }

    private static func parseComment(
        _ line: inout LineCursor, into exposition: inout PrometheusExposition, typed: inout Set<String>,
        helped: inout Set<String>
    ) throws(PrometheusParseError) {
        guard line.skipBlanks() > 0 else { return }  // "#comment": not a HELP/TYPE line
        let keyword = line.token()
        guard keyword == "HELP" || keyword == "TYPE" else { return }  // any other comment
        guard line.skipBlanks() > 0 else { throw line.error("\(keyword) line without a metric name") }
        let name = try line.metricName()
        if keyword == "HELP" {
            guard helped.insert(name).inserted else { throw line.error("second HELP line for \(name)") }
            let text: String
            if line.skipBlanks() > 0 { text = try line.helpText() } else if line.atEnd { text = "" } else {
                throw line.error("expected a space after the metric name in HELP")
            }
            try exposition.withFamily(named: name) { (family: inout PrometheusMetricFamily) throws(PrometheusParseError) in
                family.help = text
            }
        } else {
            guard typed.insert(name).inserted else { throw line.error("second TYPE line for \(name)") }
            guard line.skipBlanks() > 0 else { throw line.error("TYPE line for \(name) without a type") }
            let typeText = line.token()
            line.skipBlanks()
            guard line.atEnd, let type = PrometheusMetricType(rawValue: typeText) else {
                throw line.error("unknown metric type '\(typeText)' for \(name)")
            }
            try exposition.withFamily(named: name) { (family: inout PrometheusMetricFamily) throws(PrometheusParseError) in
                guard family.samples.isEmpty else { throw line.error("TYPE line for \(name) after its samples") }
                family.type = type
            }
        }
    }
}

/// A position within one line of the exposition, with the few token readers the grammar needs.
struct LineCursor {
    let bytes: [UInt8]
    var position: Int
    var end: Int
    let line: Int

    var atEnd: Bool { position >= end }

    func peek() -> UInt8? { position < end ? bytes[position] : nil }

    mutating func advance() { position += 1 }

    func error(_ reason: String) -> PrometheusParseError { PrometheusParseError(line: line, reason: reason) }

    /// Skips spaces and tabs; returns how many.
    @discardableResult
    mutating func skipBlanks() -> Int {
        let before = position
        while let byte = peek(), byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") { position += 1 }
        return position - before
    }

    /// Everything up to the next blank or the end of the line.
    mutating func token() -> String {
        let start = position
        while let byte = peek(), byte != UInt8(ascii: " "), byte != UInt8(ascii: "\t") { position += 1 }
        return String(decoding: bytes[start..<position], as: UTF8.self)
    }

    /// `[a-zA-Z_:][a-zA-Z0-9_:]*`
    mutating func metricName() throws(PrometheusParseError) -> String {
        try identifier(allowingColon: true, what: "metric name")
    }

    /// `[a-zA-Z_][a-zA-Z0-9_]*`
    mutating func labelName() throws(PrometheusParseError) -> String {
        try identifier(allowingColon: false, what: "label name")
    }

    private mutating func identifier(allowingColon: Bool, what: String) throws(PrometheusParseError) -> String {
        let start = position
        while let byte = peek(), Self.isNameByte(byte, first: position == start, colon: allowingColon) { position += 1 }
        guard position > start else {
            let found = peek().map { "'\(String(decoding: [$0], as: UTF8.self))'" } ?? "the end of the line"
            throw error("expected a \(what), found \(found)")
        }
        return String(decoding: bytes[start..<position], as: UTF8.self)
    }

    private static func isNameByte(_ byte: UInt8, first: Bool, colon: Bool) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "_"): return true
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return !first
        case UInt8(ascii: ":"): return colon
        default: return false
        }
    }

    /// The label list after its `{`, through the closing `}`.
    mutating func labels() throws(PrometheusParseError) -> PrometheusLabels {
        var pairs: [(name: String, value: String)] = []
        while true {
            skipBlanks()
            if peek() == UInt8(ascii: "}") {
                advance()
                return PrometheusLabels(pairs)
            }
            let name = try labelName()
            skipBlanks()
            guard peek() == UInt8(ascii: "=") else { throw error("expected '=' after label \(name)") }
            advance()
            skipBlanks()
            guard peek() == UInt8(ascii: "\"") else { throw error("expected '\"' to open the value of label \(name)") }
            advance()
            pairs.append((name: name, value: try quotedValue(label: name)))
            skipBlanks()
            switch peek() {
            case UInt8(ascii: ","): advance()
            case UInt8(ascii: "}"): continue
            default: throw error("expected ',' or '}' after the value of label \(name)")
            }
        }
    }

    /// A label value after its opening quote, through the closing quote, unescaped.
    private mutating func quotedValue(label: String) throws(PrometheusParseError) -> String {
        var value: [UInt8] = []
        while let byte = peek() {
            advance()
            switch byte {
            case UInt8(ascii: "\""):
                return String(decoding: value, as: UTF8.self)
            case UInt8(ascii: "\\"):
                guard let escaped = peek() else { break }
                advance()
                switch escaped {
                case UInt8(ascii: "\\"), UInt8(ascii: "\""): value.append(escaped)
                case UInt8(ascii: "n"): value.append(UInt8(ascii: "\n"))
                default:
                    throw error("invalid escape '\\\(String(decoding: [escaped], as: UTF8.self))' in the value of label \(label)")
                }
            default:
                value.append(byte)
            }
        }
        throw error("unterminated value of label \(label)")
    }

    /// The rest of a HELP line, unescaped (`\\` and `\n`).
    mutating func helpText() throws(PrometheusParseError) -> String {
        var text: [UInt8] = []
        while let byte = peek() {
            advance()
            guard byte == UInt8(ascii: "\\") else {
                text.append(byte)
                continue
            }
            switch peek() {
            case UInt8(ascii: "\\"): text.append(UInt8(ascii: "\\"))
            case UInt8(ascii: "n"): text.append(UInt8(ascii: "\n"))
            default: throw error("invalid escape in HELP text (only \\\\ and \\n are allowed)")
            }
            advance()
        }
        return String(decoding: text, as: UTF8.self)
    }
}
