import StormCore
import StormObservability

/// What the shared HTTP server counts: refused connections, errors answered, connections closed by a
/// timeout. The gateway counts them in its metrics (`GatewayMetrics`); a role whose `/metrics` shows no
/// such series (the consumer) passes `UncountedHTTPServer`, so its answers stay as they were.
package protocol HTTPServerMetrics: Sendable {
    func countRefusal(_ reason: GatewayMetrics.ConnectionRefusal)
    func countClientError(_ code: StormError.Code)
    func countTimeout(_ timeout: HTTPTimeout)
}

/// Which clock closed a connection (`RequestDeadlineHandler`).
package enum HTTPTimeout: Sendable {
    /// `--header-timeout`: no complete request head in time.
    case header
    /// `--idle-timeout`: a kept-alive connection silent too long.
    case idle
}

extension GatewayMetrics: HTTPServerMetrics {
    package func countTimeout(_ timeout: HTTPTimeout) {
        switch timeout {
        case .header: headerTimeouts.increment()
        case .idle: idleTimeouts.increment()
        }
    }
}

/// Counts nothing (see `HTTPServerMetrics`).
package struct UncountedHTTPServer: HTTPServerMetrics {
    package init() {}
    package func countRefusal(_ reason: GatewayMetrics.ConnectionRefusal) {}
    package func countClientError(_ code: StormError.Code) {}
    package func countTimeout(_ timeout: HTTPTimeout) {}
}
