import StormCore

/// One message as history returns it: the envelope bytes exactly as live delivery sent them.
package struct StoredMessage: Sendable, Equatable {
    package var channel: ChannelName
    /// The JetStream stream sequence: strictly increasing per channel, not contiguous.
    package var offset: Int64
    /// The history epoch the offset belongs to (the stream's creation time, see `JetStreamStreamState`).
    package var epoch: String
    /// `Envelope.encoded()` bytes.
    package var envelope: [UInt8]

    package init(channel: ChannelName, offset: Int64, epoch: String, envelope: [UInt8]) {
        self.channel = channel
        self.offset = offset
        self.epoch = epoch
        self.envelope = envelope
    }
}

/// What the archive holds of one channel in one epoch, for the part the broker no longer keeps.
package struct ArchivedHistory: Sendable, Equatable {
    /// Messages after the asked offset, ascending, at most the asked limit.
    package var messages: [StoredMessage]
    /// The channel's newest stored offset in the epoch, `nil` when it has none: how far the consumer has
    /// come, which tells whether the archive reaches the part the broker still keeps.
    package var newestOffset: Int64?

    package init(messages: [StoredMessage], newestOffset: Int64?) {
        self.messages = messages
        self.newestOffset = newestOffset
    }
}

/// Reads stored history. Implementations bound every answer (`maxLimit`), so a huge `limit` costs no more
/// than the cap.
package protocol HistoryStore: Sendable {
    /// Messages of `channel` with offsets greater than `offset`, ascending, at most `limit` (capped).
    func history(channel: ChannelName, after offset: Int64, limit: Int) async throws(StormError) -> [StoredMessage]

    /// Messages of `channel` in `epoch` after `offset`, ascending, at most `limit` (read in pages of at
    /// most `maxLimit`, and never more than `archiveLimit`), and the channel's newest offset in `epoch`.
    /// Rows of another epoch (a stream recreated before the consumer removed them) are never returned.
    func archive(of channel: ChannelName, after offset: Int64, limit: Int, epoch: String) async throws(StormError) -> ArchivedHistory
}

/// History in PostgreSQL's `messages` table (written by `HistoryConsumer`).
///
/// - `maxLimit` (`Int`, 1,000): the most rows one call returns, whatever `limit` asks.
package final class PostgresHistoryStore: HistoryStore {
    package static let defaultMaxLimit = 1000
    /// The most rows one `archive` call returns, whatever `limit` asks (a recovery reads up to 10,001).
    package static let archiveLimit = 20_000

    package let client: PostgresClient
    package let maxLimit: Int

    package init(client: PostgresClient, maxLimit: Int = PostgresHistoryStore.defaultMaxLimit) {
        self.client = client
        self.maxLimit = max(1, maxLimit)
    }

    package func history(channel: ChannelName, after offset: Int64, limit: Int) async throws(StormError) -> [StoredMessage] {
        guard offset >= 0 else {
            throw StormError(.badRequest, "offset \(offset) is negative: offsets start at 1, use 0 for the oldest stored message")
        }
        let count = min(max(limit, 0), maxLimit)
        if count == 0 { return [] }
        let rows = try await client.withConnection { connection throws(StormError) in
            try connection.query(
                #"SELECT "offset", epoch, envelope FROM messages WHERE channel = $1 AND "offset" > $2 ORDER BY "offset" LIMIT $3"#,
                [.text(channel.rawValue), .text(String(offset)), .text(String(count))],
                doing: "read the history of '\(channel.rawValue)'")
        }
        return try Self.messages(rows, channel: channel)
    }

    package func archive(of channel: ChannelName, after offset: Int64, limit: Int, epoch: String) async throws(StormError) -> ArchivedHistory {
        guard offset >= 0 else {
            throw StormError(.badRequest, "offset \(offset) is negative: offsets start at 1, use 0 for the oldest stored message")
        }
        let wanted = min(max(limit, 0), Self.archiveLimit)
        let page = maxLimit
        return try await client.withConnection { connection throws(StormError) -> ArchivedHistory in
            let newest = try connection.query(
                #"SELECT max("offset") FROM messages WHERE channel = $1 AND epoch = $2"#,
                [.text(channel.rawValue), .text(epoch)], doing: "read the newest stored offset of '\(channel.rawValue)'")
            var archived = ArchivedHistory(messages: [], newestOffset: newest.int64(0, 0))
            guard archived.newestOffset != nil else { return archived }
            var after = offset
            // Pages of at most maxLimit rows; bounded by the number of pages `wanted` needs.
            for _ in 0...(wanted / page) where archived.messages.count < wanted {
                let count = min(page, wanted - archived.messages.count)
                let rows = try connection.query(
                    #"SELECT "offset", epoch, envelope FROM messages WHERE channel = $1 AND epoch = $2 AND "offset" > $3 ORDER BY "offset" LIMIT $4"#,
                    [.text(channel.rawValue), .text(epoch), .text(String(after)), .text(String(count))],
                    doing: "read the history of '\(channel.rawValue)'")
                let messages = try Self.messages(rows, channel: channel)
                archived.messages += messages
                guard messages.count == count, let last = messages.last else { break }
                after = last.offset
            }
            return archived
        }
    }

    private static func messages(_ rows: PostgresRows, channel: ChannelName) throws(StormError) -> [StoredMessage] {
        var messages: [StoredMessage] = []
        messages.reserveCapacity(rows.rows.count)
        for index in rows.rows.indices {
            guard let offset = rows.int64(index, 0), let epoch = rows.text(index, 1),
                let envelope = rows.rows[index].count > 2 ? rows.rows[index][2].flatMap(decodeByteaHex) : nil
            else {
                throw StormError(.internalError, "PostgreSQL returned a malformed history row for '\(channel.rawValue)'")
            }
            messages.append(StoredMessage(channel: channel, offset: offset, epoch: epoch, envelope: envelope))
        }
        return messages
    }
}

/// Decodes `bytea` in PostgreSQL's text output (`\x` then hex pairs, the default `bytea_output`).
package func decodeByteaHex(_ utf8: [UInt8]) -> [UInt8]? {
    guard utf8.count >= 2, utf8[0] == UInt8(ascii: "\\"), utf8[1] == UInt8(ascii: "x"), utf8.count % 2 == 0 else { return nil }
    var bytes: [UInt8] = []
    bytes.reserveCapacity((utf8.count - 2) / 2)
    var index = 2
    while index < utf8.count {
        guard let high = hexValue(utf8[index]), let low = hexValue(utf8[index + 1]) else { return nil }
        bytes.append(high << 4 | low)
        index += 2
    }
    return bytes
}

private func hexValue(_ byte: UInt8) -> UInt8? {
    switch byte {
    case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte - UInt8(ascii: "0")
    case UInt8(ascii: "a")...UInt8(ascii: "f"): return byte - UInt8(ascii: "a") + 10
    case UInt8(ascii: "A")...UInt8(ascii: "F"): return byte - UInt8(ascii: "A") + 10
    default: return nil
    }
}
