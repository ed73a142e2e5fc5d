/// The history consumer's state as `/readyz` reports it.
package enum ConsumerHealth: Sendable, Equatable {
    case starting
    case ready
    case degraded(String)
    case stopped
}

/// What the gateway's `/readyz` asks of a history consumer running in the same process
/// (`--role all`): declared here so that the gateway needs no dependency on the consumer role.
package protocol ConsumerHealthReporting: AnyObject, Sendable {
    var health: ConsumerHealth { get }
}
