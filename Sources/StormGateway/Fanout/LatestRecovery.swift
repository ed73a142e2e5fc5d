import NIOCore
import StormCore

extension Recovery {
    /// The WebSocket subscribe's `"since":"latest"` on the wire.
    package static let latestToken = Array("\"latest\"".utf8)

    /// `"since":"latest"`: each channel's newest stored message (none when the channel has none), and the
    /// resume point under which `RecoveryGate.finish` writes it and then the held live messages after it,
    /// so the switch to live has no gap and no duplicate, exactly as a resume from an offset.
    ///
    /// Two reads per channel through the same bounded `reader` as recovery: the newest offset `L` (a read
    /// of no message), then the one message after `L - 1`. A channel whose read fails is reported with
    /// `recovered: false` and its failure, and gets the live messages only.
    package static func fetchLatest(
        _ channels: [ChannelName], reader: HistoryReader, ticket: HistoryReadTicket, allocator: ByteBufferAllocator
    ) async -> (results: [RecoveredChannel], resume: ResumePoint) {
        var results: [RecoveredChannel] = []
        var positions: [ChannelName: UInt64] = [:]
        var stop: StormError?
        for channel in channels {
            positions[channel] = 0
            if let stop {
                results.append(RecoveredChannel(channel: channel, recovered: false, messages: [], failure: stop))
                continue
            }
            do throws(StormError) {
                let newest = try await reader.read(channel, after: 0, limit: 0, ticket: ticket)
                guard let latest = newest.latestOffset, latest > 0 else {
                    results.append(RecoveredChannel(channel: channel, recovered: true, messages: []))
                    continue
                }
                let history = try await reader.read(channel, after: latest - 1, limit: 1, ticket: ticket)
                let messages = history.messages.prefix(1).compactMap {
                    Delivery(envelope: $0.envelope, offset: $0.offset, channel: channel, allocator: allocator)
                }
                positions[channel] = latest - 1
                results.append(RecoveredChannel(channel: channel, recovered: true, messages: Array(messages)))
            } catch {
                results.append(RecoveredChannel(channel: channel, recovered: false, messages: [], failure: error))
                if ticket.isCancelled || ticket.isExpired { stop = error }
            }
        }
        return (results, ResumePoint(offset: 0, positions: positions))
    }
}
