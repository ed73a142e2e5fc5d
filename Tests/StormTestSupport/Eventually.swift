/// Polls `condition` every `interval` until it holds or `timeout` passes; returns whether it held.
///
/// The one way the suites wait for something to happen: bounded, and never an assertion on time, so
/// a busy machine only makes a test slower, not red. Deadlines are generous for the same reason.
package func eventually(
    timeout: Duration = .seconds(60), every interval: Duration = .milliseconds(25), _ condition: () async throws -> Bool
) async rethrows -> Bool {
    let deadline = ContinuousClock.now + timeout
    while try await !condition() {
        if ContinuousClock.now >= deadline { return false }
        try? await Task.sleep(for: interval)
    }
    return true
}

/// Runs `body`, then `cleanup`, awaited, whether `body` threw or not: what `defer` cannot do with async
/// work (a `defer { Task { … } }` would let the test end before its servers and connections are gone).
package func cleaningUp<T>(_ cleanup: () async -> Void, _ body: () async throws -> T) async throws -> T {
    let value: T
    do {
        value = try await body()
    } catch {
        await cleanup()
        throw error
    }
    await cleanup()
    return value
}
