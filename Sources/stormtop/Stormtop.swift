import ArgumentParser
import CNCursesW
import Foundation
import StormCore
import StormDashboard

/// `stormtop`: the live dashboard of a STORM cluster, and its batch mode for scripts.
///
/// It polls each gateway's Prometheus `/metrics` (never the API), so it needs no credentials and puts
/// no load on the fan-out path; rates are differences between two polls, percentiles come from the
/// histogram buckets observed between them.
///
/// Options (flags win over the environment):
/// - `--gateway URL`, repeatable: gateways to poll. Default: `STORM_GATEWAYS` (comma-separated), else
///   `http://127.0.0.1:8080` unless `--redis` is given.
/// - `--redis URL` (`STORM_REDIS_URL`): read the gateway registry and the presence data stormd writes
///   there, every poll: gateways are discovered (as well as those given) and the channels view lists
///   clients and unique users per channel. Default: none.
/// - `--redis-prefix PREFIX` (`STORM_REDIS_PREFIX`): the key prefix stormd was given. Default `storm`.
/// - `--interval SECONDS`: poll period, 0.1-3600. Default 1.
/// - `--timeout SECONDS`: deadline of one poll, connect included. Default: the interval, at least 1 s.
/// - `--consumer URL`, repeatable (`STORM_CONSUMERS`, comma-separated): history consumers to poll
///   (`/metrics` and `/readyz`) for the consumers view. Default: none.
/// - `--lag-alert N`: consumer lag (messages) that raises an alert. Default 10000.
/// - `--store-alert PERCENT`: stream fullness above which an alert shows. Default 90.
/// - `--record FILE`: append one JSON line per poll (interactive: per interval; batch: per report).
/// - `--replay FILE`: show a recording instead of polling (interactive, or batch with --once/-n/--json).
/// - `STORM_TOKEN`: sent as a bearer token to `GET /api/v1/channels` (connections view) on a gateway
///   that requires authentication; never taken from argv.
/// - `--once`, `-n COUNT`, `--json`: batch mode without curses.
/// - `--no-color` (or `NO_COLOR` set): no colours.
@main
struct Stormtop: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stormtop",
        abstract: "Live dashboard of a STORM cluster: connections, message rates, latency and drops per gateway.",
        discussion: """
            stormtop polls each gateway's Prometheus /metrics endpoint every --interval. Rates are the \
            difference between two polls divided by the time between them; p95 latencies are estimated \
            from the histogram buckets observed between them (as PromQL's histogram_quantile does). A \
            gateway that does not answer within --timeout is shown DOWN with the reason.

            Press ? in the dashboard for the keys: q quit, p or space pause, s/o sort column and order, Tab or \
            1-6 views (gateways, channels, errors, consumers, broker, connections), arrows/PgUp/PgDn scroll, / filter.

            The consumers view polls each --consumer (stormd --role consumer, or a gateway with --role all) \
            for its lag, rows/s, batch size, insert p95, failures and /readyz. The broker view shows each \
            gateway's NATS connection and the JetStream stream it samples (storm_stream_*: replicas in \
            sync and configured, leader, messages, bytes, caps, how full). The connections view lists \
            channels by deliveries/s from each gateway's GET /api/v1/channels (STORM_TOKEN is sent when \
            set), with drops and rate-limited publishes per gateway. The header lists alerts: a gateway or \
            consumer down or not ready, consumer lag at or above --lag-alert, a stream with fewer replicas \
            in sync than configured, a stream more than --store-alert percent full.

            --record FILE writes what each poll saw, one JSON line per interval (per report in batch \
            mode); --replay FILE shows it again in the same views: space pauses, Right/Left (or . and ,) \
            step one poll; with --once, -n or --json it prints the reports of the recording instead.

            With --redis (or STORM_REDIS_URL), stormtop also reads the registry and presence that stormd \
            writes to Redis, read-only, every --interval: each registered gateway is polled at its \
            advertised metrics URL (no --gateway needed), a gateway whose registry record expired leaves \
            the table, and the Channels view lists channels with presence by clients and unique users. \
            Give the same --redis-prefix as stormd.

            Batch mode (no curses), like top -b: --once prints one report, -n COUNT prints COUNT reports \
            --interval apart, as text or, with --json, one JSON object per line. Rates need two polls, \
            so the first report comes one interval after the start. --json alone means --once. The exit \
            status is 69 when no gateway answered the last poll.

            Examples:
              stormtop
              stormtop -g http://10.0.0.5:8080 -g http://10.0.0.6:8080 --interval 2
              STORM_GATEWAYS=http://a:8080,http://b:8080 stormtop
              stormtop --redis redis://10.0.0.7:6379/0
              stormtop --once
              stormtop -n 10 --json > stats.jsonl
              stormtop --consumer http://10.0.0.8:8081 --lag-alert 50000
              stormtop --redis redis://10.0.0.7:6379 --record incident.jsonl
              stormtop --replay incident.jsonl

            Exit codes: 0 on q or a completed batch, 64 for a usage error or when no terminal is \
            available, 69 when no gateway answered or --redis could not be read (batch), 128+N after signal N (the terminal is \
            restored first).
            """,
        version: "stormtop \(StormVersion.current) (\(String(cString: storm_curses_version())))"
    )

    static let defaultGateway = "http://127.0.0.1:8080"

    @Option(
        name: [.customShort("g"), .long],
        help: ArgumentHelp(
            "Gateway URL to poll; repeat for several (default: $STORM_GATEWAYS, comma-separated, else \(defaultGateway)).",
            valueName: "url"))
    var gateway: [String] = []

    @Option(
        name: .long,
        help: ArgumentHelp(
            "Redis URL (redis://HOST:PORT[/DB]) holding the cluster's gateway registry and presence (default: $STORM_REDIS_URL).",
            valueName: "url"))
    var redis: String?

    @Option(
        name: .customLong("redis-prefix"),
        help: ArgumentHelp("First part of every Redis key, as given to stormd (default: $STORM_REDIS_PREFIX, else storm).", valueName: "prefix"))
    var redisPrefix: String?

    @Option(name: [.customShort("d"), .long], help: ArgumentHelp("Seconds between polls.", valueName: "seconds"))
    var interval: Double = 1

    @Option(
        name: .long,
        help: ArgumentHelp("Seconds one poll may take before the gateway counts as down (default: the interval, at least 1).", valueName: "seconds"))
    var timeout: Double?

    @Flag(name: .long, help: "Batch mode: print one report (after two polls, one interval apart) and exit.")
    var once = false

    @Option(name: [.customShort("n"), .customLong("iterations")], help: ArgumentHelp("Batch mode: print COUNT reports, one per interval, and exit.", valueName: "count"))
    var iterations: Int?

    @Flag(name: .long, help: "Batch mode output as JSON, one object per report and line (implies --once without -n).")
    var json = false

    @Flag(name: .customLong("no-color"), help: "Do not use colours (also when NO_COLOR is set).")
    var noColor = false

    @Option(
        name: .long,
        help: ArgumentHelp("History consumer URL to poll for the consumers view; repeat for several (default: $STORM_CONSUMERS, comma-separated).", valueName: "url"))
    var consumer: [String] = []

    @Option(name: .customLong("lag-alert"), help: ArgumentHelp("Alert when a consumer's lag reaches this many messages.", valueName: "messages"))
    var lagAlert: Double = AlertThresholds().consumerLag

    @Option(name: .customLong("store-alert"), help: ArgumentHelp("Alert when the stream is more than this percent full.", valueName: "percent"))
    var storeAlert: Double = AlertThresholds().storePercent

    @Option(name: .long, help: ArgumentHelp("Write every poll to FILE, one JSON line each, for --replay.", valueName: "file"))
    var record: String?

    @Option(name: .long, help: ArgumentHelp("Show a --record file instead of polling.", valueName: "file"))
    var replay: String?

    func validate() throws {
        guard interval.isFinite, interval >= 0.1, interval <= 3600 else {
            throw ValidationError("--interval must be between 0.1 and 3600 seconds")
        }
        if let timeout, !(timeout.isFinite && timeout > 0 && timeout <= 3600) {
            throw ValidationError("--timeout must be between 0 and 3600 seconds")
        }
        if let iterations, iterations < 1 { throw ValidationError("-n must be at least 1") }
        if once, iterations != nil { throw ValidationError("--once and -n are exclusive: --once is -n 1") }
        guard lagAlert.isFinite, lagAlert >= 0 else { throw ValidationError("--lag-alert must be 0 or more messages") }
        guard storeAlert.isFinite, storeAlert >= 0, storeAlert <= 100 else { throw ValidationError("--store-alert must be a percentage, 0-100") }
        if record != nil, replay != nil { throw ValidationError("--record and --replay are exclusive") }
    }

    func run() throws {
        let environment = ProcessInfo.processInfo.environment
        func nonEmpty(_ name: String) -> String? { environment[name].flatMap { $0.isEmpty ? nil : $0 } }
        let redisURL = redis ?? nonEmpty("STORM_REDIS_URL")
        // With Redis the registry names the gateways: the local default would only add a DOWN row.
        let raw = !gateway.isEmpty ? gateway : [nonEmpty("STORM_GATEWAYS") ?? (redisURL == nil ? Self.defaultGateway : "")]
        let targets: [GatewayTarget]
        let reader: PresenceReader?
        let pollTimeout = timeout ?? max(1, interval)
        do {
            targets = try GatewayTarget.parse(raw)
            reader = try redisURL.map { url throws(StormError) in
                let prefix = redisPrefix ?? nonEmpty("STORM_REDIS_PREFIX") ?? "storm"
                guard !prefix.isEmpty, !prefix.contains(where: { $0 == " " || $0.isNewline }) else {
                    throw StormError(.configuration, "--redis-prefix '\(prefix)' must be a non-empty word, as given to stormd")
                }
                return PresenceReader(endpoint: try RedisEndpoint(url: url), prefix: prefix, timeoutSeconds: pollTimeout)
            }
        } catch {
            throw ValidationError(error.message)
        }
        let thresholds = AlertThresholds(consumerLag: lagAlert, storePercent: storeAlert)
        let colours = !noColor && (environment["NO_COLOR"] ?? "").isEmpty
        if let replay {
            let frames: [DashboardFrame]
            let recordedInterval: Double
            do throws(StormError) {
                guard let bytes = FileManager.default.contents(atPath: replay) else { throw StormError(.configuration, "--replay: cannot read \(replay)") }
                let polls = try Recording.read(Array(bytes), file: replay)
                frames = try Recording.frames(polls, thresholds: thresholds)
                recordedInterval = polls.first?.interval ?? interval
            } catch {
                throw ValidationError(error.message)
            }
            if once || iterations != nil || json {
                for (index, frame) in frames.prefix(once ? 1 : iterations ?? frames.count).enumerated() {
                    let text = json ? BatchReport.json(frame, interval: recordedInterval) : BatchReport.text(frame, interval: recordedInterval)
                    FileHandle.standardOutput.write(Data(((index > 0 && !json) ? "\n" : "").utf8) + Data(text.utf8))
                }
                return
            }
            let store = DashboardStore(targets: [], thresholds: thresholds)
            let poller = Poller(store: store, interval: interval, timeout: pollTimeout)
            let status: Int32
            do {
                status = try Dashboard(store: store, poller: poller, interval: interval, colours: colours, replay: frames).run()
            } catch {
                FileHandle.standardError.write(Data("stormtop: \(error.description)\n".utf8))
                throw ExitCode(64)
            }
            if status != 0 { throw ExitCode(status) }
            return
        }
        guard !targets.isEmpty || reader != nil else { throw ValidationError("no gateway to poll: give --gateway URL or --redis URL") }
        let consumers: [GatewayTarget]
        let recorder: Recorder?
        do {
            consumers = try GatewayTarget.parse(!consumer.isEmpty ? consumer : [nonEmpty("STORM_CONSUMERS") ?? ""])
            recorder = try record.map { path throws(StormError) in try Recorder(path: path) }
        } catch {
            throw ValidationError(error.message)
        }
        let store = DashboardStore(
            targets: targets, consumers: consumers, presence: reader.map { PresenceSnapshot(endpoint: $0.endpoint.description) }, thresholds: thresholds)
        let poller = Poller(store: store, presence: reader, interval: interval, timeout: pollTimeout, token: nonEmpty("STORM_TOKEN"), recorder: recorder)

        if once || iterations != nil || json {
            let status = Self.runBatch(poller: poller, reports: iterations ?? 1, json: json)
            if status != 0 { throw ExitCode(status) }
            return
        }
        let status: Int32
        do {
            status = try Dashboard(store: store, poller: poller, interval: interval, colours: colours).run()
        } catch {
            FileHandle.standardError.write(Data("stormtop: \(error.description)\n".utf8))
            throw ExitCode(64)
        }
        if status != 0 { throw ExitCode(status) }
    }

    /// Polls, waits an interval, polls again and prints; `reports` times. Returns the exit status.
    static func runBatch(poller: Poller, reports: Int, json: Bool) -> Int32 {
        runBlocking(orElse: 70) {
            let clock = ContinuousClock()
            let start = clock.now
            await poller.pollAll()
            var status: Int32 = 0
            for report in 1...reports {
                try? await Task.sleep(until: start + .seconds(poller.interval * Double(report)), clock: clock)
                await poller.pollAll()
                // One instant for the line and the report, so that --replay prints this very report.
                let now = Date().timeIntervalSince1970
                poller.recorder?.write(poller.store, interval: poller.interval, time: now)
                let frame = poller.store.frame(wallClock: now)
                let text = json ? BatchReport.json(frame, interval: poller.interval) : BatchReport.text(frame, interval: poller.interval)
                FileHandle.standardOutput.write(Data(((report > 1 && !json) ? "\n" : "") .utf8) + Data(text.utf8))
                let redisDown: Bool
                if case .down = frame.presence?.state { redisDown = true } else { redisDown = false }
                status = frame.cluster.gatewaysUp == 0 || redisDown ? 69 : 0
            }
            await poller.close()
            return status
        }
    }
}
