import StormCore

/// TLS towards NATS. nats.c speaks TLS when a URL is `tls://` or any of these files is given.
///
/// - `caFile` (`--nats-ca FILE`, `STORM_NATS_CA`, none: the system's trust store): PEM CA certificates
///   the NATS server's certificate must chain to.
/// - `certificateFile`, `keyFile` (`--nats-cert FILE`, `--nats-key FILE`, `STORM_NATS_CERT`,
///   `STORM_NATS_KEY`, none): a client certificate and key, for a server that verifies clients
///   (`tls { verify: true }`). Both or neither.
package struct NATSTLSFiles: Sendable, Equatable {
    package var caFile: String?
    package var certificateFile: String?
    package var keyFile: String?

    package init(caFile: String? = nil, certificateFile: String? = nil, keyFile: String? = nil) {
        self.caFile = caFile
        self.certificateFile = certificateFile
        self.keyFile = keyFile
    }

    /// Whether nats.c is told to require TLS for `urls`.
    package func isSecure(urls: [String]) -> Bool {
        caFile != nil || certificateFile != nil || urls.contains { $0.lowercased().hasPrefix("tls://") }
    }
}
