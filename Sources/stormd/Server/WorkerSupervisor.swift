import Foundation
import Logging
import StormCore
import StormWeb

/// Runs `stormd --workers N`: N copies of this program, each a full gateway with its own event loops and
/// broker connection, all listening on the same port with `SO_REUSEPORT` so the kernel spreads accepted
/// connections over them.
///
/// Why processes and not more threads: one process can hold at most about 19,900 sockets on hosts whose
/// hard open-files limit is 20,000, and several processes are also how a big host's cores are used
/// without one process's lock contention. The supervisor forwards SIGTERM/SIGINT to every worker, waits
/// for them to drain, and exits 0 when all of them did; a worker that dies unexpectedly is restarted
/// after a second.
package struct WorkerSupervisor {
    package let count: Int
    package let arguments: [String]
    package let logger: Logger

    /// Index of the worker this process is, when started by a supervisor (`STORM_WORKER_INDEX`).
    package static var currentWorkerIndex: Int? {
        ProcessInfo.processInfo.environment["STORM_WORKER_INDEX"].flatMap(Int.init)
    }

    package func run() async throws -> Int32 {
        let executable = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        let supervisor = Supervisor(executable: executable, arguments: arguments, logger: logger)
        for index in 0..<count { supervisor.start(index) }
        let signals = [SIGTERM, SIGINT].map { number -> DispatchSourceSignal in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { supervisor.stopAll(signal: number) }
            source.resume()
            return source
        }
        // SIGHUP (reload the TLS certificate) goes to every worker; the supervisor itself keeps running.
        signal(SIGHUP, SIG_IGN)
        let hangup = DispatchSource.makeSignalSource(signal: SIGHUP, queue: .global())
        hangup.setEventHandler { supervisor.forward(signal: SIGHUP) }
        hangup.resume()
        defer {
            signals.forEach { $0.cancel() }
            hangup.cancel()
        }
        return await supervisor.waitForAll()
    }

    private final class Supervisor: @unchecked Sendable {
        // @unchecked: every field is behind `lock`.
        private let lock = NSLock()
        private var processes: [Int: Process] = [:]
        private var stopping = false
        private var failures = 0
        private var finished: CheckedContinuation<Int32, Never>?
        private let executable: URL
        private let arguments: [String]
        private let logger: Logger

        init(executable: URL, arguments: [String], logger: Logger) {
            self.executable = executable
            self.arguments = arguments
            self.logger = logger
        }

        func start(_ index: Int) {
            let process = Process()
            process.executableURL = executable
            process.arguments = arguments
            var environment = ProcessInfo.processInfo.environment
            environment["STORM_WORKER_INDEX"] = String(index)
            environment["STORM_WORKERS"] = nil
            process.environment = environment
            process.terminationHandler = { [self] process in self.exited(index, status: process.terminationStatus) }
            do {
                try process.run()
                lock.withLock { processes[index] = process }
                logger.info("worker started", metadata: ["storm.worker": "\(index)", "pid": "\(process.processIdentifier)"])
            } catch {
                logger.error("cannot start worker", metadata: ["storm.worker": "\(index)", "error": "\(error)"])
                lock.withLock { failures += 1 }
            }
        }

        private func exited(_ index: Int, status: Int32) {
            // 78 (configuration) and 69 (cannot listen or reach the broker) would fail again on restart.
            let fatal = status == 78 || status == 69
            var restart = false
            var stopOthers = false
            var done: (CheckedContinuation<Int32, Never>, Int32)?
            lock.withLock {
                processes[index] = nil
                if stopping {
                    if status != 0 { failures += 1 }
                } else if fatal {
                    failures += 1
                    stopping = true
                    stopOthers = true
                } else {
                    restart = true
                }
                if stopping, processes.isEmpty, let finished {
                    self.finished = nil
                    done = (finished, failures == 0 ? 0 : 1)
                }
            }
            if restart {
                logger.error("worker exited unexpectedly; restarting it in 1 s", metadata: ["storm.worker": "\(index)", "status": "\(status)"])
                DispatchQueue.global().asyncAfter(deadline: .now() + 1) { [self] in
                    if !lock.withLock({ stopping }) { start(index) }
                }
            }
            if stopOthers {
                logger.error("worker failed to start; stopping the others", metadata: ["storm.worker": "\(index)", "status": "\(status)"])
                stopAll(signal: SIGTERM)
            }
            if let (continuation, code) = done { continuation.resume(returning: code) }
        }

        func stopAll(signal number: Int32) {
            let (running, done): ([Process], CheckedContinuation<Int32, Never>?) = lock.withLock {
                stopping = true
                if processes.isEmpty, let finished {
                    self.finished = nil
                    return ([], finished)
                }
                return (Array(processes.values), nil)
            }
            done?.resume(returning: 0)
            logger.notice("stopping \(running.count) workers")
            for process in running where process.isRunning { kill(process.processIdentifier, number) }
        }

        /// Passes a signal on to every running worker (SIGHUP: each reloads its certificate).
        func forward(signal number: Int32) {
            let running = lock.withLock { Array(processes.values) }
            for process in running where process.isRunning { kill(process.processIdentifier, number) }
        }

        func waitForAll() async -> Int32 {
            await withCheckedContinuation { continuation in
                let alreadyDone: Int32? = lock.withLock {
                    if processes.isEmpty { return failures == 0 ? 0 : 1 }
                    finished = continuation
                    return nil
                }
                if let alreadyDone { continuation.resume(returning: alreadyDone) }
            }
        }
    }
}
