import StormCore

/// Builds a `COPY … FROM STDIN (FORMAT binary)` stream for `PostgresConnection.copyIn`: the signature
/// header, one tuple per row (a field count, then each field as a big-endian length and its bytes), and the
/// trailer. Binary needs no escaping of any kind: text is its UTF-8 bytes, `bytea` its raw bytes.
///
/// Field types must match the target columns exactly (the server does not cast binary input): `text`,
/// `bigint` (8 bytes), `timestamptz` (microseconds since 2000-01-01 UTC, 8 bytes), `bytea`.
package struct PostgresCopyWriter {
    private(set) var bytes: [UInt8] = []
    private var finished = false

    /// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01 00:00:00 UTC).
    package static let postgresEpochUnixMicros: Int64 = 946_684_800_000_000

    package init(reservingCapacity capacity: Int = 0) {
        bytes.reserveCapacity(19 + capacity + 2)
        // "PGCOPY\n\377\r\n\0", flags (no OIDs), header extension length.
        bytes.append(contentsOf: [0x50, 0x47, 0x43, 0x4F, 0x50, 0x59, 0x0A, 0xFF, 0x0D, 0x0A, 0x00])
        appendInt32(0)
        appendInt32(0)
    }

    /// Starts a tuple of `fields` fields; exactly that many field calls must follow.
    package mutating func beginRow(fields: Int16) {
        appendInt16(fields)
    }

    package mutating func text(_ value: String) {
        var value = value
        value.withUTF8 { utf8 in
            appendInt32(Int32(clamping: utf8.count))
            bytes.append(contentsOf: utf8)
        }
    }

    package mutating func int64(_ value: Int64) {
        appendInt32(8)
        appendInt64(value)
    }

    /// A `timestamptz` from microseconds since the Unix epoch (clamped to what the column can hold).
    package mutating func timestamp(unixMicros: UInt64) {
        let micros = Int64(clamping: unixMicros)
        let (shifted, overflow) = micros.subtractingReportingOverflow(Self.postgresEpochUnixMicros)
        int64(overflow ? Int64.min : shifted)
    }

    package mutating func bytea(_ value: [UInt8]) {
        appendInt32(Int32(clamping: value.count))
        bytes.append(contentsOf: value)
    }

    /// The whole stream, trailer included.
    package mutating func finish() -> [UInt8] {
        if !finished {
            appendInt16(-1)
            finished = true
        }
        return bytes
    }

    private mutating func appendInt16(_ value: Int16) {
        let bits = UInt16(bitPattern: value)
        bytes.append(UInt8(truncatingIfNeeded: bits >> 8))
        bytes.append(UInt8(truncatingIfNeeded: bits))
    }

    private mutating func appendInt32(_ value: Int32) {
        let bits = UInt32(bitPattern: value)
        bytes.append(UInt8(truncatingIfNeeded: bits >> 24))
        bytes.append(UInt8(truncatingIfNeeded: bits >> 16))
        bytes.append(UInt8(truncatingIfNeeded: bits >> 8))
        bytes.append(UInt8(truncatingIfNeeded: bits))
    }

    private mutating func appendInt64(_ value: Int64) {
        let bits = UInt64(bitPattern: value)
        for shift in stride(from: 56, through: 0, by: -8) {
            bytes.append(UInt8(truncatingIfNeeded: bits >> UInt64(shift)))
        }
    }
}
