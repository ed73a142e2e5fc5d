import StormConfiguration
import StormCore

/// Authentication settings (one `Sendable` struct, every field with its documented default):
///
/// | key | environment | default |
/// |---|---|---|
/// | (none: environment only, so it never reaches argv or a config file) | `STORM_JWT_SECRET` | none: an HS256 secret, at least 32 bytes |
/// | `jwt-secret-file` (`[KID=]FILE`, comma list) | `STORM_JWT_SECRET_FILE` | none: HS256 secrets read from files |
/// | `jwt-public-key` (`[KID=]FILE`, repeatable / comma list) | `STORM_JWT_PUBLIC_KEY` | none: RS256, ES256 or EdDSA public keys (PEM) |
/// | `jwt-audience` | `STORM_JWT_AUDIENCE` | none: `aud` not checked |
/// | `jwt-issuer` | `STORM_JWT_ISSUER` | none: `iss` not checked |
/// | `allow-anonymous` (on/off) | `STORM_ALLOW_ANONYMOUS` | on when no key is configured, else off |
/// | `insecure` (flag) | `STORM_INSECURE` | off: a non-loopback `--listen` without any key is refused |
///
/// Configuring any key turns authentication on: then every request needs a valid token unless
/// anonymous access is allowed explicitly, and a presented token that fails is always refused.
package struct AuthConfiguration: Sendable {
    package var keys: [TokenKeySource] = []
    package var audience: String?
    package var issuer: String?
    package var allowAnonymous = true
    package var insecure = false
    /// What `--print-config` may show of the keys (file names and kinds, never secrets).
    package var keyDescriptions: [String] = []
    package var secretFiles: [String] = []
    package var publicKeyFiles: [String] = []

    package var enabled: Bool { !keys.isEmpty }

    package init() {}

    package init(sources: ConfigurationSources, listen: ListenAddress) throws(StormError) {
        if let secret = sources.environment["STORM_JWT_SECRET"], !secret.isEmpty {
            keys.append(try TokenKeySource.fromSecret(Array(secret.utf8), kid: nil, origin: "STORM_JWT_SECRET"))
        }
        if let value = sources.value(.jwtSecretFile) {
            secretFiles = Self.list(value.value)
            for spec in secretFiles { keys.append(try TokenKeySource.load(spec: spec, secret: true, origin: value.origin)) }
        }
        if let value = sources.value(.jwtPublicKey) {
            publicKeyFiles = Self.list(value.value)
            for spec in publicKeyFiles { keys.append(try TokenKeySource.load(spec: spec, secret: false, origin: value.origin)) }
        }
        if let value = sources.value(.jwtAudience), !value.value.isEmpty { audience = value.value }
        if let value = sources.value(.jwtIssuer), !value.value.isEmpty { issuer = value.value }
        allowAnonymous = !enabled
        if let value = sources.value(.allowAnonymous) {
            allowAnonymous = try ConfigurationSources.parseSwitch(value)
            if !allowAnonymous, !enabled {
                throw StormError(.configuration, "\(value.origin): allow-anonymous off needs a token key (STORM_JWT_SECRET, --jwt-secret-file or --jwt-public-key), or nobody could connect")
            }
        }
        if let value = sources.value(.insecure) { insecure = try ConfigurationSources.parseSwitch(value) }
        if !listen.isLoopback, !enabled, !insecure {
            throw StormError(
                .configuration,
                "listening on \(listen) (not loopback) with no authentication: configure a token key (STORM_JWT_SECRET, --jwt-secret-file, --jwt-public-key), or pass --insecure to let anyone on the network publish and subscribe")
        }
    }

    private static func list(_ text: String) -> [String] {
        text.split(separator: ",").map { $0.trimmingSpaces() }.filter { !$0.isEmpty }
    }

    /// `--print-config` lines: file names only.
    package var rendered: String {
        """
        jwt-secret-file = \(secretFiles.joined(separator: ","))
        jwt-public-key = \(publicKeyFiles.joined(separator: ","))
        jwt-audience = \(audience ?? "")
        jwt-issuer = \(issuer ?? "")
        allow-anonymous = \(allowAnonymous ? "on" : "off")
        insecure = \(insecure ? "on" : "off")
        # authentication: \(enabled ? "on, \(keys.count) key(s)" : "off")
        """
    }
}
