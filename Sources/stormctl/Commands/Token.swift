import ArgumentParser
import Foundation
import StormCore

extension Stormctl {
    /// `stormctl token issue|check`: connection tokens made and inspected offline, from the key.
    struct Token: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Issue and check connection tokens offline, from the signing key.",
            discussion: """
                The key comes from --secret-file or STORM_JWT_SECRET (HS256, at least 32 bytes), or \
                --private-key (RSA, EC P-256 or Ed25519 PEM, for RS256, ES256, EdDSA). Claims are \
                described in docs/protocol.md, "Authentication".

                Examples:
                  stormctl token issue --user alice --subscribe 'chat.*' --publish 'chat.*' --ttl 1h --secret-file /etc/storm/jwt.secret
                  stormctl token issue --user ops --admin --ttl 15m --private-key ops.pem --kid 2026-11
                  stormctl token check "$TOKEN" --secret-file /etc/storm/jwt.secret

                \(ExitStatus.helpText)
                """,
            subcommands: [Issue.self, Check.self]
        )

        struct KeyOptions: ParsableArguments {
            @Option(name: .long, help: ArgumentHelp("File with the HS256 secret ([KID=]FILE; default: $STORM_JWT_SECRET).", valueName: "[kid=]file"))
            var secretFile: String?
        }

        struct Issue: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Print a signed token for a user.")

            @Option(name: .long, help: ArgumentHelp("The user (the sub claim).", valueName: "id")) var user: String
            @Option(name: .long, help: ArgumentHelp("Channel pattern the token may subscribe to (*, chat.*, exact); repeatable.", valueName: "pattern"))
            var subscribe: [String] = []
            @Option(name: .long, help: ArgumentHelp("Channel pattern the token may publish to; repeatable.", valueName: "pattern"))
            var publish: [String] = []
            @Option(name: .long, help: ArgumentHelp("Channel the connection is subscribed to at connect (storm.channels); repeatable.", valueName: "channel"))
            var channel: [String] = []
            @Option(name: .long, help: ArgumentHelp("Lifetime: 90s, 15m, 1h, 7d.", valueName: "duration")) var ttl = "1h"
            @Option(name: .long, help: ArgumentHelp("Key id written in the header (selects the gateway's key).", valueName: "kid")) var kid: String?
            @Flag(name: .long, help: "Grant the admin API (storm.admin).") var admin = false
            @Option(name: .long, help: ArgumentHelp("aud claim.", valueName: "aud")) var audience: String?
            @Option(name: .long, help: ArgumentHelp("iss claim.", valueName: "iss")) var issuer: String?
            @OptionGroup var key: KeyOptions
            @Option(name: .long, help: ArgumentHelp("PEM private key (RSA, EC P-256, Ed25519).", valueName: "file")) var privateKey: String?
            @Flag(name: .long, help: "Print the token and its claims as JSON.") var json = false

            func run() async throws {
                try await reportingFailures {
                    let seconds = try TokenCommands.parseTTL(ttl)
                    for pattern in subscribe + publish { try TokenCommands.validatePattern(pattern) }
                    for name in channel { _ = try ChannelName(validating: name) }
                    let source = try TokenCommands.keySource(secretFile: key.secretFile, pemFile: privateKey, kid: kid, signing: true)
                    let ring = try await TokenKeyring.load([source], signing: true)
                    let now = Date().timeIntervalSince1970.rounded(.down)
                    let claims = TokenClaims(
                        subject: user, expires: now + seconds, notBefore: nil, issuedAt: now, audience: audience.map { [$0] }, issuer: issuer,
                        storm: .init(
                            subscribe: subscribe.isEmpty ? nil : subscribe, publish: publish.isEmpty ? nil : publish, admin: admin ? true : nil,
                            channels: channel.isEmpty ? nil : channel))
                    let token = try ring.sign(claims, kid: kid)
                    if json {
                        StandardOutput.write("{\"token\":\(JSONWriter.quoted(token)),\"claims\":\(claims.prettyJSON.replacingOccurrences(of: "\n", with: "").replacingOccurrences(of: "  ", with: ""))}\n")
                    } else {
                        StandardOutput.write(token + "\n")
                    }
                }
            }
        }

        struct Check: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Print a token's claims and whether it is valid, and why not.",
                discussion: "With no key, the signature is not checked (the claims and times are). Exit 0 when valid, 77 when not.")

            @Argument(help: "The token, or - to read it from standard input (keeps it out of argv).") var token: String
            @OptionGroup var key: KeyOptions
            @Option(name: .long, help: ArgumentHelp("PEM public key ([KID=]FILE) to verify the signature with.", valueName: "[kid=]file")) var publicKey: String?
            @Option(name: .long, help: ArgumentHelp("Audience the token must list.", valueName: "aud")) var audience: String?
            @Option(name: .long, help: ArgumentHelp("Issuer the token must name.", valueName: "iss")) var issuer: String?
            @Flag(name: .long, help: "Machine-readable JSON output.") var json = false

            func run() async throws {
                try await reportingFailures {
                    var text = token
                    if text == "-" {
                        text = String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self)
                    }
                    text = text.trimmingCharacters(in: .whitespacesAndNewlines)
                    let decoded: (header: TokenKeyring.Header, claims: TokenClaims, signingInput: [UInt8], signature: [UInt8])
                    do throws(TokenRejection) {
                        decoded = try TokenKeyring.decode(text)
                    } catch {
                        return try report(header: nil, claims: nil, verdict: error, signatureChecked: false)
                    }
                    let expectations = TokenKeyring.Expectations(audience: audience, issuer: issuer)
                    let haveKey = key.secretFile != nil || publicKey != nil || ProcessInfo.processInfo.environment["STORM_JWT_SECRET"].map { !$0.isEmpty } == true
                    var verdict: TokenRejection?
                    if haveKey {
                        let source = try TokenCommands.keySource(secretFile: key.secretFile, pemFile: publicKey, kid: nil, signing: false)
                        var ring = try await TokenKeyring.load([source])
                        if let kid = decoded.header.kid { ring = try await TokenKeyring.load([TokenKeySource(kid: kid, material: source.material, origin: source.origin)]) }
                        do throws(TokenRejection) { _ = try ring.verify(text, expectations) } catch { verdict = error }
                    } else {
                        if decoded.header.algorithm.lowercased() == "none" {
                            verdict = TokenRejection(.algNone, "unsigned token (alg none): never accepted")
                        } else {
                            do throws(TokenRejection) { try TokenKeyring.check(decoded.claims, expectations) } catch { verdict = error }
                        }
                    }
                    try report(header: decoded.header, claims: decoded.claims, verdict: verdict, signatureChecked: haveKey)
                }
            }

            private func report(header: TokenKeyring.Header?, claims: TokenClaims?, verdict: TokenRejection?, signatureChecked: Bool) throws {
                if json {
                    var out = "{\"valid\":\(verdict == nil),\"signature_checked\":\(signatureChecked)"
                    if let verdict { out += ",\"reason\":\(JSONWriter.quoted(verdict.reason.rawValue)),\"message\":\(JSONWriter.quoted(verdict.message))" }
                    if let header { out += ",\"alg\":\(JSONWriter.quoted(header.algorithm))" + (header.kid.map { ",\"kid\":\(JSONWriter.quoted($0))" } ?? "") }
                    if let claims { out += ",\"claims\":" + claims.prettyJSON.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.joined() }
                    StandardOutput.write(out + "}\n")
                } else {
                    if let header { StandardOutput.write("header: alg \(header.algorithm)\(header.kid.map { ", kid \($0)" } ?? "")\n") }
                    if let claims {
                        StandardOutput.write("claims: \(claims.prettyJSON)\n")
                        if let exp = claims.expires {
                            let left = Int(exp - Date().timeIntervalSince1970)
                            StandardOutput.write("expires: \(Date(timeIntervalSince1970: exp)) (\(left >= 0 ? "in \(left) s" : "\(-left) s ago"))\n")
                        }
                    }
                    if let verdict {
                        StandardOutput.write("NOT VALID (\(verdict.reason.rawValue)): \(verdict.message)\n")
                    } else {
                        StandardOutput.write(signatureChecked ? "valid\n" : "valid claims; signature NOT checked (give --secret-file, STORM_JWT_SECRET or --public-key)\n")
                    }
                }
                if verdict != nil { throw ExitCode(ExitStatus.noPermission) }
            }
        }
    }
}

/// Helpers of `stormctl token`.
enum TokenCommands {
    /// `90s`, `15m`, `1h`, `7d` or plain seconds.
    static func parseTTL(_ text: String) throws(StormError) -> Double {
        let units: [(String, Double)] = [("s", 1), ("m", 60), ("h", 3600), ("d", 86400)]
        for (suffix, scale) in units where text.hasSuffix(suffix) {
            if let value = Double(text.dropLast()), value > 0 { return value * scale }
        }
        if let value = Double(text), value > 0 { return value }
        throw StormError(.configuration, "--ttl '\(text)' is not a duration (90s, 15m, 1h, 7d)")
    }

    static func validatePattern(_ pattern: String) throws(StormError) {
        if pattern == "*" { return }
        let name = pattern.hasSuffix(".*") ? String(pattern.dropLast(2)) : pattern
        do {
            _ = try ChannelName(validating: name)
        } catch {
            throw StormError(.configuration, "'\(pattern)' is not a channel pattern (*, chat.*, or an exact name)")
        }
    }

    /// The key: a PEM file, else `--secret-file`, else `STORM_JWT_SECRET`.
    static func keySource(secretFile: String?, pemFile: String?, kid: String?, signing: Bool) throws(StormError) -> TokenKeySource {
        if let pemFile {
            var source = try TokenKeySource.load(spec: pemFile, secret: false, origin: signing ? "--private-key" : "--public-key")
            if let kid { source.kid = kid }
            return source
        }
        if let secretFile {
            var source = try TokenKeySource.load(spec: secretFile, secret: true, origin: "--secret-file")
            if let kid { source.kid = kid }
            return source
        }
        if let secret = ProcessInfo.processInfo.environment["STORM_JWT_SECRET"], !secret.isEmpty {
            return try TokenKeySource.fromSecret(Array(secret.utf8), kid: kid, origin: "STORM_JWT_SECRET")
        }
        throw StormError(.configuration, "no key: give --secret-file FILE, STORM_JWT_SECRET, or --\(signing ? "private" : "public")-key FILE")
    }
}
