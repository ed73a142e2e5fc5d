import NIOCore
import StormConfiguration
import StormCore
import StormTestSupport
import Testing

/// The value parsers every setting goes through: what they accept, and that absurd values are answered
/// with the setting's origin instead of trapping on overflow.
@Suite("Setting values")
struct SettingValuesTests {
    private func value(_ text: String) -> ConfigurationSources.Value {
        ConfigurationSources.Value(value: text, origin: "--test")
    }

    @Test("durations take ms, s, m, h, d and bare seconds")
    func durations() throws {
        let range = TimeAmount.milliseconds(1)...TimeAmount.hours(24 * 3650)
        #expect(try ConfigurationSources.parseDuration(value("500ms"), range: range) == .milliseconds(500))
        #expect(try ConfigurationSources.parseDuration(value("20s"), range: range) == .seconds(20))
        #expect(try ConfigurationSources.parseDuration(value("2m"), range: range) == .minutes(2))
        #expect(try ConfigurationSources.parseDuration(value("3"), range: range) == .seconds(3))
        #expect(try ConfigurationSources.parseDuration(value("1d"), range: range) == .hours(24))
    }

    @Test("absurd durations and sizes are refused with the setting's origin, never trap", arguments: [
        "9223372036854775807d", "9223372036854775807s", "9223372036854775807", "-9223372036854775807h",
    ])
    func absurdDurations(_ text: String) {
        #expect(throws: StormError.self) {
            try ConfigurationSources.parseDuration(value(text), range: .seconds(1)...TimeAmount.hours(1))
        }
        do {
            _ = try ConfigurationSources.parseDuration(value(text), range: .seconds(1)...TimeAmount.hours(1))
        } catch {
            #expect(error.code == .configuration)
            #expect(error.message.hasPrefix("--test:"))
        }
    }

    @Test("sizes take B, KiB, MiB, GiB; an overflowing size is refused")
    func sizes() throws {
        #expect(try ConfigurationSources.parseSize(value("64KiB"), range: 1...Int.max) == 65_536)
        #expect(try ConfigurationSources.parseSize(value("2 MiB"), range: 1...Int.max) == 2 << 20)
        #expect(try ConfigurationSources.parseSize(value("100"), range: 1...Int.max) == 100)
        #expect(throws: StormError.self) { try ConfigurationSources.parseSize(value("9223372036854775807GiB"), range: 1...Int.max) }
        #expect(throws: StormError.self) { try ConfigurationSources.parseSize(value("12 furlongs"), range: 1...Int.max) }
    }

    @Test("listen addresses: IPv4, [IPv6], a bare :port; bad ports refused")
    func listen() throws {
        #expect(try ConfigurationSources.parseListen(value("0.0.0.0:9000")) == ListenAddress(host: "0.0.0.0", port: 9000))
        #expect(try ConfigurationSources.parseListen(value("[::1]:8080")) == ListenAddress(host: "::1", port: 8080))
        #expect(try ConfigurationSources.parseListen(value(":8081")) == ListenAddress(host: "127.0.0.1", port: 8081))
        #expect(throws: StormError.self) { try ConfigurationSources.parseListen(value("host:99999")) }
        #expect(throws: StormError.self) { try ConfigurationSources.parseListen(value("nocolon")) }
        #expect(ListenAddress(host: "127.0.0.2", port: 1).isLoopback)
        #expect(!ListenAddress(host: "0.0.0.0", port: 1).isLoopback)
    }

    @Test("switches: on/off and their synonyms only")
    func switches() throws {
        for text in ["on", "true", "yes", "1", "ON"] { #expect(try ConfigurationSources.parseSwitch(value(text))) }
        for text in ["off", "false", "no", "0"] { #expect(try !ConfigurationSources.parseSwitch(value(text))) }
        #expect(throws: StormError.self) { try ConfigurationSources.parseSwitch(value("maybe")) }
    }
}
