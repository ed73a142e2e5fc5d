import NIOCore
import StormCore

/// An address to listen on, as `--listen HOST:PORT` gives it.
package struct ListenAddress: Sendable, Equatable, CustomStringConvertible {
    package var host: String
    package var port: Int
    package var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

    /// Loopback addresses need no further thought; anything else is exposed to a network.
    package var isLoopback: Bool { host == "localhost" || host.hasPrefix("127.") || host == "::1" }

    package init(host: String, port: Int) {
        self.host = host
        self.port = port
    }
}

/// Parsing of setting values: every flag, variable and file key goes through one of these, so a bad
/// value is answered with the setting's origin (flag, variable or file line) and what it expects.
extension ConfigurationSources {
    package static func parseListen(_ setting: ConfigurationSources.Value) throws(StormError) -> ListenAddress {
        let text = setting.value
        let host: Substring
        let port: Substring
        if text.hasPrefix("["), let close = text.firstIndex(of: "]") {
            host = text[text.index(after: text.startIndex)..<close]
            port = text[text.index(after: close)...].drop(while: { $0 == ":" })
        } else if let colon = text.lastIndex(of: ":") {
            host = text[..<colon]
            port = text[text.index(after: colon)...]
        } else {
            throw StormError(.configuration, "\(setting.origin): '\(text)' is not HOST:PORT (for example 127.0.0.1:8080)")
        }
        guard let number = Int(port), (0...65_535).contains(number) else {
            throw StormError(.configuration, "\(setting.origin): '\(port)' is not a port number (0-65535)")
        }
        return ListenAddress(host: host.isEmpty ? "127.0.0.1" : String(host), port: number)
    }

    package static func parseSwitch(_ setting: ConfigurationSources.Value) throws(StormError) -> Bool {
        switch setting.value.lowercased() {
        case "on", "true", "yes", "1": return true
        case "off", "false", "no", "0": return false
        default: throw StormError(.configuration, "\(setting.origin): '\(setting.value)' is not on or off")
        }
    }

    package static func parseInt(_ setting: ConfigurationSources.Value, range: ClosedRange<Int>) throws(StormError) -> Int {
        guard let number = Int(setting.value), range.contains(number) else {
            throw StormError(.configuration, "\(setting.origin): '\(setting.value)' is not a whole number from \(range.lowerBound) to \(range.upperBound)")
        }
        return number
    }

    /// Sizes in bytes, with an optional `KiB`, `MiB` or `GiB` suffix.
    package static func parseSize(_ setting: ConfigurationSources.Value, range: ClosedRange<Int>) throws(StormError) -> Int {
        let text = setting.value
        let units: [(String, Int)] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10), ("B", 1)]
        var number: Int?
        for (suffix, scale) in units where text.hasSuffix(suffix) {
            number = Int(text.dropLast(suffix.count).trimmingSpaces()).flatMap { value in
                let (bytes, overflow) = value.multipliedReportingOverflow(by: scale)
                return overflow ? nil : bytes
            }
            break
        }
        if number == nil { number = Int(text) }
        guard let bytes = number, range.contains(bytes) else {
            throw StormError(.configuration, "\(setting.origin): '\(text)' is not a size from \(range.lowerBound) to \(range.upperBound) bytes (suffixes: KiB, MiB, GiB)")
        }
        return bytes
    }

    /// Durations with a unit (`ms`, `s`, `m`, `h`, `d`); a bare number means seconds.
    package static func parseDuration(_ setting: ConfigurationSources.Value, range: ClosedRange<TimeAmount>) throws(StormError) -> TimeAmount {
        let text = setting.value
        let units: [(String, Int64)] = [("ms", 1_000_000), ("s", 1_000_000_000), ("m", 60_000_000_000), ("h", 3_600_000_000_000), ("d", 86_400_000_000_000)]
        var amount: TimeAmount?
        for (suffix, nanos) in units where text.hasSuffix(suffix) {
            if let value = Int64(text.dropLast(suffix.count).trimmingSpaces()) {
                let (total, overflow) = value.multipliedReportingOverflow(by: nanos)
                if !overflow { amount = .nanoseconds(total) }
            }
            break
        }
        if amount == nil, let seconds = Int64(text) {
            let (total, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
            if !overflow { amount = .nanoseconds(total) }
        }
        guard let duration = amount, range.contains(duration) else {
            throw StormError(.configuration, "\(setting.origin): '\(text)' is not a duration from \(range.lowerBound.nanoseconds / 1_000_000) ms to \(range.upperBound.nanoseconds / 1_000_000_000) s (for example 500ms, 20s, 1m)")
        }
        return duration
    }
}
