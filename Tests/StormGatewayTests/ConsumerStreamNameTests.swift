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

@Suite("History consumer configuration")
struct ConsumerStreamNameTests {
    @Test("the consumer uses the gateways' stream: named from the subject prefix when it is not the default")
    func streamNameFollowsPrefix() throws {
        var configuration = try GatewayConfiguration(sources: ConfigurationSources(flags: [:]))
        #expect(configuration.historyConsumer.stream.name == "STORM")
        configuration.natsSubjectPrefix = "e2e.top"
        let consumer = configuration.historyConsumer
        #expect(consumer.stream.subjectPrefix == "e2e.top")
        #expect(consumer.stream.name == JetStreamStreamConfiguration.defaultName(forPrefix: "e2e.top"))
        #expect(consumer.stream.name == "STORM_E2E_TOP")
    }
}
