import Foundation
import StormCore
import StormTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Issue #14, item 2: `stormd --role all` makes one PostgreSQL client for the process, shared by the
/// gateway and the consumer, and applies the migrations once. Runs the built `stormd` (STORM_BIN_DIR)
/// against the test PostgreSQL and NATS, and reads its debug log.
@Suite(
    "stormd --role all: one PostgreSQL client", .serialized,
    .enabled(if: PostgresTestEnvironment.shouldRun, "needs STORM_TEST_POSTGRES_URL and STORM_TEST_NATS_URL: run ./scripts/test"))
struct RoleAllTests {
    private static var binDir: String? {
        ProcessInfo.processInfo.environment["STORM_BIN_DIR"].flatMap { $0.isEmpty ? nil : $0 }
    }

    private static func freePort() throws -> Int {
        let socket = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard socket >= 0 else { throw StormError(.internalError, "socket() failed") }
        defer { close(socket) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(socket, $0, length) } }
        guard bound == 0 else { throw StormError(.internalError, "bind() failed") }
        let named = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(socket, $0, &length) } }
        guard named == 0 else { throw StormError(.internalError, "getsockname() failed") }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    @Test("the gateway and the consumer share one client; migrations are applied once")
    func oneClient() async throws {
        guard let binDir = Self.binDir else {
            Issue.record("STORM_BIN_DIR is not set: run ./scripts/test, which points it at the built stormd")
            return
        }
        guard let natsURL = TestEnvironment.natsURL else { throw PostgresTestEnvironment.Missing(variable: "STORM_TEST_NATS_URL") }
        let databaseURL = try await PostgresTestEnvironment.freshDatabase()
        let stormd = URL(fileURLWithPath: binDir).appendingPathComponent("stormd").path
        let port = try Self.freePort()
        let tag = UInt32.random(in: 0...UInt32.max)
        let logPath = FileManager.default.temporaryDirectory.appendingPathComponent("stormd-role-all-\(tag).log").path
        guard FileManager.default.createFile(atPath: logPath, contents: nil), let log = FileHandle(forWritingAtPath: logPath) else {
            Issue.record("cannot create \(logPath)")
            return
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: stormd)
        process.arguments = [
            "--listen", "127.0.0.1:\(port)", "--role", "all", "--nats", natsURL, "--nats-subject-prefix", "test.all\(tag)",
            "--log-level", "debug", "--web-ui", "off",
        ]
        var environment = ProcessInfo.processInfo.environment
        environment["STORM_POSTGRES_URL"] = databaseURL
        process.environment = environment
        process.standardOutput = log
        process.standardError = log
        try process.run()
        let pid = process.processIdentifier

        let ready = await eventually(timeout: .seconds(60), every: .milliseconds(100)) {
            guard process.isRunning, let connection = try? await RawConnection.connect(port: port) else { return false }
            let response = try? await connection.request("GET", "/readyz")
            await connection.close()
            return response?.text.contains("\"consumer\":\"ready\"") == true
        }
        // Only the child this test started, by its PID: SIGTERM, then SIGKILL if it does not stop.
        kill(pid, SIGTERM)
        let stopped = await eventually(timeout: .seconds(30), every: .milliseconds(50)) { !process.isRunning }
        if !stopped { kill(pid, SIGKILL) }
        process.waitUntilExit()
        try? log.close()
        let text = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
        try? FileManager.default.removeItem(atPath: logPath)

        #expect(ready, "stormd --role all did not report the consumer ready; its log:\n\(text.suffix(4000))")
        #expect(stopped && process.terminationStatus == 0, "stormd did not stop cleanly on SIGTERM (status \(process.terminationStatus))")
        let lines = text.split(separator: "\n")
        let clients = lines.filter { $0.contains("PostgreSQL client created") }
        let migrations = lines.filter { $0.contains("applied database migrations") || $0.contains("database schema is up to date") }
        #expect(clients.count == 1, "PostgreSQL clients created: \(clients)")
        #expect(clients.first?.contains("postgres.pool_size=3") == true, "\(clients)")
        #expect(migrations.count == 1, "migration runs: \(migrations)")
    }
}
