import Foundation

/// How figures read on screen and in the text report: short, fixed precision, "-" when unknown.
///
/// The same functions serve both so that `stormtop --once` prints exactly what the screen shows.
package enum Format {
    package static let unknown = "-"

    /// A rate or count with 3 significant figures and k/M/G suffixes: `0`, `0.5`, `12.3`, `456`, `1.23k`.
    package static func quantity(_ value: Double?) -> String {
        guard let value, value.isFinite else { return unknown }
        let magnitude = abs(value)
        let (scaled, suffix): (Double, String) =
            switch magnitude {
            case 1e9...: (value / 1e9, "G")
            case 1e6...: (value / 1e6, "M")
            case 1e4...: (value / 1e3, "k")
            default: (value, "")
            }
        if scaled == scaled.rounded(), abs(scaled) < 1e4, suffix.isEmpty { return String(Int64(scaled)) }
        let digits = abs(scaled) >= 100 ? 0 : abs(scaled) >= 10 ? 1 : 2
        return String(format: "%.\(digits)f", scaled) + suffix
    }

    /// A whole count: `0`, `9999`, `12.3k`.
    package static func count(_ value: Double?) -> String {
        guard let value, value.isFinite else { return unknown }
        return abs(value) < 1e4 ? String(Int64(value.rounded())) : quantity(value)
    }

    /// A latency in seconds, shown in the unit that keeps 2-3 significant digits: `250µs`, `4.20ms`, `1.50s`.
    package static func latency(_ seconds: Double?, ascii: Bool = false) -> String {
        guard let seconds, seconds.isFinite else { return unknown }
        if seconds >= 1 { return String(format: "%.2fs", seconds) }
        let milliseconds = seconds * 1000
        if milliseconds >= 100 { return String(format: "%.0fms", milliseconds) }
        if milliseconds >= 10 { return String(format: "%.1fms", milliseconds) }
        if milliseconds >= 1 { return String(format: "%.2fms", milliseconds) }
        return String(format: "%.0f", milliseconds * 1000) + (ascii ? "us" : "µs")
    }

    /// Bytes with binary prefixes: `512B`, `48.2MiB`.
    package static func bytes(_ value: Double?) -> String {
        guard let value, value.isFinite, value >= 0 else { return unknown }
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var scaled = value
        var unit = 0
        while scaled >= 1024, unit < units.count - 1 {
            scaled /= 1024
            unit += 1
        }
        if unit == 0 { return "\(Int64(scaled))B" }
        return String(format: scaled >= 100 ? "%.0f" : "%.1f", scaled) + units[unit]
    }

    /// An uptime: `45s`, `12m03s`, `3h04m`, `2d03h`.
    package static func duration(_ seconds: Double?) -> String {
        guard let seconds, seconds.isFinite, seconds >= 0 else { return unknown }
        let total = Int64(seconds)
        let (days, hours, minutes, secs) = (total / 86400, total / 3600 % 24, total / 60 % 60, total % 60)
        if days > 0 { return String(format: "%lldd%02lldh", days, hours) }
        if hours > 0 { return String(format: "%lldh%02lldm", hours, minutes) }
        if minutes > 0 { return String(format: "%lldm%02llds", minutes, secs) }
        return "\(secs)s"
    }

    /// A percentage: `3.2%`.
    package static func percent(_ value: Double?) -> String {
        guard let value, value.isFinite else { return unknown }
        return String(format: value >= 100 ? "%.0f%%" : "%.1f%%", value)
    }

    /// Local wall-clock time `HH:MM:SS`.
    package static func clock(_ epochSeconds: Double) -> String {
        var time = time_t(epochSeconds)
        var parts = tm()
        localtime_r(&time, &parts)
        return String(format: "%02d:%02d:%02d", parts.tm_hour, parts.tm_min, parts.tm_sec)
    }

    /// RFC 3339 UTC time with milliseconds, for the JSON report.
    package static func timestamp(_ epochSeconds: Double) -> String {
        var time = time_t(epochSeconds)
        var parts = tm()
        gmtime_r(&time, &parts)
        let milliseconds = Int((epochSeconds - Double(time)) * 1000)
        return String(
            format: "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", parts.tm_year + 1900, parts.tm_mon + 1, parts.tm_mday,
            parts.tm_hour, parts.tm_min, parts.tm_sec, max(0, min(999, milliseconds)))
    }
}
