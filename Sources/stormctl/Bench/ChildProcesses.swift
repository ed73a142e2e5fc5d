import Foundation
import StormCore

/// Lines a subscriber-only child bench prints on stdout, one JSON object each.
struct ChildMessage: Codable, Sendable {
    enum Phase: String, Codable, Sendable {
        case ready
        case finished
    }

    var phase: Phase
    var connect: ConnectOutcome
    var figures: SubscriberFigures?
    var cpuSeconds: Double?

    func line() -> String {
        guard let data = try? JSONEncoder().encode(self) else { return "{}\n" }
        return String(decoding: data, as: UTF8.self) + "\n"
    }
}

/// Commands the parent sends a child on its stdin: `start` when publishing begins, then
/// `drain EXPECTED SECONDS`, EXPECTED being the deliveries this child's subscribers should have (the
/// messages accepted on each channel times the child's subscribers of it). End of input means the
/// parent is gone: stop.
enum ChildCommand: Sendable, Equatable {
    case start
    case drain(expected: UInt64, seconds: Double)
    case endOfInput

    init?(line: String) {
        let words = line.split(separator: " ")
        switch words.first {
        case "start": self = .start
        case "drain" where words.count == 3:
            guard let expected = UInt64(words[1]), let seconds = Double(words[2]) else { return nil }
            self = .drain(expected: expected, seconds: seconds)
        default: return nil
        }
    }
}

/// Reads lines from a file handle on a thread of its own, so a blocking read never holds one of the
/// few threads Swift concurrency runs on.
func lines(of handle: FileHandle) -> AsyncStream<String> {
    AsyncStream { continuation in
        let thread = Thread {
            var pending: [UInt8] = []
            while true {
                let chunk = handle.availableData
                if chunk.isEmpty { break }
                pending.append(contentsOf: chunk)
                while let newline = pending.firstIndex(of: 0x0A) {
                    continuation.yield(String(decoding: pending[..<newline], as: UTF8.self))
                    pending.removeSubrange(...newline)
                }
            }
            if !pending.isEmpty { continuation.yield(String(decoding: pending, as: UTF8.self)) }
            continuation.finish()
        }
        thread.start()
    }
}

/// The subscriber-only child processes of a `--processes M` bench, driven over their stdin/stdout.
final class ChildFleet {
    struct Child {
        let process: Process
        let input: FileHandle
        var output: AsyncStream<String>.AsyncIterator
    }

    private var children: [Child] = []

    /// Starts the children; `arguments(i)` gives child i's command line (after the executable).
    init(count: Int, arguments: (Int) -> [String]) throws {
        let executable = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"))
            ?? CommandLine.arguments[0]
        for index in 0..<count {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: executable)
            process.arguments = arguments(index)
            let stdin = Pipe()
            let stdout = Pipe()
            process.standardInput = stdin
            process.standardOutput = stdout
            process.standardError = FileHandle.standardError
            try process.run()
            children.append(
                Child(process: process, input: stdin.fileHandleForWriting,
                    output: lines(of: stdout.fileHandleForReading).makeAsyncIterator()))
        }
    }

    /// Waits for every child's next message of `phase`; a child that exits first counts as failed.
    func collect(_ phase: ChildMessage.Phase) async -> [ChildMessage?] {
        var messages: [ChildMessage?] = []
        for index in children.indices {
            var found: ChildMessage?
            while let line = await children[index].output.next() {
                if let message = try? JSONDecoder().decode(ChildMessage.self, from: Data(line.utf8)),
                    message.phase == phase
                {
                    found = message
                    break
                }
            }
            messages.append(found)
        }
        return messages
    }

    func send(_ line: String) {
        for child in children {
            try? child.input.write(contentsOf: Data((line + "\n").utf8))
        }
    }

    /// Sends `line` to child `index` only.
    func send(_ line: String, to index: Int) {
        guard children.indices.contains(index) else { return }
        try? children[index].input.write(contentsOf: Data((line + "\n").utf8))
    }

    func finish() {
        for child in children {
            try? child.input.close()
        }
        for child in children {
            child.process.waitUntilExit()
        }
    }
}
