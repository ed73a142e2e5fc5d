import Foundation

/// Where `stormctl history`/`subscribe --since` start: an offset, or a point in time.
///
/// A time is either RFC 3339 (`2026-12-04T01:00:00Z`, fractional seconds and offsets allowed) or relative
/// to now with a leading minus and a unit: `-90s`, `-10m`, `-2h`, `-1d`. A bare whole number is an offset.
public enum HistoryPosition: Sendable, Equatable {
    case offset(UInt64)
    /// Unix epoch milliseconds (the envelope's `ts` unit).
    case time(milliseconds: Double)

    /// Parses `text`; `now` is the reference for relative times, in Unix epoch milliseconds.
    public init(parsing text: String, now: Double) throws(StormError) {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        if let offset = UInt64(trimmed) {
            self = .offset(offset)
            return
        }
        if trimmed.hasPrefix("-"), let unit = trimmed.last, let amount = Double(trimmed.dropFirst().dropLast()),
            amount >= 0, amount.isFinite
        {
            let scale: Double? =
                switch unit {
                case "s": 1000
                case "m": 60_000
                case "h": 3_600_000
                case "d": 86_400_000
                default: nil
                }
            if let scale {
                self = .time(milliseconds: now - amount * scale)
                return
            }
        }
        if let date = Self.rfc3339(trimmed) {
            self = .time(milliseconds: date.timeIntervalSince1970 * 1000)
            return
        }
        throw StormError(
            .configuration,
            "'\(text)' is neither an offset (a whole number), an RFC 3339 time (2026-12-04T01:00:00Z) nor a relative time (-10m, -2h, -30s, -1d)")
    }

    static func rfc3339(_ text: String) -> Date? {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        if let date = formatter.date(from: text) { return date }
        formatter.formatOptions = [.withInternetDateTime]
        return formatter.date(from: text)
    }
}

/// Finds, page by page, where a time starts in a channel's history.
///
/// History is paged by offset only, so a time is found by walking pages from the oldest kept message and
/// looking at each envelope's `ts`: the answer is the offset just before the first message at or after
/// the time. `pages` bounds the walk.
public struct TimeSeek: Sendable {
    public let milliseconds: Double
    /// The offset to pass as `since` (messages after it are at or after the time), once found.
    public private(set) var position: UInt64?
    /// The last offset seen, for the next page's `since`.
    public private(set) var lastOffset: UInt64 = 0

    public init(milliseconds: Double) { self.milliseconds = milliseconds }

    /// Looks at one page's envelopes (oldest first); true once the position is known.
    public mutating func scan(_ envelopes: [[UInt8]]) -> Bool {
        for envelope in envelopes {
            guard let fields = try? JSONScanner.objectMembers(envelope),
                let offset = fields["offset"].flatMap(JSONScanner.wholeNumber)
            else { continue }
            let ts = fields["ts"].flatMap(JSONScanner.number) ?? 0
            if ts >= milliseconds {
                position = offset == 0 ? 0 : offset - 1
                return true
            }
            lastOffset = offset
        }
        return false
    }
}
