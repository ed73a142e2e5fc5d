import Foundation
import StormConfiguration
import StormCore
import StormNATS

/// TLS for the listener (HTTPS and WSS) and for the connection to NATS. Checked here, in plain code, so a
/// bad combination fails at start (exit 78) and `--check-config` catches it; the files themselves are
/// parsed when the gateway starts (`TLSCertificateStore`), and again on every SIGHUP.
///
/// - `certificateFile` (`--tls-cert FILE`, `STORM_TLS_CERT`, none): the PEM certificate chain the gateway
///   presents, leaf first. With it, the listener speaks only TLS (1.2 or newer, ALPN `http/1.1`).
/// - `keyFile` (`--tls-key FILE`, `STORM_TLS_KEY`, none): the PEM private key of that certificate. Both or
///   neither.
/// - `nats` (`--nats-ca`, `--nats-cert`, `--nats-key`): see `NATSTLSFiles`.
package struct TLSSettings: Sendable, Equatable {
    package var certificateFile: String?
    package var keyFile: String?
    package var nats = NATSTLSFiles()

    /// The listener speaks TLS.
    package var enabled: Bool { certificateFile != nil }

    package init() {}

    package init(sources: ConfigurationSources, natsURLs: [String]) throws(StormError) {
        let cert = sources.value(.tlsCert).flatMap(Self.nonEmpty)
        let key = sources.value(.tlsKey).flatMap(Self.nonEmpty)
        switch (cert, key) {
        case (nil, nil): break
        case (let cert?, nil):
            throw StormError(.configuration, "\(cert.origin) is set but --tls-key (STORM_TLS_KEY) is not: TLS needs both the certificate and its private key")
        case (nil, let key?):
            throw StormError(.configuration, "\(key.origin) is set but --tls-cert (STORM_TLS_CERT) is not: TLS needs both the certificate and its private key")
        case (let cert?, let key?):
            certificateFile = try Self.readableFile(cert, what: "TLS certificate")
            keyFile = try Self.readableFile(key, what: "TLS private key")
        }

        let ca = sources.value(.natsCA).flatMap(Self.nonEmpty)
        let natsCert = sources.value(.natsCert).flatMap(Self.nonEmpty)
        let natsKey = sources.value(.natsKey).flatMap(Self.nonEmpty)
        if natsURLs.isEmpty, let first = ca ?? natsCert ?? natsKey {
            throw StormError(.configuration, "\(first.origin) is set but --nats is not: the NATS TLS files apply only to a NATS connection")
        }
        if let ca { nats.caFile = try Self.readableFile(ca, what: "NATS CA certificate") }
        switch (natsCert, natsKey) {
        case (nil, nil): break
        case (let cert?, nil):
            throw StormError(.configuration, "\(cert.origin) is set but --nats-key (STORM_NATS_KEY) is not: a NATS client certificate needs its private key")
        case (nil, let key?):
            throw StormError(.configuration, "\(key.origin) is set but --nats-cert (STORM_NATS_CERT) is not: a NATS client key needs its certificate")
        case (let cert?, let key?):
            nats.certificateFile = try Self.readableFile(cert, what: "NATS client certificate")
            nats.keyFile = try Self.readableFile(key, what: "NATS client key")
        }
    }

    /// `--print-config` lines.
    package var rendered: String {
        """
        tls-cert = \(certificateFile ?? "")
        tls-key = \(keyFile ?? "")
        nats-ca = \(nats.caFile ?? "")
        nats-cert = \(nats.certificateFile ?? "")
        nats-key = \(nats.keyFile ?? "")
        """
    }

    private static func nonEmpty(_ value: ConfigurationSources.Value) -> ConfigurationSources.Value? {
        value.value.isEmpty ? nil : value
    }

    private static func readableFile(_ value: ConfigurationSources.Value, what: String) throws(StormError) -> String {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: value.value, isDirectory: &isDirectory) else {
            throw StormError(.configuration, "\(value.origin): \(what) file '\(value.value)' does not exist")
        }
        guard !isDirectory.boolValue, FileManager.default.isReadableFile(atPath: value.value) else {
            throw StormError(.configuration, "\(value.origin): \(what) file '\(value.value)' is not a readable file")
        }
        return value.value
    }
}

