import Foundation
import StormCore
import StormDashboard
import Synchronization

/// The signal that asked stormtop to stop, 0 while none has. The handler only stores here (an atomic
/// store is async-signal-safe); the screen loop notices within one tick and restores the terminal.
let receivedSignal = Atomic<Int32>(0)

/// The interactive screen: draws the store's latest frame every tick and applies keys.
///
/// Curses is not thread-safe, so every curses call happens here on the main thread; the pollers run on
/// Swift's concurrency pool and only write to the store.
struct Dashboard {
    let store: DashboardStore
    let poller: Poller
    let interval: Double
    let colours: Bool
    /// `--replay`: the recorded frames, shown one per `interval` instead of polling.
    var replay: [DashboardFrame]? = nil
    /// The screen's tick: the longest a key or a new poll result waits to be shown.
    static let tickMilliseconds: Int32 = 200

    /// Runs until `q` or a signal; returns the exit status (0, or 128 + the signal).
    func run() throws(TerminalError) -> Int32 {
        // Before curses starts, so that ncurses (which only installs its own handlers where none is
        // set) leaves SIGINT/SIGTERM to us and we restore the terminal ourselves.
        for signalNumber in [SIGINT, SIGTERM, SIGHUP] {
            signal(signalNumber) { receivedSignal.store($0, ordering: .relaxed) }
        }
        let terminal = Terminal()
        try terminal.start(colours: colours, refreshMilliseconds: Self.tickMilliseconds)
        defer { terminal.stop() }
        let polling = replay == nil ? Task.detached { [poller] in await poller.run() } : nil
        defer { polling?.cancel() }
        let clock = ContinuousClock()
        var replayIndex = 0
        var replayShown = clock.now

        var state = poller.presence == nil ? ViewState() : ViewState.withPresenceChannels()
        var frozen: DashboardFrame?
        while true {
            let signalNumber = receivedSignal.load(ordering: .relaxed)
            if signalNumber != 0 { return 128 + signalNumber }
            var frame: DashboardFrame
            if let replay, !replay.isEmpty {
                if !state.paused, replayShown.duration(to: clock.now) >= .seconds(interval), replayIndex < replay.count - 1 {
                    replayIndex += 1
                    replayShown = clock.now
                }
                frame = replay[min(replayIndex, replay.count - 1)]
                frame.replayPosition = "replay \(replayIndex + 1)/\(replay.count)"
            } else {
                let live = store.frame(wallClock: Date().timeIntervalSince1970)
                if state.paused {
                    if frozen == nil { frozen = live }
                } else {
                    frozen = nil
                }
                frame = frozen ?? live
            }
            let rowCount = Layout.rowCount(frame, state: state)
            let pageSize = Layout.pageSize(rows: terminal.rows, view: state.view)
            state.clampScroll(pageSize: pageSize, rowCount: rowCount)
            terminal.clear()
            Layout.render(frame, state: state, interval: interval, on: terminal)
            terminal.present()

            guard let key = terminal.readKey() else { continue }
            if key == .resize {
                terminal.forceRepaint()
                continue
            }
            switch state.handle(key, pageSize: pageSize, rowCount: rowCount) {
            case .quit: return 0
            case .step(let steps):
                if let replay { replayIndex = max(0, min(replay.count - 1, replayIndex + steps)) }
                replayShown = clock.now
            case .none: break
            }
        }
    }
}

/// Runs async work from the synchronous command and waits for its result.
///
/// The command stays synchronous because the curses loop must own the main thread; batch mode and the
/// pollers are async and run on the concurrency pool meanwhile. `fallback` is only returned if the
/// task ended without storing a value, which cannot happen; it keeps the path free of force unwraps.
func runBlocking<T: Sendable>(orElse fallback: T, _ body: @escaping @Sendable () async -> T) -> T {
    let done = DispatchSemaphore(value: 0)
    let result = Mutex<T?>(nil)
    Task.detached {
        let value = await body()
        result.withLock { $0 = value }
        done.signal()
    }
    done.wait()
    return result.withLock { $0 } ?? fallback
}
