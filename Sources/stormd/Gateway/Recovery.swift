import NIOCore
import StormCore

/// Where a resuming client left off: an offset and, when the client knows it, the epoch it came from.
struct ResumePoint: Sendable {
    var offset: UInt64
    var epoch: String?
}

/// The outcome of recovering one channel for one session.
struct RecoveredChannel: Sendable {
    var channel: ChannelName
    /// Every message after the resume point is in `messages`: nothing was missed.
    var recovered: Bool
    var messages: [Delivery]
}

/// Holds back a session's live deliveries of channels being recovered, and drops the live duplicates of
/// what recovery already wrote, so the switch from history to live has no gap and no duplicate.
///
/// Sessions that never resume pay one `isEmpty` check per delivery.
struct RecoveryGate {
    enum Verdict {
        case deliver
        /// Held until the channel's history is written.
        case hold
        /// Already written by recovery.
        case skip
    }

    private var held: [ChannelName: [Delivery]] = [:]
    private var writtenUpTo: [ChannelName: UInt64] = [:]

    var isIdle: Bool { held.isEmpty && writtenUpTo.isEmpty }

    mutating func begin(_ channels: [ChannelName]) {
        for channel in channels { held[channel] = [] }
    }

    @inline(__always)
    mutating func admit(_ delivery: Delivery) -> Verdict {
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
    mutating func admit(_ run: DeliveryRun) -> [Delivery]? {
        if isIdle { return nil }
        return run.deliveries.filter { admit($0) == .deliver }
    }

    /// Ends the recovery of a channel: returns what to write, in order (history, then the held live
    /// messages newer than it), and from now on lets live deliveries through, skipping duplicates.
    mutating func finish(_ recovered: RecoveredChannel, resumeFrom: UInt64) -> [Delivery] {
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
    mutating func abandon(_ channel: ChannelName) {
        held[channel] = nil
        writtenUpTo[channel] = nil
    }
}

/// Fetches what a resuming session missed, per channel, from the broker's history.
enum Recovery {
    /// Messages one channel may replay; past it the client is told to reload instead (`recovered: false`).
    static let maximumMessages = 10_000

    static func fetch(
        _ channels: [ChannelName], after point: ResumePoint, broker: any MessageBroker, allocator: ByteBufferAllocator
    ) async -> [RecoveredChannel] {
        var results: [RecoveredChannel] = []
        for channel in channels {
            do {
                let history = try await broker.history(of: channel, after: point.offset, limit: maximumMessages + 1)
                let sameEpoch = point.epoch == nil || point.epoch == history.epoch
                // An offset above the newest one comes from another epoch (the engine restarted, the stream
                // was recreated) even when the client could not say which epoch it had (SSE).
                let complete = history.messages.count <= maximumMessages && point.offset >= history.lostUpTo
                    && point.offset <= history.brokerLatestOffset
                let messages = history.messages.compactMap {
                    Delivery(envelope: $0.envelope, offset: $0.offset, channel: channel, allocator: allocator)
                }
                results.append(RecoveredChannel(channel: channel, recovered: sameEpoch && complete, messages: sameEpoch ? messages : []))
            } catch {
                results.append(RecoveredChannel(channel: channel, recovered: false, messages: []))
            }
        }
        return results
    }
}
