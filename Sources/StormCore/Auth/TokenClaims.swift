import Foundation

/// The claims of a STORM connection token (docs/protocol.md, "Authentication").
///
/// Registered claims: `sub` (the user id, required), `exp` (required), `nbf`, `iat`, `aud` (a string or an
/// array), `iss`. STORM's own claims sit under one `storm` object so they never collide with an identity
/// provider's: `{"sub": ["chat.*"], "pub": ["chat.*"], "admin": true}`, the channel patterns the holder
/// may subscribe to and publish to (`*`, `prefix.*`, or an exact name; absent means none) and whether it
/// may use the admin API.
///
/// Times are NumericDates: whole or fractional seconds since 1970 are read (jwt-kit writes fractions),
/// whole seconds are written, as most libraries (PyJWT among them) expect.
public struct TokenClaims: Codable, Sendable, Equatable {
    public struct Grants: Codable, Sendable, Equatable {
        public var subscribe: [String]?
        public var publish: [String]?
        public var admin: Bool?
        /// Channels the connection is subscribed to at connect time, with no subscribe request
        /// (`storm.channels`; each still checked against the grants and the channel rules).
        public var channels: [String]?

        public init(subscribe: [String]? = nil, publish: [String]? = nil, admin: Bool? = nil, channels: [String]? = nil) {
            self.subscribe = subscribe
            self.publish = publish
            self.admin = admin
            self.channels = channels
        }

        enum CodingKeys: String, CodingKey {
            case subscribe = "sub"
            case publish = "pub"
            case admin
            case channels
        }
    }

    /// The NumericDates a token may carry: 1970 to the end of year 9999. RFC 7519 allows fractions
    /// (jwt-kit writes them), so those are read; anything outside this range (1e300, -1e300, which JSON
    /// numbers can be) is refused before any integer conversion, which would otherwise trap.
    public static let numericDateRange: ClosedRange<Double> = 0...253_402_300_799

    public var subject: String?
    public var expires: Double?
    public var notBefore: Double?
    public var issuedAt: Double?
    public var audience: [String]?
    public var issuer: String?
    public var storm: Grants?

    public init(
        subject: String?, expires: Double?, notBefore: Double? = nil, issuedAt: Double? = nil, audience: [String]? = nil, issuer: String? = nil,
        storm: Grants? = nil
    ) {
        self.subject = subject
        self.expires = expires
        self.notBefore = notBefore
        self.issuedAt = issuedAt
        self.audience = audience
        self.issuer = issuer
        self.storm = storm
    }

    enum CodingKeys: String, CodingKey {
        case subject = "sub"
        case expires = "exp"
        case notBefore = "nbf"
        case issuedAt = "iat"
        case audience = "aud"
        case issuer = "iss"
        case storm
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        subject = try container.decodeIfPresent(String.self, forKey: .subject)
        expires = try container.decodeIfPresent(Double.self, forKey: .expires)
        notBefore = try container.decodeIfPresent(Double.self, forKey: .notBefore)
        issuedAt = try container.decodeIfPresent(Double.self, forKey: .issuedAt)
        if let single = try? container.decodeIfPresent(String.self, forKey: .audience) {
            audience = [single]
        } else {
            audience = try container.decodeIfPresent([String].self, forKey: .audience)
        }
        issuer = try container.decodeIfPresent(String.self, forKey: .issuer)
        storm = try container.decodeIfPresent(Grants.self, forKey: .storm)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encodeIfPresent(subject, forKey: .subject)
        try container.encodeIfPresent(expires.map(Self.wholeSeconds), forKey: .expires)
        try container.encodeIfPresent(notBefore.map(Self.wholeSeconds), forKey: .notBefore)
        try container.encodeIfPresent(issuedAt.map(Self.wholeSeconds), forKey: .issuedAt)
        if let audience {
            if audience.count == 1 { try container.encode(audience[0], forKey: .audience) } else { try container.encode(audience, forKey: .audience) }
        }
        try container.encodeIfPresent(issuer, forKey: .issuer)
        try container.encodeIfPresent(storm, forKey: .storm)
    }

    /// A NumericDate as whole seconds, clamped into `numericDateRange` (never a trapping conversion:
    /// claims decoded from a token can hold any JSON number, NaN excepted).
    public static func wholeSeconds(_ value: Double) -> Int64 {
        guard value.isFinite else { return value > 0 ? Int64(numericDateRange.upperBound) : 0 }
        return Int64(min(max(value, numericDateRange.lowerBound), numericDateRange.upperBound).rounded(.down))
    }

    /// The claims as pretty JSON, for `stormctl token check`.
    public var prettyJSON: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return (try? encoder.encode(self)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
    }
}
