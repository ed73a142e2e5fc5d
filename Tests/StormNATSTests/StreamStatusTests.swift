import CNATS
import Foundation
import Prometheus
import StormTestSupport
import Testing

@testable import StormBroker
@testable import StormConfiguration
@testable import StormConsumer
@testable import StormGateway
@testable import StormNATS
@testable import StormObservability
@testable import StormPresence
@testable import StormStore

@Suite("Stream status (storm_stream_*)")
struct StreamStatusTests {
    /// A `jsStreamInfo` as nats.c fills it, with `peers` as (current, offline) followers.
    func withInfo<T>(replicas: Int64, leader: String?, peers: [(Bool, Bool)], clustered: Bool = true, _ body: (jsStreamInfo) -> T) -> T {
        var config = jsStreamConfig()
        config.Replicas = replicas
        config.MaxMsgs = 1000
        config.MaxBytes = -1
        var info = jsStreamInfo()
        info.State.Msgs = 900
        info.State.Bytes = 12345
        let leaderName = leader.flatMap { strdup($0) }
        let peerNames = peers.indices.map { strdup("n\($0 + 2)") }
        var peerInfos = peers.enumerated().map { index, peer in
            jsPeerInfo(Name: peerNames[index], Current: peer.0, Offline: peer.1, Active: 0, Lag: 0)
        }
        defer {
            free(leaderName)
            peerNames.forEach { free($0) }
        }
        return withUnsafeMutablePointer(to: &config) { configPointer in
            info.Config = configPointer
            return peerInfos.withUnsafeMutableBufferPointer { peerBuffer in
                var pointers: [UnsafeMutablePointer<jsPeerInfo>?] = (0..<peerBuffer.count).map { index in peerBuffer.baseAddress.map { $0 + index } }
                return pointers.withUnsafeMutableBufferPointer { list in
                    var cluster = jsClusterInfo(Name: nil, Leader: leaderName, Replicas: list.baseAddress, ReplicasLen: Int32(list.count))
                    return withUnsafeMutablePointer(to: &cluster) { clusterPointer in
                        info.Cluster = clustered ? clusterPointer : nil
                        return body(info)
                    }
                }
            }
        }
    }

    @Test("replicas in sync are the leader and the current, online followers")
    func replicas() {
        let status = withInfo(replicas: 3, leader: "n1", peers: [(true, false), (false, false)]) { StreamStatus(info: $0) }
        #expect(status == StreamStatus(configuredReplicas: 3, currentReplicas: 2, leader: "n1", clustered: true, messages: 900, bytes: 12345, maxMessages: 1000, maxBytes: -1))
        let offline = withInfo(replicas: 3, leader: "n1", peers: [(true, true), (true, false)]) { StreamStatus(info: $0) }
        #expect(offline.currentReplicas == 2, "an offline peer is not in sync, even if it says current")
        let leaderless = withInfo(replicas: 3, leader: nil, peers: [(true, false), (true, false)]) { StreamStatus(info: $0) }
        #expect(leaderless.leader == nil && leaderless.clustered && leaderless.currentReplicas == 2)
        let single = withInfo(replicas: 1, leader: nil, peers: [], clustered: false) { StreamStatus(info: $0) }
        #expect(single.currentReplicas == 1 && !single.clustered && single.leader == nil, "a single server holds its one copy")
        var failed = status
        failed.unconfirmed()
        #expect(failed.currentReplicas == 0 && failed.leader == nil && failed.messages == 900, "a failed sample confirms no copy, keeps the contents")
    }

    @Test("the gauges appear at the first status, and the leader series follows the leader")
    func gauges() {
        let registry = PrometheusCollectorRegistry()
        let gauges = StreamGauges(registry: registry)
        gauges.set(nil)
        #expect(!String(decoding: registry.emitToBuffer(), as: UTF8.self).contains("storm_stream"), "nothing before a stream is known")
        gauges.set(StreamStatus(configuredReplicas: 3, currentReplicas: 3, leader: "n1", clustered: true, messages: 5, bytes: 50, maxMessages: -1, maxBytes: 100))
        gauges.set(StreamStatus(configuredReplicas: 3, currentReplicas: 2, leader: "n2", clustered: true, messages: 6, bytes: 60, maxMessages: -1, maxBytes: 100))
        let text = String(decoding: registry.emitToBuffer(), as: UTF8.self)
        for line in [
            "storm_stream_replicas 2", "storm_stream_replicas_configured 3", "storm_stream_clustered 1", "storm_stream_messages 6",
            "storm_stream_bytes 60", "storm_stream_max_messages -1", "storm_stream_max_bytes 100",
            #"storm_stream_leader_info{leader="n1"} 0"#, #"storm_stream_leader_info{leader="n2"} 1"#,
        ] {
            #expect(text.contains(line), "\(line) in \(text)")
        }
    }
}
