import Foundation
import NIOCore
import NIOHTTP1
import StormCore
import Synchronization

/// Polls every gateway's `/metrics`, and Redis when given, into a `DashboardStore`.
///
/// Each gateway has its own loop and its own deadline (`timeout`), so a slow or dead gateway delays only
/// its own row; the screen reads the store and never waits for a poll. With `--redis`, a supervisor reads
/// the registry every interval (on the reader's own queue, bounded by the same timeout) and starts a loop
/// for each gateway that appeared; the loop of a gateway that left the registry ends by itself.
package final class Poller: Sendable {
    package let store: DashboardStore
    package let presence: PresenceReader?
    /// Seconds between polls of one gateway (and between sparkline samples).
    package let interval: Double
    package let timeout: Double
    private let clock = ContinuousClock()
    private let started: ContinuousClock.Instant
    /// One kept-alive scraper per gateway, by `GatewayTarget.key`.
    private let scrapers = Mutex<[String: PrometheusScraper]>([:])
    /// Gateways whose loop runs, by key: a gateway that leaves and comes back is not polled twice.
    private let running = Mutex<Set<String>>([])
    /// One kept-alive API client per gateway (`/api/v1/channels`) and per consumer (`/readyz`), by key.
    private let clients = Mutex<[String: StormHTTPClient]>([:])
    /// Sent as `Authorization: Bearer` to `/api/v1/channels` (`STORM_TOKEN`); nil sends none.
    package let token: String?
    /// `--record`: a line per interval (interactive) or per report (batch).
    package let recorder: Recorder?

    package init(store: DashboardStore, presence: PresenceReader? = nil, interval: Double, timeout: Double, token: String? = nil, recorder: Recorder? = nil) {
        self.store = store
        self.presence = presence
        self.interval = interval
        self.timeout = timeout
        self.token = token
        self.recorder = recorder
        self.started = ContinuousClock.now
    }

    private func client(for target: GatewayTarget) -> StormHTTPClient {
        clients.withLock { clients in
            if let existing = clients[target.key] { return existing }
            let milliseconds = Int64(max(1, min(timeout * 1000, 3_600_000)))
            let made = StormHTTPClient(endpoint: target.endpoint, options: StormConnectOptions(connectTimeout: .milliseconds(milliseconds)))
            clients[target.key] = made
            return made
        }
    }

    private var timeoutAmount: TimeAmount { .milliseconds(Int64(max(1, min(timeout * 1000, 3_600_000)))) }

    /// Reads a gateway's `GET /api/v1/channels` once (the connections view).
    package func pollChannels(_ target: GatewayTarget) async {
        var headers = HTTPHeaders()
        if let token { headers.add(name: "Authorization", value: "Bearer \(token)") }
        let result: Result<ChannelSample, StormError>
        do {
            let answer = try await client(for: target).request(path: "/api/v1/channels", headers: headers, timeout: timeoutAmount)
            result = .success(try ChannelSample.decode(answer.body, elapsed: elapsed))
        } catch {
            result = .failure(error)
        }
        store.recordChannels(target, result)
    }

    /// Polls one history consumer: `/metrics`, then `/readyz`.
    package func pollConsumer(_ target: GatewayTarget) async {
        let result: Result<ScrapeSample, StormError>
        do {
            let exposition = try await scraper(for: target).scrape()
            var sample = ScrapeSample(exposition: exposition, elapsed: elapsed, wallClock: Date().timeIntervalSince1970)
            let answer = try await client(for: target).request(path: "/readyz", timeout: timeoutAmount, throwingOnErrorStatus: false)
            sample.ready = answer.status == 200
            if answer.status != 200 { sample.readyReason = StormError(httpStatus: answer.status, body: answer.body).message }
            result = .success(sample)
        } catch {
            result = .failure(error)
        }
        store.recordConsumer(target, result)
    }

    /// Monotonic seconds since the poller was made.
    package var elapsed: Double {
        let duration = started.duration(to: clock.now)
        return Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }

    private func scraper(for target: GatewayTarget) -> PrometheusScraper {
        scrapers.withLock { scrapers in
            if let existing = scrapers[target.key] { return existing }
            let made = PrometheusScraper(endpoint: target.endpoint, path: target.path, timeoutSeconds: timeout)
            scrapers[target.key] = made
            return made
        }
    }

    /// Polls one gateway once and records the outcome.
    package func poll(_ target: GatewayTarget) async {
        let result: Result<ScrapeSample, StormError>
        do {
            let exposition = try await scraper(for: target).scrape()
            result = .success(ScrapeSample(exposition: exposition, elapsed: elapsed, wallClock: Date().timeIntervalSince1970))
        } catch {
            result = .failure(error)
        }
        store.record(target, result)
    }

    /// Reads Redis once (when given), which updates the list of gateways to poll.
    package func refreshPresence() async {
        guard let presence else { return }
        store.record(await presence.read())
    }

    /// Reads Redis, then polls every gateway once, concurrently; returns when all have answered or timed out.
    package func pollAll() async {
        await refreshPresence()
        await withTaskGroup(of: Void.self) { group in
            for target in store.targets {
                group.addTask {
                    await self.poll(target)
                    await self.pollChannels(target)
                }
            }
            for target in store.consumerTargets {
                group.addTask { await self.pollConsumer(target) }
            }
        }
    }

    /// Polls each gateway every `interval`, reads Redis and samples the sparkline, until cancelled.
    package func run() async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                var due = self.clock.now + .seconds(self.interval)
                while !Task.isCancelled {
                    try? await Task.sleep(until: due, clock: self.clock)
                    self.store.sampleHistory()
                    self.recorder?.write(self.store, interval: self.interval)
                    due = due + .seconds(self.interval)
                    if due < self.clock.now { due = self.clock.now + .seconds(self.interval) }
                }
            }
            for target in store.consumerTargets {
                group.addTask {
                    while !Task.isCancelled {
                        let due = self.clock.now + .seconds(self.interval)
                        await self.pollConsumer(target)
                        try? await Task.sleep(until: due, clock: self.clock)
                    }
                }
            }
            while !Task.isCancelled {
                let due = clock.now + .seconds(interval)
                await refreshPresence()
                for target in store.targets where running.withLock({ $0.insert(target.key).inserted }) {
                    group.addTask { await self.loop(target) }
                }
                try? await Task.sleep(until: due, clock: clock)
            }
            group.cancelAll()
        }
    }

    /// One gateway's loop: ends when cancelled or when the gateway is no longer to be polled.
    private func loop(_ target: GatewayTarget) async {
        while !Task.isCancelled && store.isPolled(target) {
            let due = clock.now + .seconds(interval)
            await poll(target)
            await pollChannels(target)
            // A poll that took longer than the interval is followed at once by the next.
            try? await Task.sleep(until: due, clock: clock)
        }
        running.withLock { _ = $0.remove(target.key) }
        let scraper = scrapers.withLock { $0.removeValue(forKey: target.key) }
        await scraper?.close()
    }

    package func close() async {
        let all = scrapers.withLock { scrapers in
            defer { scrapers.removeAll() }
            return Array(scrapers.values)
        }
        for scraper in all { await scraper.close() }
        let apiClients = clients.withLock { clients in
            defer { clients.removeAll() }
            return Array(clients.values)
        }
        for client in apiClients { await client.close() }
        presence?.close()
        recorder?.close()
    }
}
