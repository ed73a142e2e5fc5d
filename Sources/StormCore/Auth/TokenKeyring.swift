import Foundation
import JWTKit

/// The signature algorithms STORM accepts; each key is bound to exactly one, so a token whose header
/// names another algorithm is refused before any signature check (no algorithm confusion, no `none`).
public enum TokenAlgorithm: String, Sendable, CaseIterable {
    case hs256 = "HS256"
    case rs256 = "RS256"
    case es256 = "ES256"
    case edDSA = "EdDSA"
}

/// Why a token was refused. The raw values are the fixed label set of `storm_auth_failures_total{reason}`.
public enum TokenRejectionReason: String, Sendable, CaseIterable {
    case missing
    case malformed
    case algNone = "alg_none"
    case algMismatch = "alg_mismatch"
    case unknownKID = "unknown_kid"
    case badSignature = "bad_signature"
    case expired
    case notYetValid = "not_yet_valid"
    case audience
    case issuer
    case missingClaim = "missing_claim"
    case disabled
    case wrongUser = "wrong_user"
}

/// A refused token: the reason (for the metric) and a message for the client that never contains the
/// token itself.
public struct TokenRejection: Error, Sendable, Equatable, CustomStringConvertible {
    public var reason: TokenRejectionReason
    public var message: String

    public init(_ reason: TokenRejectionReason, _ message: String) {
        self.reason = reason
        self.message = message
    }

    public var description: String { message }
    public var stormError: StormError { StormError(.unauthorized, message) }
}

/// Key material before it becomes a jwt-kit key: an HS256 secret or a PEM file's text, with an optional
/// key id (`kid`) and where it came from (for error messages; never the secret).
public struct TokenKeySource: Sendable {
    public enum Material: Sendable {
        case secret([UInt8])
        case pem(String)
    }

    public var kid: String?
    public var material: Material
    public var origin: String

    public init(kid: String?, material: Material, origin: String) {
        self.kid = kid
        self.material = material
        self.origin = origin
    }

    /// The shortest HS256 secret accepted: the size of the SHA-256 output (RFC 7518 section 3.2).
    /// jwt-kit 5.8 only asserts this (a trap in debug builds, silence in release), so it is checked here.
    public static let minimumSecretBytes = 32

    /// `[KID=]FILE`: splits off a key id when the part before `=` contains no `/`.
    public static func splitKID(_ spec: String) -> (kid: String?, path: String) {
        if let equals = spec.firstIndex(of: "="), !spec[..<equals].contains("/"), equals != spec.startIndex {
            return (String(spec[..<equals]), String(spec[spec.index(after: equals)...]))
        }
        return (nil, spec)
    }

    /// Reads `[KID=]FILE` holding an HS256 secret (trailing newline ignored) or a PEM key.
    public static func load(spec: String, secret: Bool, origin: String) throws(StormError) -> TokenKeySource {
        let (kid, path) = splitKID(spec)
        guard let data = FileManager.default.contents(atPath: path) else {
            throw StormError(.configuration, "\(origin): cannot read key file '\(path)' (check the path and its permissions)")
        }
        if secret {
            var bytes = Array(data)
            while let last = bytes.last, last == UInt8(ascii: "\n") || last == UInt8(ascii: "\r") { bytes.removeLast() }
            return try fromSecret(bytes, kid: kid, origin: "\(origin) '\(path)'")
        }
        return TokenKeySource(kid: kid, material: .pem(String(decoding: data, as: UTF8.self)), origin: "\(origin) '\(path)'")
    }

    public static func fromSecret(_ bytes: [UInt8], kid: String?, origin: String) throws(StormError) -> TokenKeySource {
        guard bytes.count >= minimumSecretBytes else {
            throw StormError(
                .configuration,
                "\(origin): the HS256 secret is \(bytes.count) bytes; at least \(minimumSecretBytes) are needed (for example: head -c 48 /dev/urandom | base64 > secret)")
        }
        return TokenKeySource(kid: kid, material: .secret(bytes), origin: origin)
    }
}

/// A set of verification (or signing) keys, each bound to one algorithm and optionally a `kid`, over
/// jwt-kit's algorithms. Verification is synchronous once loaded, so event loops can call it directly.
///
/// Key selection: a token with a `kid` uses that key only (an unknown `kid` is refused: rotation adds the
/// new key first, then issues tokens with its `kid`); a token without `kid` is tried against every key of
/// its algorithm.
public struct TokenKeyring: Sendable {
    public struct Key: Sendable {
        public var kid: String?
        public var algorithm: TokenAlgorithm
        public var origin: String
        let jwt: any JWTAlgorithm
    }

    public private(set) var keys: [Key] = []

    public init() {}

    public var isEmpty: Bool { keys.isEmpty }

    /// Turns sources into jwt-kit keys. `signing` reads PEM files as private keys (for `stormctl token
    /// issue`), else as public keys.
    public static func load(_ sources: [TokenKeySource], signing: Bool = false) async throws(StormError) -> TokenKeyring {
        var ring = TokenKeyring()
        for source in sources {
            if let kid = source.kid, ring.keys.contains(where: { $0.kid == kid }) {
                throw StormError(.configuration, "\(source.origin): key id '\(kid)' is used twice")
            }
            let collection = JWTKeyCollection()
            let algorithm: TokenAlgorithm
            switch source.material {
            case .secret(let bytes):
                guard bytes.count >= TokenKeySource.minimumSecretBytes else {
                    throw StormError(.configuration, "\(source.origin): the HS256 secret is shorter than \(TokenKeySource.minimumSecretBytes) bytes")
                }
                await collection.add(hmac: HMACKey(from: bytes), digestAlgorithm: .sha256)
                algorithm = .hs256
            case .pem(let text):
                if signing {
                    if let key = try? Insecure.RSA.PrivateKey(pem: text) {
                        await collection.add(rsa: key, digestAlgorithm: .sha256)
                        algorithm = .rs256
                    } else if let key = try? ES256PrivateKey(pem: text) {
                        await collection.add(ecdsa: key)
                        algorithm = .es256
                    } else if let key = try? EdDSA.PrivateKey(pem: text) {
                        await collection.add(eddsa: key)
                        algorithm = .edDSA
                    } else {
                        throw StormError(.configuration, "\(source.origin) is not a PEM private key of a kind STORM signs with (RSA 2048+ bits, EC P-256, Ed25519)")
                    }
                } else {
                    if let key = try? Insecure.RSA.PublicKey(pem: text) {
                        await collection.add(rsa: key, digestAlgorithm: .sha256)
                        algorithm = .rs256
                    } else if let key = try? ES256PublicKey(pem: text) {
                        await collection.add(ecdsa: key)
                        algorithm = .es256
                    } else if let key = try? EdDSA.PublicKey(pem: text) {
                        await collection.add(eddsa: key)
                        algorithm = .edDSA
                    } else {
                        throw StormError(
                            .configuration,
                            "\(source.origin) is not a PEM public key of a kind STORM verifies (RSA 2048+ bits, EC P-256, Ed25519; 'openssl pkey -pubout' prints one)")
                    }
                }
            }
            let jwt: any JWTAlgorithm
            do {
                jwt = try await collection.getKey()
            } catch {
                throw StormError(.configuration, "\(source.origin): jwt-kit refused the key: \(error)")
            }
            ring.keys.append(Key(kid: source.kid, algorithm: algorithm, origin: source.origin, jwt: jwt))
        }
        return ring
    }

    /// What a token's header says, read without trusting it.
    public struct Header: Sendable, Equatable {
        public var algorithm: String
        public var kid: String?
    }

    /// Splits and decodes a compact JWS; throws `malformed` for anything that is not one.
    public static func decode(_ token: String) throws(TokenRejection) -> (header: Header, claims: TokenClaims, signingInput: [UInt8], signature: [UInt8]) {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, token.utf8.count <= 16 * 1024 else {
            throw TokenRejection(.malformed, "token is malformed: expected a JWT (three base64url parts separated by dots)")
        }
        guard let headerBytes = base64URLDecode(parts[0]), let payloadBytes = base64URLDecode(parts[1]), let signature = base64URLDecode(parts[2]) else {
            throw TokenRejection(.malformed, "token is malformed: a part is not base64url")
        }
        guard let header = try? JSONDecoder().decode(TokenHeader.self, from: Data(headerBytes)) else {
            throw TokenRejection(.malformed, "token is malformed: its header is not a JSON object with an 'alg'")
        }
        let alg = header.alg
        let kid = header.kid
        let claims: TokenClaims
        do {
            claims = try JSONDecoder().decode(TokenClaims.self, from: Data(payloadBytes))
        } catch {
            throw TokenRejection(.malformed, "token is malformed: its claims are not a JSON object of the expected types (sub: string, exp/nbf/iat: numbers, storm: {sub, pub, admin})")
        }
        let signingInput = Array(parts[0].utf8) + [UInt8(ascii: ".")] + Array(parts[1].utf8)
        return (Header(algorithm: alg, kid: kid), claims, signingInput, signature)
    }

    /// What verification checks besides the signature.
    public struct Expectations: Sendable {
        public var audience: String?
        public var issuer: String?
        public var now: Date

        public init(audience: String? = nil, issuer: String? = nil, now: Date = Date()) {
            self.audience = audience
            self.issuer = issuer
            self.now = now
        }
    }

    /// Verifies a token: header, key, signature, then claims. The first failure wins.
    public func verify(_ token: String, _ expect: Expectations = .init()) throws(TokenRejection) -> TokenClaims {
        let decoded = try Self.decode(token)
        let alg = decoded.header.algorithm
        if alg.lowercased() == "none" {
            throw TokenRejection(.algNone, "token refused: unsigned tokens (alg none) are never accepted")
        }
        guard let algorithm = TokenAlgorithm(rawValue: alg) else {
            throw TokenRejection(.algMismatch, "token refused: algorithm '\(alg.prefix(16))' is not one STORM accepts (HS256, RS256, ES256, EdDSA)")
        }
        let candidates: [Key]
        if let kid = decoded.header.kid {
            guard let key = keys.first(where: { $0.kid == kid }) else {
                throw TokenRejection(.unknownKID, "token refused: unknown key id '\(kid.prefix(64))' (the gateway knows: \(knownKIDs))")
            }
            guard key.algorithm == algorithm else {
                throw TokenRejection(.algMismatch, "token refused: it says \(alg) but key '\(kid.prefix(64))' is \(key.algorithm.rawValue)")
            }
            candidates = [key]
        } else {
            candidates = keys.filter { $0.algorithm == algorithm }
            guard !candidates.isEmpty else {
                throw TokenRejection(.algMismatch, "token refused: it says \(alg) but the gateway has no \(alg) key (it has: \(Set(keys.map(\.algorithm.rawValue)).sorted().joined(separator: ", ")))")
            }
        }
        let signed = candidates.contains { key in (try? key.jwt.verify(decoded.signature, signs: decoded.signingInput)) == true }
        guard signed else {
            throw TokenRejection(.badSignature, "token refused: its signature does not verify with the gateway's \(alg) key")
        }
        try Self.check(decoded.claims, expect)
        return decoded.claims
    }

    /// The claim checks alone (also used by `stormctl token check` to say why a token is not valid).
    public static func check(_ claims: TokenClaims, _ expect: Expectations) throws(TokenRejection) {
        let now = expect.now.timeIntervalSince1970
        guard let subject = claims.subject, !subject.isEmpty else {
            throw TokenRejection(.missingClaim, "token refused: it has no 'sub' (user) claim")
        }
        guard let expires = claims.expires else {
            throw TokenRejection(.missingClaim, "token refused: it has no 'exp' claim; STORM requires tokens to expire")
        }
        // Before any arithmetic or integer conversion: a signed token may still carry exp = 1e300 or -1e300.
        for (name, value) in [("exp", claims.expires), ("nbf", claims.notBefore), ("iat", claims.issuedAt)] {
            if let value, !TokenClaims.numericDateRange.contains(value) {
                throw TokenRejection(
                    .malformed,
                    "token refused: its '\(name)' claim is not a time STORM accepts (a NumericDate: seconds since 1970, from 0 to \(Int64(TokenClaims.numericDateRange.upperBound)), the end of year 9999)"
                )
            }
        }
        guard expires > now else {
            throw TokenRejection(.expired, "token expired \(Int(now - expires)) s ago: get a new one")
        }
        if let notBefore = claims.notBefore, notBefore > now {
            throw TokenRejection(.notYetValid, "token is not valid for another \(Int((notBefore - now).rounded(.up))) s (nbf)")
        }
        if let issuedAt = claims.issuedAt, issuedAt > now + 1 {
            throw TokenRejection(.notYetValid, "token was issued \(Int((issuedAt - now).rounded(.up))) s in the future (iat): check the issuer's clock")
        }
        if let audience = expect.audience, !(claims.audience ?? []).contains(audience) {
            throw TokenRejection(.audience, "token refused: its audience (aud) does not include '\(audience)'")
        }
        if let issuer = expect.issuer, claims.issuer != issuer {
            throw TokenRejection(.issuer, "token refused: its issuer (iss) is not '\(issuer)'")
        }
    }

    private var knownKIDs: String {
        let kids = keys.compactMap(\.kid)
        return kids.isEmpty ? "none" : kids.joined(separator: ", ")
    }

    /// Signs `claims` with the key named `kid` (or the only key). Header: `alg`, `typ`, and `kid` when set.
    public func sign(_ claims: TokenClaims, kid: String?) throws(StormError) -> String {
        let key: Key
        if let kid {
            guard let found = keys.first(where: { $0.kid == kid }) else { throw StormError(.configuration, "no signing key has id '\(kid)'") }
            key = found
        } else {
            guard keys.count == 1, let only = keys.first else { throw StormError(.configuration, "several signing keys: choose one with --kid") }
            key = only
        }
        var header: [String: String] = ["alg": key.algorithm.rawValue, "typ": "JWT"]
        if let kid = kid ?? key.kid { header["kid"] = kid }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        do {
            let headerPart = Self.base64URLEncode(Array(try encoder.encode(header)))
            let payloadPart = Self.base64URLEncode(Array(try encoder.encode(claims)))
            let input = Array("\(headerPart).\(payloadPart)".utf8)
            let signature = try key.jwt.sign(input)
            return "\(headerPart).\(payloadPart).\(Self.base64URLEncode(signature))"
        } catch {
            throw StormError(.internalError, "cannot sign the token: \(error)")
        }
    }

    public static func base64URLEncode(_ bytes: [UInt8]) -> String {
        Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    public static func base64URLDecode(_ text: Substring) -> [UInt8]? {
        guard text.utf8.allSatisfy({ $0.isBase64URL }) else { return nil }
        var base64 = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while base64.utf8.count % 4 != 0 { base64 += "=" }
        return Data(base64Encoded: base64).map(Array.init)
    }
}

extension UInt8 {
    fileprivate var isBase64URL: Bool {
        (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(self) || (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(self)
            || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(self) || self == UInt8(ascii: "-") || self == UInt8(ascii: "_")
    }
}

/// The JOSE header fields the keyring chooses a key by.
private struct TokenHeader: Decodable {
    var alg: String
    var kid: String?
}
