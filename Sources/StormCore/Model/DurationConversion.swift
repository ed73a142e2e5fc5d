

/// nats.c takes times in milliseconds; saturates instead of trapping on absurd durations.
public func milliseconds(_ duration: Duration) -> Int64 {
    let (seconds, attoseconds) = duration.components
    let (whole, overflow) = seconds.multipliedReportingOverflow(by: 1000)
    if overflow { return seconds < 0 ? Int64.min : Int64.max }
    return whole.addingReportingOverflow(attoseconds / 1_000_000_000_000_000).partialValue
}

/// A `Duration` in whole nanoseconds, saturating (JetStream takes nanoseconds for ages and windows).
public func nanoseconds(_ duration: Duration) -> Int64 {
    let (seconds, attoseconds) = duration.components
    let (whole, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
    if overflow { return seconds < 0 ? Int64.min : Int64.max }
    return whole.addingReportingOverflow(attoseconds / 1_000_000_000).partialValue
}
