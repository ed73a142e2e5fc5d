#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Unbuffered writes to a file descriptor: every call reaches the pipe at once, so `stormctl subscribe
/// | jq` sees each message as it arrives, and binary payloads pass through byte for byte.
enum StandardOutput {
    static func write(_ bytes: [UInt8]) {
        writeAll(STDOUT_FILENO, bytes)
    }

    static func write(_ text: String) {
        writeAll(STDOUT_FILENO, Array(text.utf8))
    }
}

enum StandardError {
    static func write(_ text: String) {
        writeAll(STDERR_FILENO, Array(text.utf8))
    }
}

private func writeAll(_ descriptor: CInt, _ bytes: [UInt8]) {
    bytes.withUnsafeBytes { buffer in
        guard let base = buffer.baseAddress else { return }
        var offset = 0
        while offset < buffer.count {
            let written = write(descriptor, base + offset, buffer.count - offset)
            if written < 0 {
                if errno == EINTR { continue }
                return  // the reader went away; nothing useful left to do with the output
            }
            offset += written
        }
    }
}

/// All of standard input as bytes (binary-safe, for `publish CHANNEL -`).
func readStandardInput() -> [UInt8] {
    var out: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let count = chunk.withUnsafeMutableBytes { read(STDIN_FILENO, $0.baseAddress, $0.count) }
        if count < 0 {
            if errno == EINTR { continue }
            break
        }
        if count == 0 { break }
        out.append(contentsOf: chunk[0..<count])
    }
    return out
}
