import NIOCore
import StormCore
import StormTestSupport
import Testing

@testable import StormBroker
@testable import StormConfiguration
@testable import StormConsumer
@testable import StormGateway
@testable import StormHTTP
@testable import StormNATS
@testable import StormObservability
@testable import StormPresence
@testable import StormStore

/// `ConnectionGate` step by step, with the clock passed in: no sockets, no sleeps.
@Suite("Connection gate")
struct ConnectionGateTests {
    private let start = NIODeadline.uptimeNanoseconds(1_000_000_000_000)

    @Test("per-address count: the connection past the limit is refused, a release lets one in again")
    func perAddress() {
        var gate = ConnectionGate(maxConnections: 100, maxPerAddress: 5, ratePerSecond: 0)
        for _ in 0..<5 { #expect(gate.admit(address: "10.0.0.1", now: start).admission == .admitted) }
        #expect(gate.admit(address: "10.0.0.1", now: start).admission == .refused(.maxConnectionsPerIP, retryAfterSeconds: 1))
        // Other addresses are not concerned.
        #expect(gate.admit(address: "10.0.0.2", now: start).admission == .admitted)
        #expect(gate.openConnections(from: "10.0.0.1") == 5)
        // The refused one held a descriptor until it closed, so it counted in the total.
        #expect(gate.total == 7)
        gate.release(address: "10.0.0.1", admission: .refused(.maxConnectionsPerIP, retryAfterSeconds: 1))
        gate.release(address: "10.0.0.1", admission: .admitted)
        #expect(gate.openConnections(from: "10.0.0.1") == 4)
        #expect(gate.admit(address: "10.0.0.1", now: start).admission == .admitted)
        #expect(gate.total == 6)
    }

    @Test("loopback skips the per-address limits unless --limit-loopback on; --max-connections still applies")
    func loopbackExemption() {
        var limits = ConnectionLimits()
        limits.maxConnections = 10
        limits.maxConnectionsPerIP = 1
        limits.connectRatePerIP = 1
        var gate = ConnectionGate(limits: limits, openFilesLimit: 20_000)
        for address in ["127.0.0.1", "127.0.0.1", "::1", "::ffff:127.0.0.2", "127.9.9.9"] {
            #expect(gate.admit(address: address, now: start).admission == .admitted, "\(address)")
        }
        #expect(gate.admit(address: "10.0.0.1", now: start).admission == .admitted)
        #expect(gate.admit(address: "10.0.0.1", now: start).admission == .refused(.maxConnectionsPerIP, retryAfterSeconds: 1))
        limits.limitLoopback = true
        var strict = ConnectionGate(limits: limits, openFilesLimit: 20_000)
        #expect(strict.admit(address: "127.0.0.1", now: start).admission == .admitted)
        #expect(strict.admit(address: "127.0.0.1", now: start).admission == .refused(.maxConnectionsPerIP, retryAfterSeconds: 1))
        // The process limit is for everyone: 10 admitted, then probes only, loopback or not.
        var full = ConnectionGate(limits: ConnectionLimits(maxConnections: 2), openFilesLimit: 20_000)
        #expect(full.admit(address: "127.0.0.1", now: start).admission == .admitted)
        #expect(full.admit(address: "127.0.0.1", now: start).admission == .admitted)
        #expect(full.admit(address: "127.0.0.1", now: start).admission == .probesOnly)
    }

    @Test("0 means unlimited per address and no rate limit")
    func unlimited() {
        var gate = ConnectionGate(maxConnections: 10_000, maxPerAddress: 0, ratePerSecond: 0)
        var admitted = 0
        for _ in 0..<5_000 where gate.admit(address: "10.0.0.1", now: start).admission == .admitted { admitted += 1 }
        #expect(admitted == 5_000)
        #expect(gate.entries.isEmpty)
    }

    @Test("token bucket: a burst of the rate, then refused with Retry-After, refilled over time")
    func bucket() {
        var gate = ConnectionGate(maxConnections: 1_000, maxPerAddress: 0, ratePerSecond: 4)
        for _ in 0..<4 { #expect(gate.admit(address: "10.0.0.1", now: start).admission == .admitted) }
        #expect(gate.admit(address: "10.0.0.1", now: start).admission == .refused(.connectRate, retryAfterSeconds: 1))
        // A quarter of a second later one token is back, and only one.
        let later = start + .milliseconds(250)
        #expect(gate.admit(address: "10.0.0.1", now: later).admission == .admitted)
        #expect(gate.admit(address: "10.0.0.1", now: later).admission == .refused(.connectRate, retryAfterSeconds: 1))
        // The bucket never holds more than the burst, however long the pause.
        let much = later + .seconds(3600)
        for _ in 0..<4 { #expect(gate.admit(address: "10.0.0.1", now: much).admission == .admitted) }
        #expect(gate.admit(address: "10.0.0.1", now: much).admission == .refused(.connectRate, retryAfterSeconds: 1))
    }

    @Test("Retry-After is the whole seconds until a token is back")
    func retryAfter() {
        var gate = ConnectionGate(maxConnections: 1_000, maxPerAddress: 0, ratePerSecond: 1)
        #expect(gate.admit(address: "a", now: start).admission == .admitted)
        #expect(gate.admit(address: "a", now: start).admission == .refused(.connectRate, retryAfterSeconds: 1))
        #expect(gate.admit(address: "a", now: start + .seconds(1)).admission == .admitted)
    }

    @Test("past --max-connections: probe-only connections, the limit logged once, then closed at once")
    func processLimit() {
        var gate = ConnectionGate(maxConnections: 3, maxPerAddress: 0, ratePerSecond: 0, probeReserve: 2)
        for index in 0..<3 { #expect(gate.admit(address: "10.0.0.\(index)", now: start).admission == .admitted) }
        let first = gate.admit(address: "10.0.0.9", now: start)
        #expect(first == .init(admission: .probesOnly, limitReached: true))
        #expect(gate.admit(address: "10.0.0.9", now: start) == .init(admission: .probesOnly, limitReached: false))
        #expect(gate.admit(address: "10.0.0.9", now: start).admission == .closeNow)
        // A probe connection closing makes room for another probe, not for a normal connection.
        gate.release(address: "10.0.0.9", admission: .probesOnly)
        #expect(gate.admit(address: "10.0.0.9", now: start).admission == .probesOnly)
        // Normal connections closing below 90% of the limit re-arm the log line.
        gate.release(address: "10.0.0.0", admission: .admitted)
        #expect(gate.admit(address: "10.0.0.0", now: start).admission == .admitted)
        gate.release(address: "10.0.0.0", admission: .admitted)
        gate.release(address: "10.0.0.1", admission: .admitted)
        #expect(gate.admit(address: "10.0.0.0", now: start).admission == .admitted)
        #expect(gate.admit(address: "10.0.0.1", now: start).admission == .admitted)
        gate.release(address: "10.0.0.9", admission: .probesOnly)
        #expect(gate.admit(address: "10.0.0.9", now: start) == .init(admission: .probesOnly, limitReached: true))
        // closeNow is never counted, so releasing it changes nothing.
        let total = gate.total
        gate.release(address: "10.0.0.9", admission: .closeNow)
        #expect(gate.total == total)
    }

    @Test("idle entries are swept: no connections and a full bucket")
    func eviction() {
        var gate = ConnectionGate(maxConnections: 100_000, maxPerAddress: 10, ratePerSecond: 10, sweepInterval: .seconds(10))
        for index in 0..<1_000 {
            let address = "10.0.\(index / 256).\(index % 256)"
            #expect(gate.admit(address: address, now: start).admission == .admitted)
            gate.release(address: address, admission: .admitted)
        }
        #expect(gate.admit(address: "10.9.9.9", now: start).admission == .admitted)
        #expect(gate.entries.count == 1_001)
        // Eleven seconds on, every bucket is full again; only the one with a connection stays.
        #expect(gate.admit(address: "10.9.9.8", now: start + .seconds(11)).admission == .admitted)
        #expect(gate.entries.count == 2)
        #expect(gate.openConnections(from: "10.9.9.9") == 1)
    }

    @Test("at maxTrackedAddresses, entries without connections are forgotten first")
    func boundedMemory() {
        var gate = ConnectionGate(maxConnections: 100_000, maxPerAddress: 10, ratePerSecond: 1, maxTrackedAddresses: 100, sweepInterval: .seconds(3600))
        #expect(gate.admit(address: "holder", now: start).admission == .admitted)
        for index in 0..<1_000 {
            let address = "10.1.\(index / 256).\(index % 256)"
            #expect(gate.admit(address: address, now: start).admission == .admitted)
            gate.release(address: address, admission: .admitted)
            #expect(gate.entries.count <= 100)
        }
        #expect(gate.openConnections(from: "holder") == 1)
    }

    @Test("the connection limit is derived from the open-files limit and clamps explicit values")
    func derivedLimit() {
        var limits = ConnectionLimits()
        #expect(limits.effectiveMaxConnections(openFilesLimit: 20_000) == 20_000 - ConnectionLimits.fileReserve)
        #expect(limits.effectiveMaxConnections(openFilesLimit: 256) == ConnectionLimits.minimumConnections)
        limits.maxConnections = 500
        #expect(limits.effectiveMaxConnections(openFilesLimit: 20_000) == 500)
        #expect(limits.effectiveMaxConnections(openFilesLimit: 512) == 256)
        limits.maxConnections = 1_000_000
        #expect(limits.effectiveMaxConnections(openFilesLimit: Int(Int32.max)) == 1_000_000)
    }

    @Test("the flags are read, with auto and 0, and refused out of range")
    func configuration() throws {
        let parsed = try GatewayConfiguration(
            sources: ConfigurationSources(flags: [.maxConnections: "64", .maxConnectionsPerIP: "0", .connectRatePerIP: "5", .headerTimeout: "1s", .idleTimeout: "500ms"]))
        #expect(parsed.connections.maxConnections == 64)
        #expect(parsed.connections.maxConnectionsPerIP == 0)
        #expect(parsed.connections.connectRatePerIP == 5)
        #expect(parsed.connections.headerTimeout == .seconds(1))
        #expect(parsed.connections.idleTimeout == .milliseconds(500))
        let auto = try GatewayConfiguration(sources: ConfigurationSources(flags: [.maxConnections: "auto"]))
        #expect(auto.connections.maxConnections == nil)
        #expect(auto.connections.maxConnectionsPerIP == 1_000)
        #expect(auto.connections.connectRatePerIP == 200)
        for (setting, value) in [(Setting.maxConnections, "0"), (.maxConnectionsPerIP, "-1"), (.connectRatePerIP, "x"), (.headerTimeout, "0s")] {
            #expect(throws: StormError.self) { try GatewayConfiguration(sources: ConfigurationSources(flags: [setting: value])) }
        }
        #expect(auto.rendered().contains("max-connections = auto"))
        #expect(parsed.rendered().contains("header-timeout = 1000ms"))
    }
}
