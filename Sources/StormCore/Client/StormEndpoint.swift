import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import NIOTLS
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Where a STORM gateway listens, parsed once from `--server`/`STORM_URL` so every transport (HTTP, SSE,
/// WebSocket) connects to the same place and names it the same way in error messages.
public struct StormEndpoint: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: Int
    /// The bearer token every transport presents (`Authorization: Bearer`), or nil. Never printed.
    public var token: String?
    /// TLS (`https://` or `wss://`): every transport verifies the gateway's certificate and host name.
    public var usesTLS: Bool
    /// With TLS: a PEM file of CA certificates to trust besides the system's (`--cacert`,
    /// `STORM_CACERT`), for a gateway whose certificate a private CA issued. Default: the system's only.
    public var caCertificateFile: String?

    public init(host: String, port: Int, usesTLS: Bool = false) {
        self.host = host
        self.port = port
        self.usesTLS = usesTLS
    }

    /// Accepts `http://host:port`, `ws://host:port`, `https://…`, `wss://…`, `host:port` or `host`; a path,
    /// if any, is ignored. The port defaults to 80, or 443 with TLS.
    public init(url raw: String) throws(StormError) {
        var rest = Substring(raw.trimmingWhitespace())
        var usesTLS = false
        if let schemeEnd = rest.range(of: "://") {
            let scheme = rest[..<schemeEnd.lowerBound].lowercased()
            switch scheme {
            case "http", "ws": usesTLS = false
            case "https", "wss": usesTLS = true
            default:
                throw StormError(.configuration, "server URL '\(raw)' uses '\(scheme)'; expected http://, https://, ws:// or wss://")
            }
            rest = rest[schemeEnd.upperBound...]
        }
        self.usesTLS = usesTLS
        if let slash = rest.firstIndex(of: "/") { rest = rest[..<slash] }
        guard !rest.isEmpty else { throw StormError(.configuration, "server URL '\(raw)' has no host") }
        var host = rest
        var port = usesTLS ? 443 : 80
        if rest.hasPrefix("[") {  // [::1]:8080
            guard let close = rest.firstIndex(of: "]") else {
                throw StormError(.configuration, "server URL '\(raw)' has an unterminated IPv6 address")
            }
            host = rest[rest.index(after: rest.startIndex)..<close]
            let after = rest[rest.index(after: close)...]
            if after.hasPrefix(":") {
                guard let value = Int(after.dropFirst()), (1...65535).contains(value) else {
                    throw StormError(.configuration, "server URL '\(raw)' has an invalid port")
                }
                port = value
            }
        } else if let colon = rest.lastIndex(of: ":") {
            host = rest[..<colon]
            guard let value = Int(rest[rest.index(after: colon)...]), (1...65535).contains(value) else {
                throw StormError(.configuration, "server URL '\(raw)' has an invalid port")
            }
            port = value
        }
        guard !host.isEmpty else { throw StormError(.configuration, "server URL '\(raw)' has no host") }
        self.host = String(host)
        self.port = port
    }

    /// The value of the `Host` header.
    public var hostHeader: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

    /// The `Authorization` header's value when there is a token.
    public var authorization: String? { token.map { "Bearer \($0)" } }

    /// Adds `Authorization: Bearer …` when there is a token.
    public func addAuthorization(to headers: inout HTTPHeaders) {
        if let authorization, !headers.contains(name: "Authorization") { headers.add(name: "Authorization", value: authorization) }
    }

    public var description: String { "\(usesTLS ? "https" : "http")://\(hostHeader)" }
}

/// How a client connection is opened.
public struct StormConnectOptions: Sendable {
    /// Local IP address to bind before connecting (port chosen by the kernel). The bench spreads
    /// connections over 127.0.0.x this way, because one source address only has ~28,000 ephemeral ports
    /// towards a given server address. Default: none (the kernel picks).
    public var localAddress: String?
    /// How long a TCP connect (and for WebSocket, the upgrade) may take. Default: 10 s.
    public var connectTimeout: TimeAmount

    public init(localAddress: String? = nil, connectTimeout: TimeAmount = .seconds(10)) {
        self.localAddress = localAddress
        self.connectTimeout = connectTimeout
    }
}

extension StormEndpoint {
    /// Resolves the endpoint once; connecting by address avoids a resolver round trip per connection
    /// when the bench opens thousands of them.
    public func socketAddress() throws(StormError) -> SocketAddress {
        do {
            if host == "localhost" {
                return try SocketAddress(ipAddress: "127.0.0.1", port: port)
            }
            if let address = try? SocketAddress(ipAddress: host, port: port) { return address }
            return try SocketAddress.makeAddressResolvingHost(host, port: port)
        } catch {
            throw StormError(.connection, "cannot resolve \(description): \(error)")
        }
    }
}

/// `IP_BIND_ADDRESS_NO_PORT` (Linux): defers the choice of local port from `bind()` to `connect()`, so a
/// bound source address does not pin one ephemeral port per socket regardless of destination.
private let ipBindAddressNoPort = SocketOptionName(24)

enum ClientBootstraps {
    /// Connects a channel to `endpoint` on `eventLoop`, set up by `initializer`; fails with a
    /// `StormError` an operator can act on.
    static func connect(
        to endpoint: StormEndpoint, options: StormConnectOptions, on eventLoop: any EventLoop,
        initializer: @escaping @Sendable (any Channel) -> EventLoopFuture<Void>
    ) -> EventLoopFuture<any Channel> {
        let bootstrap: ClientBootstrap
        let address: SocketAddress
        do {
            bootstrap = try make(group: eventLoop, options: options)
            address = try endpoint.socketAddress()
        } catch {
            return eventLoop.makeFailedFuture(error)
        }
        let secured: @Sendable (any Channel) -> EventLoopFuture<Void> = { channel in
            do {
                try addTLS(to: channel, endpoint: endpoint)
            } catch {
                return channel.eventLoop.makeFailedFuture(error)
            }
            return initializer(channel)
        }
        return bootstrap.channelInitializer(secured).connect(to: address)
            .flatMap { channel in
                // With TLS, connected means handshaken: a refused certificate fails the connect, as itself.
                guard endpoint.usesTLS else { return channel.eventLoop.makeSucceededFuture(channel) }
                return channel.pipeline.handler(type: TLSHandshakeWaiter.self)
                    .flatMap { $0.handshake.futureResult }
                    .map { channel }
                    .flatMapError { error in
                        channel.close(promise: nil)
                        return channel.eventLoop.makeFailedFuture(error)
                    }
            }
            .flatMapErrorThrowing { error in
                throw StormError.connectionFailure(error, endpoint: endpoint)
            }
    }

    /// With an `https`/`wss` endpoint, puts the TLS client handler first in `channel`'s pipeline: the
    /// system's trust roots plus `caCertificateFile`, host name verified (an IP address against the
    /// certificate's IP SANs), TLS 1.2 or newer. Must run on the channel's event loop.
    static func addTLS(to channel: any Channel, endpoint: StormEndpoint) throws(StormError) {
        guard endpoint.usesTLS else { return }
        let context = try ClientTLSContexts.context(caFile: endpoint.caCertificateFile)
        let isAddress = (try? SocketAddress(ipAddress: endpoint.host, port: 0)) != nil
        do {
            let handler = try NIOSSLClientHandler(context: context, serverHostname: isAddress ? nil : endpoint.host)
            try channel.pipeline.syncOperations.addHandler(handler)
            try channel.pipeline.syncOperations.addHandler(TLSHandshakeWaiter(handshake: channel.eventLoop.makePromise()))
        } catch {
            throw StormError(.configuration, "cannot set up TLS to \(endpoint): \(error)")
        }
    }

    static func make(group: EventLoopGroup, options: StormConnectOptions) throws(StormError) -> ClientBootstrap {
        var bootstrap = ClientBootstrap(group: group)
            .connectTimeout(options.connectTimeout)
            .channelOption(.socketOption(.so_reuseaddr), value: 1)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            // Small first reads: NIO's default 2 KiB buffer per read is what a bench holding 100,000
            // connections allocates and frees most (glibc consolidates its heap on every request that
            // large); the buffer still grows with the traffic.
            .channelOption(.recvAllocator, value: AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 512, maximum: 1 << 16))
        if let local = options.localAddress {
            let address: SocketAddress
            do {
                address = try SocketAddress(ipAddress: local, port: 0)
            } catch {
                throw StormError(.configuration, "local address '\(local)' is not an IP address")
            }
            #if os(Linux)
            bootstrap = bootstrap.channelOption(
                ChannelOptions.Types.SocketOption(level: SocketOptionLevel(IPPROTO_IP), name: ipBindAddressNoPort),
                value: 1)
            #endif
            bootstrap = bootstrap.bind(to: address)
        }
        return bootstrap
    }
}

/// Completes `handshake` when the TLS handshake does, or fails it with the handshake's error (or the
/// connection's end); passes everything on.
final class TLSHandshakeWaiter: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    let handshake: EventLoopPromise<Void>

    init(handshake: EventLoopPromise<Void>) { self.handshake = handshake }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? TLSUserEvent, case .handshakeCompleted = event { handshake.succeed() }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        handshake.fail(error)
        context.fireErrorCaught(error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        handshake.fail(ChannelError.ioOnClosedChannel)
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        handshake.fail(ChannelError.ioOnClosedChannel)
    }
}

/// One client TLS context per trust file, made on first use: building one parses the trust store, far
/// too slow to repeat for each of the bench's connections.
enum ClientTLSContexts {
    private static let cache = Mutex<[String: NIOSSLContext]>([:])

    static func context(caFile: String?) throws(StormError) -> NIOSSLContext {
        let key = caFile ?? ""
        if let cached = cache.withLock({ $0[key] }) { return cached }
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.minimumTLSVersion = .tlsv12
        configuration.applicationProtocols = ["http/1.1"]
        if let caFile {
            do {
                let roots = try NIOSSLCertificate.fromPEMFile(caFile)
                guard !roots.isEmpty else { throw StormError(.configuration, "no PEM certificate in '\(caFile)'") }
                configuration.additionalTrustRoots = [.certificates(roots)]
            } catch let error as StormError {
                throw error
            } catch {
                throw StormError(.configuration, "cannot read the CA certificate file '\(caFile)' (--cacert, STORM_CACERT): \(error); expected PEM")
            }
        }
        let context: NIOSSLContext
        do {
            context = try NIOSSLContext(configuration: configuration)
        } catch {
            throw StormError(.configuration, "cannot set up TLS: \(error)")
        }
        return cache.withLock { cache in
            if let existing = cache[key] { return existing }
            cache[key] = context
            return context
        }
    }
}

extension StormError {
    /// Turns a socket-level failure into the message an operator needs: what we tried, what happened,
    /// and the usual fix.
    static func connectionFailure(_ error: any Error, endpoint: StormEndpoint) -> StormError {
        if let storm = error as? StormError { return storm }
        if let tls = tlsFailure(error, endpoint: endpoint) { return tls }
        let reason: String
        if let code = errnoCode(of: error) {
            reason = socketFailureReason(code)
        } else if case ChannelError.connectTimeout = error {
            reason = "connection timed out"
        } else {
            reason = "\(error)"
        }
        return StormError(
            .connection, "cannot connect to \(endpoint): \(reason) — is stormd running? (set --server or STORM_URL)")
    }

    /// A failed TLS handshake, with the usual fix: the gateway's certificate is not trusted (a private CA
    /// needs `--cacert`), names another host, or the server does not speak TLS.
    static func tlsFailure(_ error: any Error, endpoint: StormEndpoint) -> StormError? {
        guard endpoint.usesTLS, error is NIOSSLError || error is NIOSSLExtraError else { return nil }
        let text = "\(error)"
        let hint: String
        if (error as? NIOSSLExtraError) == .failedToValidateHostname {
            hint = "the gateway's certificate does not name '\(endpoint.host)'"
        } else if text.contains("CERTIFICATE_VERIFY_FAILED") {
            hint = "the gateway's certificate is not trusted: for a private CA give --cacert FILE (or STORM_CACERT)"
        } else {
            hint = "is the server speaking TLS on this port, and is its certificate valid?"
        }
        return StormError(.connection, "TLS handshake with \(endpoint) failed: \(hint) (\(text.prefix(300)))")
    }

    /// What a socket call's `errno` means for an operator, with the usual fix where there is one.
    public static func socketFailureReason(_ code: CInt) -> String {
        switch code {
        case ECONNREFUSED: "connection refused"
        case ETIMEDOUT: "connection timed out"
        case EADDRNOTAVAIL: "no local address or port available (too many connections from one source address?)"
        case EMFILE, ENFILE: "too many open files (raise the fd limit or use more processes)"
        case ECONNRESET: "connection reset by peer"
        case EHOSTUNREACH, ENETUNREACH: "host unreachable"
        default: String(cString: strerror(code))
        }
    }

    static func errnoCode(of error: any Error) -> CInt? {
        if let io = error as? IOError { return io.errnoCode }
        if let connection = error as? NIOConnectionError {
            for failure in connection.connectionErrors {
                if let code = errnoCode(of: failure.error) { return code }
            }
        }
        return nil
    }
}

extension StringProtocol {
    func trimmingWhitespace() -> Substring {
        var slice = Substring(self)
        while let first = slice.first, first.isWhitespace { slice = slice.dropFirst() }
        while let last = slice.last, last.isWhitespace { slice = slice.dropLast() }
        return slice
    }
}

/// Percent-encodes a query value, keeping only RFC 3986 unreserved bytes as they are.
public func percentEncodeQueryValue(_ value: String) -> String {
    var out = ""
    out.reserveCapacity(value.utf8.count)
    for byte in value.utf8 {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"),
            UInt8(ascii: "~"):
            out.unicodeScalars.append(Unicode.Scalar(byte))
        default:
            let hex = Array("0123456789ABCDEF".unicodeScalars)
            out.unicodeScalars.append("%")
            out.unicodeScalars.append(hex[Int(byte >> 4)])
            out.unicodeScalars.append(hex[Int(byte & 0xF)])
        }
    }
    return out
}

/// `path?name=value&…` with values percent-encoded.
public func makeRequestURI(path: String, query: [(String, String)]) -> String {
    guard !query.isEmpty else { return path }
    var uri = path + "?"
    for (index, (name, value)) in query.enumerated() {
        if index > 0 { uri += "&" }
        uri += percentEncodeQueryValue(name) + "=" + percentEncodeQueryValue(value)
    }
    return uri
}
