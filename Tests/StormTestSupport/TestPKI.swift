import Foundation

/// A throwaway CA and certificates, made with `openssl` in a temporary directory at test time (no key is
/// ever committed). Server certificates name `localhost` and 127.0.0.1, so clients verify them for real.
package final class TestPKI {
    package let directory: URL
    package var caCertificate: String { path("ca.pem") }

    /// `openssl`, or nil when it is not installed (./scripts/test installs it, so CI always has it).
    package static var openssl: String? {
        for candidate in ["/usr/bin/openssl", "/usr/local/bin/openssl"] where FileManager.default.isExecutableFile(atPath: candidate) {
            return candidate
        }
        return nil
    }

    package struct MissingOpenSSL: Error, CustomStringConvertible {
        package var description: String { "openssl is not installed: run ./scripts/test, which installs it (Debian package openssl)" }
    }

    package struct CommandFailed: Error, CustomStringConvertible {
        package var description: String
    }

    /// Makes a CA named `name` in a new temporary directory.
    package init(name: String = "STORM test CA") throws {
        guard Self.openssl != nil else { throw MissingOpenSSL() }
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("storm-pki-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try run(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
                 "-subj", "/CN=\(name)", "-keyout", path("ca.key"), "-out", path("ca.pem"),
                 "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
    }

    /// A server certificate for `localhost` and 127.0.0.1 with serial `serial` (hex), signed by this CA;
    /// returns the certificate and key paths, named after `name`.
    @discardableResult
    package func issue(_ name: String, serial: String, commonName: String = "localhost") throws -> (certificate: String, key: String) {
        let key = path("\(name).key")
        let request = path("\(name).csr")
        let certificate = path("\(name).pem")
        let extensions = path("\(name).ext")
        try "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\n"
            .write(toFile: extensions, atomically: true, encoding: .utf8)
        try run(["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=\(commonName)",
                 "-keyout", key, "-out", request])
        try run(["x509", "-req", "-in", request, "-CA", path("ca.pem"), "-CAkey", path("ca.key"), "-set_serial", "0x\(serial)",
                 "-days", "2", "-extfile", extensions, "-out", certificate])
        return (certificate, key)
    }

    package func path(_ file: String) -> String { directory.appendingPathComponent(file).path }

    private func run(_ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.openssl ?? "/usr/bin/openssl")
        process.arguments = arguments
        let errors = Pipe()
        process.standardOutput = FileHandle.nullDevice
        process.standardError = errors
        try process.run()
        let output = errors.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw CommandFailed(description: "openssl \(arguments.prefix(2).joined(separator: " ")) failed: \(String(decoding: output, as: UTF8.self))")
        }
    }

    deinit { try? FileManager.default.removeItem(at: directory) }
}
