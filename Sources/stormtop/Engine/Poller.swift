import Foundation
import StormCore

/// Polls every gateway's `/metrics` into a `DashboardStore`.
///
/// Each gateway has its own loop and its own deadline (`timeout`), so a slow or dead gateway delays only
/// its own row; the screen reads the store and never waits for a poll.
struct Poller: Sendable {
    let store: DashboardStore
    let scrapers: [PrometheusScraper]
    /// Seconds between polls of one gateway (and between sparkline samples).
    let interval: Double
    private let clock = ContinuousClock()
    private let started: ContinuousClock.Instant

    init(store: DashboardStore, interval: Double, timeout: Double) {
        self.store = store
        self.interval = interval
        self.scrapers = store.targets.map { PrometheusScraper(endpoint: $0.endpoint, timeoutSeconds: timeout) }
        self.started = ContinuousClock.now
    }

    /// Monotonic seconds since the poller was made.
    var elapsed: Double {
        let duration = started.duration(to: clock.now)
        return Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }

    /// Polls one gateway once and records the outcome.
    func poll(_ index: Int) async {
        let result: Result<ScrapeSample, StormError>
        do {
            let exposition = try await scrapers[index].scrape()
            result = .success(ScrapeSample(exposition: exposition, elapsed: elapsed, wallClock: Date().timeIntervalSince1970))
        } catch {
            result = .failure(error)
        }
        store.record(index, result)
    }

    /// Polls every gateway once, concurrently, and returns when all have answered or timed out.
    func pollAll() async {
        await withTaskGroup(of: Void.self) { group in
            for index in scrapers.indices {
                group.addTask { await poll(index) }
            }
        }
    }

    /// Polls each gateway every `interval` and samples the sparkline, until the task is cancelled.
    func run() async {
        await withTaskGroup(of: Void.self) { group in
            for index in scrapers.indices {
                group.addTask {
                    while !Task.isCancelled {
                        let due = clock.now + .seconds(interval)
                        await poll(index)
                        // A poll that took longer than the interval is followed at once by the next.
                        try? await Task.sleep(until: due, clock: clock)
                    }
                }
            }
            group.addTask {
                var due = clock.now + .seconds(interval)
                while !Task.isCancelled {
                    try? await Task.sleep(until: due, clock: clock)
                    store.sampleHistory()
                    due = due + .seconds(interval)
                    if due < clock.now { due = clock.now + .seconds(interval) }
                }
            }
        }
    }

    func close() async {
        for scraper in scrapers { await scraper.close() }
    }
}
