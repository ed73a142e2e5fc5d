import Logging
import NIOConcurrencyHelpers
import NIOPosix
import StormCore

/// A small pool of `PostgresConnection`s whose blocking libpq calls run on a `NIOThreadPool` of their own.
///
/// Why its own pool: libpq blocks for a whole round trip (or a 5 s connect timeout when the server is gone),
/// and `NIOThreadPool.singleton` also serves NATS connects; a stuck database must not stall those. One
/// thread per connection, so a checked-out connection never waits for a thread.
///
/// Connections are made lazily and remade when one went bad (a server restart), at the next use: a caller
/// sees one `.connection` error for the statement that met the dead socket, and the next call reconnects.
///
/// - `size` (`Int`, default 2): connections and threads. The consumer uses one; history reads share the rest.
package final class PostgresClient: Sendable {
    private struct State {
        var idle: [PostgresConnection] = []
        var created = 0
        var waiters: [CheckedContinuation<PostgresConnection?, Never>] = []
        var closed = false
    }

    package let endpoint: String
    private let conninfo: String
    private let size: Int
    private let logger: Logger
    private let threads: NIOThreadPool
    private let state = NIOLockedValueBox(State())

    package init(conninfo: String, size: Int = 2, logger: Logger) {
        self.conninfo = conninfo
        self.size = max(1, size)
        self.logger = logger
        self.endpoint = redactedPostgresConnectionString(conninfo)
        self.threads = NIOThreadPool(numberOfThreads: max(1, size))
        threads.start()
        logger.debug("PostgreSQL client created", metadata: ["postgres.server": "\(endpoint)", "postgres.pool_size": "\(self.size)"])
    }

    /// Runs `body` with a connected connection on a pool thread. The connection is (re)connected first
    /// when needed; after a `.connection` error it is dropped so the next caller starts afresh.
    package func withConnection<T: Sendable>(
        _ body: @escaping @Sendable (PostgresConnection) throws(StormError) -> T
    ) async throws(StormError) -> T {
        guard let connection = await checkOut() else {
            throw StormError(.shuttingDown, "the PostgreSQL client for \(endpoint) is closed")
        }
        let outcome: Result<T, StormError>
        do {
            outcome = try await threads.runIfActive { () -> Result<T, StormError> in
                do throws(StormError) {
                    try connection.ensureConnected()
                    return .success(try body(connection))
                } catch {
                    // A broken socket: drop it here, on the pool thread, so the next user reconnects.
                    if error.code == .connection { connection.close() }
                    return .failure(error)
                }
            }
        } catch {
            outcome = .failure(StormError(.shuttingDown, "the PostgreSQL client for \(endpoint) is shutting down"))
        }
        checkIn(connection)
        return try outcome.get()
    }

    /// Closes every idle connection and stops the threads; waiting callers get `.shuttingDown`.
    package func shutdown() async {
        let (idle, waiters): ([PostgresConnection], [CheckedContinuation<PostgresConnection?, Never>]) = state.withLockedValue { state in
            state.closed = true
            defer {
                state.idle = []
                state.waiters = []
            }
            return (state.idle, state.waiters)
        }
        for waiter in waiters { waiter.resume(returning: nil) }
        try? await threads.runIfActive { for connection in idle { connection.close() } }
        try? await threads.shutdownGracefully()
    }

    private func checkOut() async -> PostgresConnection? {
        enum Next {
            case ready(PostgresConnection?)
            case wait
        }
        let next: Next = state.withLockedValue { state in
            if state.closed { return .ready(nil) }
            if let connection = state.idle.popLast() { return .ready(connection) }
            if state.created < size {
                state.created += 1
                return .ready(PostgresConnection(conninfo: conninfo, logger: logger))
            }
            return .wait
        }
        if case .ready(let connection) = next { return connection }
        return await withCheckedContinuation { continuation in
            let immediate: PostgresConnection?? = state.withLockedValue { state in
                if state.closed { return .some(nil) }
                if let connection = state.idle.popLast() { return .some(connection) }
                state.waiters.append(continuation)
                return .none
            }
            if let immediate { continuation.resume(returning: immediate) }
        }
    }

    private func checkIn(_ connection: PostgresConnection) {
        let waiter: CheckedContinuation<PostgresConnection?, Never>? = state.withLockedValue { state in
            if state.closed {
                return nil
            }
            if state.waiters.isEmpty {
                state.idle.append(connection)
                return nil
            }
            return state.waiters.removeFirst()
        }
        if let waiter {
            waiter.resume(returning: connection)
        } else if state.withLockedValue({ $0.closed }) {
            connection.close()
        }
    }
}
