import Foundation

/// Durations and latencies as people read them in a terminal.
enum Milliseconds {
    static func format(_ duration: Duration) -> String {
        let micros = Double(duration.components.seconds) * 1e6 + Double(duration.components.attoseconds) / 1e12
        return format(micros: micros)
    }

    static func format(micros: Double) -> String {
        if micros < 1000 { return String(format: "%.0f µs", micros) }
        if micros < 10_000 { return String(format: "%.2f ms", micros / 1000) }
        if micros < 1_000_000 { return String(format: "%.1f ms", micros / 1000) }
        return String(format: "%.2f s", micros / 1e6)
    }
}

/// A two-column table with aligned values, for `bench`'s human report.
struct KeyValueTable {
    private var rows: [(String, String)] = []

    mutating func add(_ key: String, _ value: String) {
        rows.append((key, value))
    }

    func render() -> String {
        let width = rows.map(\.0.count).max() ?? 0
        return rows.map { key, value in
            key + String(repeating: " ", count: width - key.count) + "  " + value
        }.joined(separator: "\n") + "\n"
    }
}
