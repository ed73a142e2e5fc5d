import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import StormCore
import StormTestSupport
import Testing

@testable import StormBroker
@testable import StormConfiguration
@testable import StormConsumer
@testable import StormGateway
@testable import StormNATS
@testable import StormObservability
@testable import StormPresence
@testable import StormStore

// MARK: - Configuration (plain code, no network)

@Suite("TLS configuration")
struct TLSConfigurationTests {
    private func configuration(_ flags: [Setting: String]) throws(StormError) -> GatewayConfiguration {
        try GatewayConfiguration(sources: ConfigurationSources(flags: flags))
    }

    private func configurationError(_ flags: [Setting: String]) -> String {
        do {
            _ = try configuration(flags)
            return ""
        } catch {
            #expect(error.code == .configuration)
            return error.message
        }
    }

    @Test("the default is plain HTTP with no TLS files")
    func defaultIsPlain() throws {
        let plain = try configuration([:])
        #expect(!plain.tls.enabled)
        #expect(plain.tls == TLSSettings())
        #expect(plain.plainTextWarning == nil, "loopback without TLS needs no warning")
    }

    @Test("a certificate without its key, or a key without its certificate, is refused, naming the missing flag")
    func bothOrNeither() throws {
        let pki = try TestPKI()
        let server = try pki.issue("server", serial: "01")
        #expect(configurationError([.tlsCert: server.certificate]).contains("--tls-key"))
        #expect(configurationError([.tlsKey: server.key]).contains("--tls-cert"))
        let both = try configuration([.tlsCert: server.certificate, .tlsKey: server.key])
        #expect(both.tls.enabled)
        #expect(both.rendered().contains("tls-cert = \(server.certificate)"))
        #expect(both.rendered().contains("tls-key = \(server.key)"))
    }

    @Test("a missing or unreadable file is refused with its path and origin")
    func missingFiles() throws {
        let message = configurationError([.tlsCert: "/nonexistent/cert.pem", .tlsKey: "/nonexistent/key.pem"])
        #expect(message.contains("/nonexistent/cert.pem") && message.contains("does not exist") && message.contains("--tls-cert"))
        #expect(configurationError([.tlsCert: "/tmp", .tlsKey: "/tmp"]).contains("not a readable file"))
    }

    @Test("the NATS TLS files need --nats, and a client certificate needs its key")
    func natsFiles() throws {
        let pki = try TestPKI()
        let client = try pki.issue("client", serial: "02")
        #expect(configurationError([.natsCA: pki.caCertificate]).contains("--nats"))
        #expect(configurationError([.nats: "tls://127.0.0.1:4222", .natsCert: client.certificate]).contains("--nats-key"))
        #expect(configurationError([.nats: "tls://127.0.0.1:4222", .natsKey: client.key]).contains("--nats-cert"))
        let secure = try configuration([.nats: "tls://127.0.0.1:4222", .natsCA: pki.caCertificate, .natsCert: client.certificate, .natsKey: client.key])
        #expect(secure.tls.nats == NATSTLSFiles(caFile: pki.caCertificate, certificateFile: client.certificate, keyFile: client.key))
        #expect(secure.rendered().contains("nats-ca = \(pki.caCertificate)"))
    }

    @Test("environment variables and config file keys are read too")
    func otherSources() throws {
        let pki = try TestPKI()
        let server = try pki.issue("server", serial: "03")
        #expect(Setting.tlsCert.environmentVariable == "STORM_TLS_CERT")
        #expect(Setting.tlsKey.environmentVariable == "STORM_TLS_KEY")
        #expect(Setting.natsCA.environmentVariable == "STORM_NATS_CA")
        let fromEnvironment = try GatewayConfiguration(sources: ConfigurationSources(environment: ["STORM_TLS_CERT": server.certificate, "STORM_TLS_KEY": server.key]))
        #expect(fromEnvironment.tls.certificateFile == server.certificate)
        let file = pki.path("storm.conf")
        try "tls-cert = \(server.certificate)\ntls-key = \(server.key)\n".write(toFile: file, atomically: true, encoding: .utf8)
        let fromFile = try GatewayConfiguration(sources: ConfigurationSources(fileValues: try ConfigurationSources.parseFile(at: file)))
        #expect(fromFile.tls.keyFile == server.key)
    }

    @Test("a non-loopback listen without TLS warns, naming --tls-cert; with TLS it does not")
    func plainTextWarning() throws {
        let exposed = try configuration([.listen: "0.0.0.0:8080", .insecure: "on"])
        #expect(exposed.plainTextWarning?.contains("--tls-cert") == true)
        let pki = try TestPKI()
        let server = try pki.issue("server", serial: "04")
        let secured = try configuration([.listen: "0.0.0.0:8080", .insecure: "on", .tlsCert: server.certificate, .tlsKey: server.key])
        #expect(secured.plainTextWarning == nil)
    }

    @Test("tls:// URLs or a CA make the NATS connection secure; plain nats:// alone does not")
    func natsSecure() {
        #expect(NATSTLSFiles().isSecure(urls: ["tls://a:4222"]))
        #expect(!NATSTLSFiles().isSecure(urls: ["nats://a:4222"]))
        #expect(NATSTLSFiles(caFile: "/ca.pem").isSecure(urls: ["nats://a:4222"]))
    }

    @Test("a file that is not a certificate, or a key that does not fit the certificate, is a configuration error")
    func badFiles() throws {
        let pki = try TestPKI()
        let a = try pki.issue("a", serial: "05")
        let b = try pki.issue("b", serial: "06")
        let garbage = pki.path("garbage.pem")
        try "not a certificate\n".write(toFile: garbage, atomically: true, encoding: .utf8)
        for (cert, key, expected) in [(garbage, a.key, "--tls-cert"), (a.certificate, garbage, "--tls-key"), (a.certificate, b.key, "does not fit")] {
            do {
                _ = try TLSCertificateStore.makeContext(certificateFile: cert, keyFile: key)
                Issue.record("\(cert) with \(key) must be refused")
            } catch {
                #expect(error.code == .configuration)
                #expect(error.message.contains(expected), "\(error.message)")
            }
        }
        let loaded = try TLSCertificateStore.makeContext(certificateFile: a.certificate, keyFile: a.key)
        #expect(loaded.serial == "05")
    }
}

// MARK: - A gateway serving TLS

/// Collects what a streaming client receives, from its event loop, for the test task to read.
final class CollectingDelegate: StormStreamDelegate, Sendable {
    private let texts = NIOLockedValueBox<[String]>([])
    func streamDidReceive(text: ByteBuffer) { texts.withLockedValue { $0.append(String(buffer: text)) } }
    func streamDidClose(error: StormError?) {}
    var received: [String] { texts.withLockedValue { $0 } }

    /// Waits (bounded) until some text contains `needle`.
    func waitFor(_ needle: String, seconds: Int = 30) async -> Bool {
        let deadline = ContinuousClock.now + .seconds(seconds)
        while ContinuousClock.now < deadline {
            if received.contains(where: { $0.contains(needle) }) { return true }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return false
    }
}

/// Fulfils `done` when the TLS handshake completes, fails it when the handshake or connection fails.
private final class HandshakeWaiter: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    private let done: EventLoopPromise<Void>

    init(done: EventLoopPromise<Void>) { self.done = done }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? TLSUserEvent, case .handshakeCompleted = event { done.succeed() }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        done.fail(error)
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        done.fail(StormError(.connection, "the connection closed before the TLS handshake completed"))
        context.fireChannelInactive()
    }
}

/// TLS handshakes below StormCore's clients, to look at what the gateway presents.
enum TLSProbe {
    /// Handshakes with the gateway on `port` as `localhost` and returns the certificate it presented
    /// (verified against `trust`), or throws why the handshake failed. Bounded: 30 s.
    static func peerCertificate(port: Int, trust: String, configure: (inout TLSConfiguration) -> Void = { _ in }) async throws -> NIOSSLCertificate? {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.trustRoots = .file(trust)
        configure(&configuration)
        let context = try NIOSSLContext(configuration: configuration)
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let done = loop.makePromise(of: Void.self)
        let timeout = loop.scheduleTask(in: .seconds(30)) { done.fail(StormError(.connection, "no TLS handshake within 30 s")) }
        defer { timeout.cancel() }
        let channel = try await ClientBootstrap(group: loop)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: context, serverHostname: "localhost"))
                    try channel.pipeline.syncOperations.addHandler(HandshakeWaiter(done: done))
                }
            }
            .connect(host: "127.0.0.1", port: port).get()
        defer { channel.close(promise: nil) }
        try await done.futureResult.get()
        return try await channel.nioSSL_peerCertificate().get()
    }
}

func hex(_ bytes: [UInt8]) -> String {
    bytes.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
}

@Suite("TLS gateway: HTTPS, WSS and SSE over TLS")
struct TLSGatewayTests {
    private static func startGateway(certificate: String, key: String) async throws -> Gateway {
        try await TestGateway.start { configuration in
            configuration.tls.certificateFile = certificate
            configuration.tls.keyFile = key
        }
    }

    private static func endpoint(_ gateway: Gateway, ca: String?) throws -> StormEndpoint {
        var endpoint = try StormEndpoint(url: "https://localhost:\(gateway.port)")
        endpoint.caCertificateFile = ca
        return endpoint
    }

    @Test("GET /healthz and POST /publish over HTTPS, verified against the test CA")
    func https() async throws {
        let pki = try TestPKI()
        let server = try pki.issue("server", serial: "10")
        let gateway = try await Self.startGateway(certificate: server.certificate, key: server.key)
        try await cleaningUp({ await gateway.stop() }) {
            let client = StormHTTPClient(endpoint: try Self.endpoint(gateway, ca: pki.caCertificate))
            let health = try await client.request(path: "/healthz")
            #expect(health.status == 200)
            let reply = try await client.publish(channel: try ChannelName(validating: "tls.http"), payload: Array(#"{"n":1}"#.utf8))
            #expect(String(decoding: reply, as: UTF8.self).contains("\"id\""))
            await client.close()
            // By IP address: the certificate's IP SAN 127.0.0.1 is what is checked.
            var byAddress = try StormEndpoint(url: "https://127.0.0.1:\(gateway.port)")
            byAddress.caCertificateFile = pki.caCertificate
            let direct = StormHTTPClient(endpoint: byAddress)
            #expect(try await direct.request(path: "/healthz").status == 200)
            await direct.close()
        }
    }

    @Test("a WSS subscriber and an SSE subscriber over TLS receive a message published over HTTPS")
    func streams() async throws {
        let pki = try TestPKI()
        let server = try pki.issue("server", serial: "11")
        let gateway = try await Self.startGateway(certificate: server.certificate, key: server.key)
        try await cleaningUp({ await gateway.stop() }) {
            let endpoint = try Self.endpoint(gateway, ca: pki.caCertificate)
            let room = try ChannelName(validating: "tls.room")

            let wsInbox = CollectingDelegate()
            let ws = try await StormWebSocketClient.connect(to: endpoint, delegate: { _ in wsInbox })
            try await ws.send(text: #"{"id":1,"op":"subscribe","channels":["tls.room"]}"#)
            #expect(await wsInbox.waitFor("\"reply\""), "no subscribe reply over WSS: \(wsInbox.received)")

            let sseInbox = CollectingDelegate()
            let sse = try await StormSSEClient.connect(to: endpoint, channels: [room], delegate: { _ in sseInbox })

            let client = StormHTTPClient(endpoint: endpoint)
            _ = try await client.publish(channel: room, payload: Array(#"{"hello":"tls"}"#.utf8))
            #expect(await wsInbox.waitFor("\"hello\""), "WSS subscriber got: \(wsInbox.received)")
            #expect(await sseInbox.waitFor("\"hello\""), "SSE subscriber got: \(sseInbox.received)")
            await client.close()
            await ws.close()
            await sse.close()
        }
    }

    @Test("a client that does not trust the CA fails verification; a plain HTTP request gets no answer")
    func untrusted() async throws {
        let pki = try TestPKI()
        let server = try pki.issue("server", serial: "12")
        let gateway = try await Self.startGateway(certificate: server.certificate, key: server.key)
        try await cleaningUp({ await gateway.stop() }) {
            let stranger = StormHTTPClient(endpoint: try Self.endpoint(gateway, ca: nil))
            do {
                _ = try await stranger.request(path: "/healthz", timeout: .seconds(30))
                Issue.record("a client without the test CA must not complete the handshake")
            } catch let error as StormError {
                #expect(error.code == .connection, "\(error.message)")
                #expect(error.message.contains("--cacert"), "the message should name the fix: \(error.message)")
            } catch {
                Issue.record("not a StormError: \(error)")
            }
            await stranger.close()
            // Another CA's trust store fails the same way.
            let other = try TestPKI(name: "other CA")
            await #expect(throws: (any Error).self) { _ = try await TLSProbe.peerCertificate(port: gateway.port, trust: other.caCertificate) }
            // Clear text on the TLS port is not served.
            let plain = try await RawConnection.connect(port: gateway.port)
            try await plain.send("GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            let answer = try await plain.readUntilClosed()
            #expect(!String(decoding: answer, as: UTF8.self).contains("200 OK"))
        }
    }

    @Test("a TLS 1.1 client is refused; TLS 1.2 and 1.3 are accepted")
    func minimumVersion() async throws {
        let pki = try TestPKI()
        let server = try pki.issue("server", serial: "13")
        let gateway = try await Self.startGateway(certificate: server.certificate, key: server.key)
        try await cleaningUp({ await gateway.stop() }) {
            await #expect(throws: (any Error).self) {
                _ = try await TLSProbe.peerCertificate(port: gateway.port, trust: pki.caCertificate) {
                    $0.minimumTLSVersion = .tlsv1
                    $0.maximumTLSVersion = .tlsv11
                }
            }
            for version in [TLSVersion.tlsv12, .tlsv13] {
                let certificate = try await TLSProbe.peerCertificate(port: gateway.port, trust: pki.caCertificate) {
                    $0.minimumTLSVersion = version
                    $0.maximumTLSVersion = version
                }
                #expect(certificate.map { hex($0.serialNumber) } == "13")
            }
        }
    }

    @Test("reload: new connections get the new certificate, an open WSS connection keeps delivering, a bad reload changes nothing")
    func reload() async throws {
        let pki = try TestPKI()
        let a = try pki.issue("a", serial: "0a")
        let b = try pki.issue("b", serial: "0b")
        let certificate = pki.path("served.pem")
        let key = pki.path("served.key")
        func serve(_ files: (certificate: String, key: String)) throws {
            for (from, to) in [(files.certificate, certificate), (files.key, key)] {
                try? FileManager.default.removeItem(atPath: to)
                try FileManager.default.copyItem(atPath: from, toPath: to)
            }
        }
        try serve(a)
        let gateway = try await Self.startGateway(certificate: certificate, key: key)
        try await cleaningUp({ await gateway.stop() }) {
            let endpoint = try Self.endpoint(gateway, ca: pki.caCertificate)
            #expect(hex(try await TLSProbe.peerCertificate(port: gateway.port, trust: pki.caCertificate)?.serialNumber ?? []) == "0a")

            let inbox = CollectingDelegate()
            let ws = try await StormWebSocketClient.connect(to: endpoint, delegate: { _ in inbox })
            try await ws.send(text: #"{"id":1,"op":"subscribe","channels":["tls.reload"]}"#)
            #expect(await inbox.waitFor("\"reply\""))

            try serve(b)
            // What the SIGHUP handler calls.
            #expect(gateway.tls?.reload() == nil)
            #expect(gateway.tls?.currentSerial == "0b")
            #expect(hex(try await TLSProbe.peerCertificate(port: gateway.port, trust: pki.caCertificate)?.serialNumber ?? []) == "0b")

            let client = StormHTTPClient(endpoint: endpoint)
            _ = try await client.publish(channel: try ChannelName(validating: "tls.reload"), payload: Array(#"{"after":"reload"}"#.utf8))
            #expect(await inbox.waitFor("\"after\""), "the WSS connection opened before the reload must still deliver: \(inbox.received)")

            // A half-written key: the reload fails, and the certificate in use stays.
            try "-----BEGIN PRIVATE KEY-----\ntruncated\n".write(toFile: key, atomically: true, encoding: .utf8)
            #expect(gateway.tls?.reload()?.code == .configuration)
            // A key that does not fit the certificate: the same.
            try serve((b.certificate, a.key))
            #expect(gateway.tls?.reload() != nil)
            #expect(hex(try await TLSProbe.peerCertificate(port: gateway.port, trust: pki.caCertificate)?.serialNumber ?? []) == "0b")
            #expect(try await client.request(path: "/healthz").status == 200)
            await client.close()
            await ws.close()
        }
    }
}

// MARK: - NATS over TLS

@Suite(
    "NATS over TLS (a private nats-server with tls {})",
    .enabled(if: NATSTestEnvironment.shouldRun, "STORM_TEST_NATS_URL is not set: run ./scripts/test to start nats-server"))
struct NATSTLSTests {
    @Test("a broker connects to tls://127.0.0.1:PORT with --nats-ca, publishes and receives; without the CA it is refused")
    func publishAndReceive() async throws {
        let binary = try NATSTestEnvironment.requireServerBinary()
        let pki = try TestPKI()
        let server = try pki.issue("nats", serial: "20")
        let port = try await unusedPort()
        let config = pki.path("nats.conf")
        try """
            listen: 127.0.0.1:\(port)
            tls {
              cert_file: "\(server.certificate)"
              key_file: "\(server.key)"
            }
            """.write(toFile: config, atomically: true, encoding: .utf8)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = ["-c", config]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        defer {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        let deadline = ContinuousClock.now + .seconds(30)
        while ContinuousClock.now < deadline, !(await acceptsConnections(port: port)) { try await Task.sleep(for: .milliseconds(50)) }

        var logger = Logger(label: "storm.test.nats-tls")
        logger.logLevel = .warning
        var configuration = NATSBrokerConfiguration(urls: ["tls://127.0.0.1:\(port)"], subjectPrefix: "storm.test.tls", connectionName: "tls")
        configuration.jetStream = nil
        configuration.retryOnFailedConnect = false
        configuration.tls = NATSTLSFiles(caFile: pki.caCertificate)
        let broker = NATSBroker(configuration: configuration, logger: logger)
        try await broker.start()
        let room = try ChannelName(validating: "tls.nats")
        let received = NIOLockedValueBox<[String]>([])
        let subscription = try await broker.subscribe(to: room) { buffer, _ in received.withLockedValue { $0.append(String(buffer: buffer)) } }
        _ = try await broker.publish(ByteBuffer(string: #"{"over":"tls"}"#), on: room)
        let until = ContinuousClock.now + .seconds(30)
        while ContinuousClock.now < until, received.withLockedValue({ $0.isEmpty }) { try await Task.sleep(for: .milliseconds(20)) }
        #expect(received.withLockedValue { $0 } == [#"{"over":"tls"}"#])
        _ = subscription
        await broker.shutdown()

        // Without the test CA (system trust only) the server's certificate does not verify.
        configuration.tls = NATSTLSFiles()
        let untrusting = NATSBroker(configuration: configuration, logger: logger)
        await #expect(throws: StormError.self) { try await untrusting.start() }
        await untrusting.shutdown()
    }
}

// MARK: - PostgreSQL: sslmode passes through to libpq

@Suite("PostgreSQL TLS parameters")
struct PostgresTLSParameterTests {
    @Test("sslmode and sslrootcert survive the configuration unchanged, in URI and keyword form, and in --print-config")
    func passThrough() throws {
        for url in [
            "postgresql://storm@db.example.com:5432/storm?sslmode=verify-full&sslrootcert=/etc/storm/tls/pg-ca.pem",
            "host=db.example.com dbname=storm sslmode=verify-full sslrootcert=/etc/storm/tls/pg-ca.pem",
        ] {
            let configuration = try GatewayConfiguration(sources: ConfigurationSources(flags: [.postgres: url]))
            #expect(configuration.store.postgresURL == url)
            #expect(configuration.rendered().contains("postgres = \(url)"))
        }
        let secret = "postgresql://storm:hunter2@db/storm?sslmode=require&sslrootcert=/ca.pem"
        #expect(redactedPostgresConnectionString(secret) == "postgresql://storm:***@db/storm?sslmode=require&sslrootcert=/ca.pem")
    }

    @Test("libpq receives sslmode: require against the test server (no TLS) is refused for SSL, disable connects")
    func reachesLibpq() async throws {
        guard PostgresTestEnvironment.shouldRun else { return }
        let url = try PostgresTestEnvironment.requireURL()
        let separator = url.contains("?") ? "&" : "?"
        let logger = PostgresTestEnvironment.logger("sslmode")
        let plain = PostgresConnection(conninfo: url + separator + "sslmode=disable", logger: logger)
        try plain.connect()
        plain.close()
        let required = PostgresConnection(conninfo: url + separator + "sslmode=require", logger: logger)
        do {
            try required.connect()
            required.close()
            // A test server with TLS on would accept; ./scripts/test starts one without.
            Issue.record("sslmode=require was accepted by a server started without TLS: was the parameter dropped?")
        } catch {
            #expect(error.message.contains("SSL"), "\(error.message)")
        }
    }
}
