import NIOCore
import NIOPosix

/// Reads one gateway's `/metrics` over a kept-alive HTTP connection, bounded in time.
///
/// A dashboard polls every second; reusing the connection keeps that to one request per poll, and the
/// deadline (which covers connect, request and reading the answer) is what turns a hung or
/// black-holed gateway into a prompt "down" instead of a stuck poll.
public actor PrometheusScraper {
    public let endpoint: StormEndpoint
    public let path: String
    private let timeoutMilliseconds: Int64
    private let group: any EventLoopGroup
    private var client: StormHTTPClient

    /// - Parameters:
    ///   - endpoint: the gateway.
    ///   - path: the metrics path. Default `/metrics`.
    ///   - timeoutSeconds: how long one scrape may take, connect included. Default 2 s.
    public init(
        endpoint: StormEndpoint, path: String = "/metrics", timeoutSeconds: Double = 2,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) {
        self.endpoint = endpoint
        self.path = path
        let milliseconds = (timeoutSeconds * 1000).rounded()
        self.timeoutMilliseconds = milliseconds.isFinite ? Int64(max(1, min(milliseconds, 3_600_000))) : 2000
        self.group = group
        self.client = Self.makeClient(endpoint: endpoint, timeoutMilliseconds: timeoutMilliseconds, group: group)
    }

    private static func makeClient(endpoint: StormEndpoint, timeoutMilliseconds: Int64, group: any EventLoopGroup) -> StormHTTPClient {
        StormHTTPClient(
            endpoint: endpoint, options: StormConnectOptions(connectTimeout: .milliseconds(timeoutMilliseconds)), group: group)
    }

    /// The raw answer body.
    ///
    /// A request on a kept-alive connection the server closed in the meantime fails without the server
    /// being down, so a connection failure is retried once on a fresh connection; a timeout is not.
    ///
    /// - Throws: `StormError(.connection)` when the gateway cannot be reached or does not answer in time,
    ///   the server's error for a status of 400 and above.
    public func scrapeBody() async throws(StormError) -> [UInt8] {
        do {
            return try await client.request(path: path, timeout: .milliseconds(timeoutMilliseconds)).body
        } catch where error.code == .connection && !error.message.contains("did not answer") {
            await client.close()
            client = Self.makeClient(endpoint: endpoint, timeoutMilliseconds: timeoutMilliseconds, group: group)
            return try await client.request(path: path, timeout: .milliseconds(timeoutMilliseconds)).body
        }
    }

    /// The parsed exposition.
    ///
    /// - Throws: as `scrapeBody()`, and `StormError(.protocolViolation)` naming the line when the answer is
    ///   not valid Prometheus text.
    public func scrape() async throws(StormError) -> PrometheusExposition {
        let body = try await scrapeBody()
        do {
            return try PrometheusTextParser.parse(body)
        } catch {
            throw StormError(.protocolViolation, "\(endpoint)\(path) is not Prometheus text: \(error)")
        }
    }

    /// Closes the kept-alive connection.
    public func close() async {
        await client.close()
    }
}
