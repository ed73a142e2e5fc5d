import CNATS
import StormObservability

extension StreamStatus {
    /// Reads a `jsStreamInfo` as nats.c returns it.
    package init(info: jsStreamInfo) {
        let config = info.Config?.pointee
        let configuredReplicas = max(1, Int(clamping: config?.Replicas ?? 1))
        let maxMessages = config?.MaxMsgs ?? -1
        let maxBytes = config?.MaxBytes ?? -1
        guard let cluster = info.Cluster?.pointee else {
            self.init(
                configuredReplicas: configuredReplicas, currentReplicas: 1, leader: nil, clustered: false,
                messages: info.State.Msgs, bytes: info.State.Bytes, maxMessages: maxMessages, maxBytes: maxBytes)
            return
        }
        let leader = cluster.Leader.map { String(cString: $0) }.flatMap { $0.isEmpty ? nil : $0 }
        var current = leader == nil ? 0 : 1
        if let peers = cluster.Replicas {
            for index in 0..<Int(max(0, cluster.ReplicasLen)) {
                guard let peer = peers[index]?.pointee else { continue }
                if peer.Current && !peer.Offline { current += 1 }
            }
        }
        self.init(
            configuredReplicas: configuredReplicas, currentReplicas: current, leader: leader, clustered: true,
            messages: info.State.Msgs, bytes: info.State.Bytes, maxMessages: maxMessages, maxBytes: maxBytes)
    }
}
