import StormNATS

extension GatewayConfiguration {
    /// The history consumer's settings from the gateway's: the same NATS servers and TLS, the same
    /// stream (settings and name), the same migrations switch.
    package var historyConsumer: HistoryConsumerConfiguration {
        let configuration = self
        var consumer = HistoryConsumerConfiguration(natsURLs: configuration.natsURLs)
        consumer.natsTLS = configuration.tls.nats
        // The gateway's stream settings (--stream-*), under the consumer's stream name.
        let name = consumer.stream.name
        consumer.stream = configuration.stream
        consumer.stream.name = name
        consumer.stream.subjectPrefix = configuration.natsSubjectPrefix
        // The same stream as the gateways': with another prefix than the default, NATSBroker derives the
        // name from the prefix, and so must the consumer, or it would try to create a second stream
        // over the same subjects (JetStream refuses: subjects overlap).
        if consumer.stream.subjectPrefix != JetStreamStreamConfiguration().subjectPrefix, consumer.stream.name == JetStreamStreamConfiguration().name {
            consumer.stream.name = JetStreamStreamConfiguration.defaultName(forPrefix: consumer.stream.subjectPrefix)
        }
        consumer.migrateOnStart = configuration.store.migrateOnStart
        consumer.connectionName = "stormd consumer \(configuration.listen)"
        return consumer
    }
}
