import Logging
import NIOConcurrencyHelpers
import NIOSSL
import StormCore

/// The listener's TLS context, swapped whole on reload (SIGHUP) so certificates rotate without dropping a
/// connection.
///
/// Each accepted connection takes the context current at that moment (`current`, read in the child
/// channel initializer) and keeps it for its lifetime; a reload builds a new `NIOSSLContext` from the files
/// and swaps it in under a lock. A reload that fails (a file unreadable or half written, a key that does not
/// match the certificate) is logged and changes nothing: the old context keeps serving.
///
/// Settings: TLS 1.2 minimum, ALPN `http/1.1` (the gateway speaks HTTP/1.1 and WebSocket over it).
package final class TLSCertificateStore: Sendable {
    package let certificateFile: String
    package let keyFile: String
    private let logger: Logger
    private let context = NIOLockedValueBox<(context: NIOSSLContext, serial: String)?>(nil)

    package init(certificateFile: String, keyFile: String, logger: Logger) {
        self.certificateFile = certificateFile
        self.keyFile = keyFile
        self.logger = logger
    }

    /// The context new connections use; nil before `load()`.
    package var current: NIOSSLContext? { context.withLockedValue { $0?.context } }

    /// The serial number (hex) of the leaf certificate being served, for logs and tests.
    package var currentSerial: String? { context.withLockedValue { $0?.serial } }

    /// Loads the files at start: a failure is a configuration error (stormd exits 78).
    package func load() throws(StormError) {
        let loaded = try Self.makeContext(certificateFile: certificateFile, keyFile: keyFile)
        context.withLockedValue { $0 = loaded }
        logger.info("TLS on", metadata: ["storm.tls.cert": "\(certificateFile)", "storm.tls.serial": "\(loaded.serial)"])
    }

    /// Reads the files again (SIGHUP). New connections get the new certificate, open ones keep theirs. On
    /// failure the old context stays, and the error is logged and returned.
    @discardableResult
    package func reload() -> StormError? {
        do throws(StormError) {
            let loaded = try Self.makeContext(certificateFile: certificateFile, keyFile: keyFile)
            let previous = context.withLockedValue { old in
                defer { old = loaded }
                return old?.serial
            }
            logger.notice("TLS certificate reloaded", metadata: ["storm.tls.cert": "\(certificateFile)", "storm.tls.serial": "\(loaded.serial)", "storm.tls.previous_serial": "\(previous ?? "")"])
            return nil
        } catch {
            logger.error("TLS reload failed, still serving the previous certificate: \(error.message)", metadata: ["storm.tls.serial": "\(currentSerial ?? "")"])
            return error
        }
    }

    /// A server context from PEM files; throws a `.configuration` error naming the file and what is wrong.
    package static func makeContext(certificateFile: String, keyFile: String) throws(StormError) -> (context: NIOSSLContext, serial: String) {
        let chain: [NIOSSLCertificate]
        do {
            chain = try NIOSSLCertificate.fromPEMFile(certificateFile)
        } catch {
            throw StormError(.configuration, "cannot load the TLS certificate '\(certificateFile)' (--tls-cert): \(describe(error)); expected a PEM certificate chain, leaf first")
        }
        guard let leaf = chain.first else {
            throw StormError(.configuration, "the TLS certificate file '\(certificateFile)' (--tls-cert) holds no PEM certificate")
        }
        let key: NIOSSLPrivateKey
        do {
            key = try NIOSSLPrivateKey(file: keyFile, format: .pem)
        } catch {
            throw StormError(.configuration, "cannot load the TLS private key '\(keyFile)' (--tls-key): \(describe(error)); expected an unencrypted PEM key")
        }
        var configuration = TLSConfiguration.makeServerConfiguration(certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        configuration.minimumTLSVersion = .tlsv12
        configuration.applicationProtocols = ["http/1.1"]
        do {
            let context = try NIOSSLContext(configuration: configuration)
            return (context, leaf.serialNumber.map { byte in (byte < 16 ? "0" : "") + String(byte, radix: 16) }.joined())
        } catch {
            throw StormError(.configuration, "the TLS private key '\(keyFile)' does not fit the certificate '\(certificateFile)' (or either is unusable): \(describe(error))")
        }
    }

    private static func describe(_ error: any Error) -> String { "\(error)" }
}
