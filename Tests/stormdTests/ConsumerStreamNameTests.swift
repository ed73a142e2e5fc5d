import Testing

@testable import stormd

@Suite("History consumer configuration")
struct ConsumerStreamNameTests {
    @Test("the consumer uses the gateways' stream: named from the subject prefix when it is not the default")
    func streamNameFollowsPrefix() throws {
        var configuration = try GatewayConfiguration(sources: ConfigurationSources(flags: [:]))
        #expect(StoreServices.consumerConfiguration(configuration).stream.name == "STORM")
        configuration.natsSubjectPrefix = "e2e.top"
        let consumer = StoreServices.consumerConfiguration(configuration)
        #expect(consumer.stream.subjectPrefix == "e2e.top")
        #expect(consumer.stream.name == JetStreamStreamConfiguration.defaultName(forPrefix: "e2e.top"))
        #expect(consumer.stream.name == "STORM_E2E_TOP")
    }
}
