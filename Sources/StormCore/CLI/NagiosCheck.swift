/// Monitoring-plugin results (Nagios, Icinga, Sensu): exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN, and
/// one line `STORM STATUS - summary | perfdata`.
public enum NagiosStatus: Int32, Sendable, Comparable, CaseIterable {
    case ok = 0, warning = 1, critical = 2, unknown = 3

    public var label: String {
        switch self {
        case .ok: "OK"
        case .warning: "WARNING"
        case .critical: "CRITICAL"
        case .unknown: "UNKNOWN"
        }
    }

    /// Severity order for combining checks: CRITICAL > WARNING > UNKNOWN > OK (as `nats server check`).
    private var severity: Int {
        switch self {
        case .ok: 0
        case .unknown: 1
        case .warning: 2
        case .critical: 3
        }
    }

    public static func < (lhs: NagiosStatus, rhs: NagiosStatus) -> Bool { lhs.severity < rhs.severity }
}

/// One measured value against "above is bad" thresholds.
public struct NagiosMeasurement: Sendable, Equatable {
    public var label: String
    public var value: Double?
    public var warning: Double?
    public var critical: Double?

    public init(label: String, value: Double?, warning: Double? = nil, critical: Double? = nil) {
        self.label = label
        self.value = value
        self.warning = warning
        self.critical = critical
    }

    /// CRITICAL at or above `critical`, WARNING at or above `warning`, UNKNOWN without a value.
    public var status: NagiosStatus {
        guard let value else { return .unknown }
        if let critical, value >= critical { return .critical }
        if let warning, value >= warning { return .warning }
        return .ok
    }

    /// `label=value;warn;crit` (empty fields for absent thresholds; `U` for an unknown value).
    public var perfdata: String {
        "\(label)=\(value.map(Self.format) ?? "U");\(warning.map(Self.format) ?? "");\(critical.map(Self.format) ?? "")"
    }

    /// A value as perfdata writes it: whole numbers without a fraction.
    public static func format(_ value: Double) -> String {
        value == value.rounded() && abs(value) < 1e15 ? String(Int64(value)) : String(value)
    }
}

/// The outcome of a set of checks: the worst status, the reasons for it, and the perfdata.
public struct NagiosReport: Sendable {
    public var measurements: [NagiosMeasurement] = []
    /// Problems found outside measurements (`/readyz` not 200, too few replicas), each with its status.
    public var findings: [(NagiosStatus, String)] = []
    /// What an OK line says (e.g. "12 connections").
    public var summary: String

    public init(summary: String) { self.summary = summary }

    public var status: NagiosStatus {
        (measurements.map(\.status) + findings.map(\.0)).max() ?? .ok
    }

    /// `STORM OK - 12 connections | connections=12;1000;2000 consumer_lag=0;100;1000`.
    public var line: String {
        let worst = status
        var reasons = findings.filter { $0.0 == worst }.map(\.1)
        for measurement in measurements where measurement.status == worst && worst != .ok {
            if let value = measurement.value {
                let limit = worst == .critical ? measurement.critical : measurement.warning
                reasons.append("\(measurement.label) \(NagiosMeasurement.format(value)) >= \(limit.map(NagiosMeasurement.format) ?? "?")")
            } else {
                reasons.append("\(measurement.label) unknown")
            }
        }
        let text = reasons.isEmpty ? summary : reasons.joined(separator: ", ")
        let perf = measurements.map(\.perfdata).joined(separator: " ")
        return "STORM \(worst.label) - \(text)" + (perf.isEmpty ? "" : " | \(perf)")
    }
}
