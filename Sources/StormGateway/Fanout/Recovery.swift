import NIOCore
import StormCore

/// Where a resuming client left off: per channel, the last offset it received, and, when the client
/// knows it, the epoch it came from.
///
/// Why per channel: offsets are one sequence for all channels, but a client of several channels receives
/// them out of offset order (each channel is its own ordered subscription), so one "last offset" cannot
/// say what it has seen: resuming every channel from it duplicates some messages and skips others.
/// `offset` alone is exact for one channel and stays for that case and older clients.
package struct ResumePoint: Sendable, Equatable {
    /// The offset for channels without a position of their own.
    package var offset: UInt64
    package var epoch: String?
    package var positions: [ChannelName: UInt64] = [:]

    package init(offset: UInt64, epoch: String? = nil, positions: [ChannelName: UInt64] = [:]) {
        self.offset = offset
        self.epoch = epoch
        self.positions = positions
    }

    /// The last offset the client received on `channel`.
    package func offset(for channel: ChannelName) -> UInt64 { positions[channel] ?? offset }

    /// An SSE `Last-Event-ID` (or `?since=`) for a stream of `channels` (in the order the request named
    /// them): one offset for every channel, or, as multi-channel streams write their event ids, one offset
    /// per channel separated by commas (`SSEPositions.eventID`).
    package static func parseSSE(_ text: String, channels: [ChannelName], epoch: String?) throws(StormError) -> ResumePoint {
        let parts = text.split(separator: ",", omittingEmptySubsequences: false)
        var offsets: [UInt64] = []
        for part in parts {
            guard let offset = UInt64(part), offset <= 9_007_199_254_740_992 else {
                throw StormError(.badRequest, "Last-Event-ID / since must be an offset, or one offset per channel separated by commas, not '\(text.prefix(32))'")
            }
            offsets.append(offset)
        }
        if offsets.count == 1 { return ResumePoint(offset: offsets[0], epoch: epoch) }
        guard offsets.count == channels.count else {
            throw StormError(
                .badRequest,
                "Last-Event-ID has \(offsets.count) positions but the stream names \(channels.count) channels: reconnect with the same subject= list, in the same order")
        }
        var positions: [ChannelName: UInt64] = [:]
        for (channel, offset) in zip(channels, offsets) { positions[channel] = offset }
        return ResumePoint(offset: offsets.min() ?? 0, epoch: epoch, positions: positions)
    }

    /// A WebSocket subscribe's `since`: `N`, `{"offset": N, "epoch": "E"}`, or
    /// `{"positions": {"chat.a": 12, "chat.b": 40}, "epoch": "E"}` naming every requested channel.
    package static func parseWebSocket(_ raw: [UInt8], channels: [ChannelName]) throws(StormError) -> ResumePoint {
        if JSONScanner.number(raw) != nil {
            guard let offset = JSONScanner.wholeNumber(raw) else {
                throw StormError(.badRequest, "'since' must be an offset: a whole number of 0 or more")
            }
            return ResumePoint(offset: offset)
        }
        guard let fields = try? JSONScanner.objectMembers(raw) else {
            throw StormError(.badRequest, "'since' must be an offset, {\"offset\": N, \"epoch\": \"…\"} or {\"positions\": {\"channel\": N, …}, \"epoch\": \"…\"}")
        }
        let epoch = fields["epoch"].flatMap { try? JSONScanner.string($0) }
        if let rawPositions = fields["positions"] {
            guard let members = try? JSONScanner.objectMembers(rawPositions) else {
                throw StormError(.badRequest, "'since.positions' must be an object of channel: offset")
            }
            var positions: [ChannelName: UInt64] = [:]
            for channel in channels {
                guard let offset = members[channel.rawValue].flatMap(JSONScanner.wholeNumber) else {
                    throw StormError(
                        .badRequest,
                        "'since.positions' must give an offset (a whole number) for every channel of the request; '\(channel.rawValue)' has none: subscribe new channels in a request of their own")
                }
                positions[channel] = offset
            }
            return ResumePoint(offset: positions.values.min() ?? 0, epoch: epoch, positions: positions)
        }
        guard let offset = fields["offset"].flatMap(JSONScanner.wholeNumber) else {
            throw StormError(.badRequest, "'since' must be an offset, {\"offset\": N, \"epoch\": \"…\"} or {\"positions\": {\"channel\": N, …}, \"epoch\": \"…\"}")
        }
        return ResumePoint(offset: offset, epoch: epoch)
    }
}

/// The event ids of a multi-channel SSE stream: the last offset written per channel, in the order the
/// request named the channels (`12,40,7`), so that the `Last-Event-ID` EventSource sends back says
/// exactly what the client has seen of each channel (see `ResumePoint`).
///
/// The price: such a stream's chunks carry ids of their own, built per connection, instead of the
/// shared pre-encoded chunk. Single-channel streams keep the shared chunk, whose id is the offset.
package struct SSEPositions {
    private let index: [ChannelName: Int]
    private var offsets: [UInt64]

    package init(channels: [ChannelName], startingAt start: ResumePoint) {
        var index: [ChannelName: Int] = [:]
        for (position, channel) in channels.enumerated() where index[channel] == nil { index[channel] = position }
        self.index = index
        self.offsets = channels.map { start.offset(for: $0) }
    }

    /// Records that `delivery` is written and returns the event id that says so.
    package mutating func advance(_ delivery: Delivery) -> String {
        if delivery.offset > 0, let position = index[delivery.channel] { offsets[position] = delivery.offset }
        return eventID
    }

    package var eventID: String { offsets.map(String.init).joined(separator: ",") }
}

/// The outcome of recovering one channel for one session.
package struct RecoveredChannel: Sendable {
    package var channel: ChannelName
    /// Every message after the resume point is in `messages`: nothing was missed.
    package var recovered: Bool
    package var messages: [Delivery]
    /// Why the history could not be read (refused, timed out, cancelled, the stream unavailable); nil
    /// when it was read, whatever it held.
    package var failure: StormError? = nil
}

/// Holds back a session's live deliveries of channels being recovered, and drops the live duplicates of
/// what recovery already wrote, so the switch from history to live has no gap and no duplicate.
///
/// Sessions that never resume pay one `isEmpty` check per delivery.
package struct RecoveryGate {
    package enum Verdict {
        case deliver
        /// Held until the channel's history is written.
        case hold
        /// Already written by recovery.
        case skip
    }

    private var held: [ChannelName: [Delivery]] = [:]
    private var writtenUpTo: [ChannelName: UInt64] = [:]

    package var isIdle: Bool { held.isEmpty && writtenUpTo.isEmpty }

    package mutating func begin(_ channels: [ChannelName]) {
        for channel in channels { held[channel] = [] }
    }

    @inline(__always)
    package mutating func admit(_ delivery: Delivery) -> Verdict {
        if isIdle { return .deliver }
        if held[delivery.channel] != nil {
            held[delivery.channel]?.append(delivery)
            return .hold
        }
        if let upTo = writtenUpTo[delivery.channel] {
            if delivery.offset != 0 && delivery.offset <= upTo { return .skip }
            // Offsets only grow from here on: the check is no longer needed for this channel.
            writtenUpTo[delivery.channel] = nil
        }
        return .deliver
    }

    /// The deliveries of `run` to write now: `nil` for all of them (no recovery under way, the common
    /// case, which then writes the run's shared concatenation), otherwise those admitted, possibly none.
    package mutating func admit(_ run: DeliveryRun) -> [Delivery]? {
        if isIdle { return nil }
        return run.deliveries.filter { admit($0) == .deliver }
    }

    /// Ends the recovery of a channel: returns what to write, in order (history, then the held live
    /// messages newer than it), and from now on lets live deliveries through, skipping duplicates.
    package mutating func finish(_ recovered: RecoveredChannel, resumeFrom: UInt64) -> [Delivery] {
        let live = held.removeValue(forKey: recovered.channel) ?? []
        // Offsets from a lost history mean nothing here: only the live messages decide what is new.
        var last = recovered.recovered ? resumeFrom : 0
        var out: [Delivery] = []
        if recovered.recovered {
            for message in recovered.messages where message.offset > last {
                out.append(message)
                last = message.offset
            }
        }
        for message in live where message.offset == 0 || message.offset > last {
            out.append(message)
            if message.offset > 0 { last = message.offset }
        }
        if last > 0 { writtenUpTo[recovered.channel] = last }
        return out
    }

    /// Forgets a channel (unsubscribed or failed) without writing anything.
    package mutating func abandon(_ channel: ChannelName) {
        held[channel] = nil
        writtenUpTo[channel] = nil
    }
}

/// Fetches what a resuming session missed, per channel, from the broker's history.
package enum Recovery {
    /// Messages one channel may replay; past it the client is told to reload instead (`recovered: false`).
    package static let maximumMessages = 10_000

    /// Reads each channel through `reader`, all within `ticket`'s deadline; once one read fails for
    /// lack of time or because the connection went, the remaining channels are not read.
    package static func fetch(
        _ channels: [ChannelName], after point: ResumePoint, reader: HistoryReader, ticket: HistoryReadTicket, allocator: ByteBufferAllocator
    ) async -> [RecoveredChannel] {
        var results: [RecoveredChannel] = []
        var stop: StormError?
        for channel in channels {
            if let stop {
                results.append(RecoveredChannel(channel: channel, recovered: false, messages: [], failure: stop))
                continue
            }
            do throws(StormError) {
                let resumeFrom = point.offset(for: channel)
                let history = try await reader.read(channel, after: resumeFrom, limit: maximumMessages + 1, ticket: ticket)
                let sameEpoch = point.epoch == nil || point.epoch == history.epoch
                // An offset above the newest one comes from another epoch (the engine restarted, the stream
                // was recreated) even when the client could not say which epoch it had (SSE).
                let complete = history.messages.count <= maximumMessages && resumeFrom >= history.lostUpTo
                    && resumeFrom <= history.brokerLatestOffset
                let messages = history.messages.compactMap {
                    Delivery(envelope: $0.envelope, offset: $0.offset, channel: channel, allocator: allocator)
                }
                results.append(RecoveredChannel(channel: channel, recovered: sameEpoch && complete, messages: sameEpoch ? messages : []))
            } catch {
                results.append(RecoveredChannel(channel: channel, recovered: false, messages: [], failure: error))
                if ticket.isCancelled || ticket.isExpired { stop = error }
            }
        }
        return results
    }
}
