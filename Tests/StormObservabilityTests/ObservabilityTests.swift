import Foundation
import InMemoryTracing
import Logging
import NIOConcurrencyHelpers
import NIOCore
import StormCore
import StormTestSupport
import Testing
import Tracing

@testable import StormBroker
@testable import StormConfiguration
@testable import StormConsumer
@testable import StormGateway
@testable import StormNATS
@testable import StormObservability
@testable import StormPresence
@testable import StormStore

// MARK: - Helpers

/// Lines a `JSONLogHandler` wrote, kept in memory.
private final class LogCapture: Sendable {
    private let lines = NIOLockedValueBox<[String]>([])

    var sink: JSONLogHandler.Sink { { [self] line in lines.withLockedValue { $0.append(line) } } }

    var all: [String] { lines.withLockedValue { $0 } }

    /// Every line parsed as a JSON object; a line that does not parse fails the test.
    func objects() throws -> [[String: Any]] {
        try all.map { line in
            #expect(line.hasSuffix("\n"))
            #expect(!line.dropLast().contains("\n"))
            let object = try JSONSerialization.jsonObject(with: Data(line.utf8))
            return try #require(object as? [String: Any], "not a JSON object: \(line)")
        }
    }

    func logger(level: Logger.Level = .debug) -> Logger {
        var logger = Logger(label: "stormd") { [sink] label in JSONLogHandler(label: label, sink: sink) }
        logger.logLevel = level
        return logger
    }
}

/// An in-memory tracer that speaks W3C `traceparent`: swift-distributed-tracing's `InMemoryTracer` for
/// spans (32/16 hex digit ids), with `extract`/`inject` of `traceparent` as the OTLP tracer does them.
/// Each test makes its own and hands it to its gateway: nothing global is bootstrapped.
struct W3CTestTracer: Tracer {
    let inner = InMemoryTracer(
        idGenerator: .init(
            nextTraceID: { String((0..<32).map { _ in "0123456789abcdef".randomElement() ?? "0" }) },
            nextSpanID: { String((0..<16).map { _ in "0123456789abcdef".randomElement() ?? "0" }) }))

    func startSpan<Instant: TracerInstant>(
        _ operationName: String, context: @autoclosure () -> ServiceContext, ofKind kind: SpanKind, at instant: @autoclosure () -> Instant,
        function: String, file fileID: String, line: UInt
    ) -> InMemorySpan {
        inner.startSpan(operationName, context: context(), ofKind: kind, at: instant(), function: function, file: fileID, line: line)
    }

    func forceFlush() {}

    func extract<Carrier, Extract: Extractor>(_ carrier: Carrier, into context: inout ServiceContext, using extractor: Extract) where Extract.Carrier == Carrier {
        guard let parent = extractor.extract(key: "traceparent", from: carrier), TraceHeaders.isValidTraceparent(parent) else { return }
        let parts = parent.split(separator: "-")
        context.inMemorySpanContext = InMemorySpanContext(traceID: String(parts[1]), spanID: String(parts[2]), parentSpanID: nil)
    }

    func inject<Carrier, Inject: Injector>(_ context: ServiceContext, into carrier: inout Carrier, using injector: Inject) where Inject.Carrier == Carrier {
        guard let span = context.inMemorySpanContext else { return }
        injector.inject("00-\(span.traceID)-\(span.spanID)-01", forKey: "traceparent", into: &carrier)
    }

    var finishedSpans: [FinishedInMemorySpan] { inner.finishedSpans }

    /// Waits (up to 60 s: a busy machine only makes it slower) for a finished span named `name`.
    func waitForSpan(_ name: String) async throws -> FinishedInMemorySpan {
        let deadline = ContinuousClock.now + .seconds(60)
        while ContinuousClock.now < deadline {
            if let span = finishedSpans.first(where: { $0.operationName == name }) { return span }
            try await Task.sleep(for: .milliseconds(10))
        }
        throw TracerTimeout(name: name, seen: finishedSpans.map(\.operationName))
    }

    struct TracerTimeout: Error, CustomStringConvertible {
        var name: String
        var seen: [String]
        var description: String { "no finished span '\(name)' within 60 s (finished: \(seen))" }
    }
}

private func startGateway(
    broker: any MessageBroker = MemoryBroker(), logger: Logger? = nil, tracer: (any Tracer)? = nil, environment: [String: String] = [:]
) async throws -> Gateway {
    var configuration = try GatewayConfiguration(sources: ConfigurationSources(environment: environment))
    configuration.listen = .init(host: "127.0.0.1", port: 0)
    configuration.eventLoops = 2
    configuration.drainSeconds = 1
    var quiet = Logger(label: "test-gateway")
    quiet.logLevel = .warning
    let gateway = Gateway(configuration: configuration, broker: broker, logger: logger ?? quiet, tracer: tracer)
    try await gateway.start()
    return gateway
}

private let traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
private let parentSpanID = "00f067aa0ba902b7"
private let traceparent = "00-\(traceID)-\(parentSpanID)-01"

// MARK: - Logs

@Suite("Structured logs")
struct StructuredLogTests {
    @Test("a JSON line has ts (RFC 3339, ms), level, label, message, dotted metadata and source")
    func lineShape() throws {
        let capture = LogCapture()
        var logger = capture.logger(level: .info)
        logger[metadataKey: "storm.connection_id"] = "gw-c1"
        logger.info("hello \"world\"\n", metadata: ["http": ["status": "200", "method": "POST"], "list": ["a", "b"], "n": .stringConvertible(42)])
        logger.debug("not written at info")
        let objects = try capture.objects()
        #expect(objects.count == 1)
        let object = try #require(objects.first)
        let ts = try #require(object["ts"] as? String)
        #expect(ts.range(of: #"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$"#, options: .regularExpression) != nil, "ts: \(ts)")
        #expect(object["level"] as? String == "info")
        #expect(object["label"] as? String == "stormd")
        #expect(object["message"] as? String == "hello \"world\"\n")
        #expect(object["http.status"] as? String == "200")
        #expect(object["http.method"] as? String == "POST")
        #expect(object["list"] as? [String] == ["a", "b"])
        #expect(object["n"] as? String == "42")
        #expect(object["storm.connection_id"] as? String == "gw-c1")
        #expect(object["source"] as? String == "StormObservabilityTests")
    }

    @Test("RFC 3339 timestamps are UTC with milliseconds")
    func timestamps() {
        #expect(JSONLogHandler.rfc3339(seconds: 0, milliseconds: 7) == "1970-01-01T00:00:00.007Z")
        #expect(JSONLogHandler.rfc3339(seconds: 1_795_943_798, milliseconds: 123) == "2026-11-29T09:16:38.123Z")
    }

    @Test("values under secret-looking keys are redacted")
    func redaction() throws {
        let capture = LogCapture()
        let logger = capture.logger()
        logger.info("x", metadata: ["storm.auth.token": "eyJhbGciOi.secret", "Authorization": "Bearer abc", "db": ["password": "hunter2"], "storm.user": "bob"])
        let line = try #require(capture.all.first)
        #expect(!line.contains("eyJhbGciOi"))
        #expect(!line.contains("Bearer abc"))
        #expect(!line.contains("hunter2"))
        #expect(line.contains(#""storm.user":"bob""#))
        #expect(line.contains(#""db.password":"[redacted]""#))
    }

    @Test("--log-format and --otlp-endpoint are read, checked and printed")
    func configuration() throws {
        let json = try GatewayConfiguration(sources: ConfigurationSources(flags: [.logFormat: "json"]))
        #expect(json.logFormat == .json)
        #expect(json.rendered().contains("log-format = json"))
        let fromEnvironment = try GatewayConfiguration(sources: ConfigurationSources(environment: ["STORM_LOG_FORMAT": "text"]))
        #expect(fromEnvironment.logFormat == .text)
        #expect(throws: StormError.self) { try GatewayConfiguration(sources: ConfigurationSources(flags: [.logFormat: "yaml"])) }
        #expect(throws: StormError.self) { try GatewayConfiguration(sources: ConfigurationSources(flags: [.otlpEndpoint: "collector:4318"])) }
        #expect(OTLPTracing.redacted("https://user:pw@collector:4318") == "https://***@collector:4318")
        #expect(OTLPTracing.redacted("http://127.0.0.1:4318") == "http://127.0.0.1:4318")
        if OTLPTracing.isAvailable {
            let otlp = try GatewayConfiguration(sources: ConfigurationSources(flags: [.otlpEndpoint: "http://127.0.0.1:4318"]))
            #expect(otlp.otlpEndpoint == "http://127.0.0.1:4318")
        } else {
            // A build without the trait refuses the option instead of silently not tracing.
            #expect(throws: StormError.self) { try GatewayConfiguration(sources: ConfigurationSources(flags: [.otlpEndpoint: "http://127.0.0.1:4318"])) }
        }
    }

    @Test("requests and connections carry ids in logs and X-Request-Id; tokens never reach the log")
    func requestIDsAndNoSecrets() async throws {
        let capture = LogCapture()
        let secret = String(repeating: "s", count: 40)
        let gateway = try await startGateway(logger: capture.logger(), environment: ["STORM_JWT_SECRET": secret])
        try await cleaningUp({ await gateway.stop() }) {
            let port = try #require(gateway.localAddress?.port)

            // A refused token, in the header and in the query: 401, logged with the request's ids only.
            let connection = try await RawConnection.connect(port: port)
            let refused = try await connection.request(
                "POST", "/publish?subject=room&token=QUERYTOKEN.abc.def", body: Array("hi".utf8),
                headers: ["Authorization: Bearer HEADERTOKEN.abc.def", "X-Request-Id: client-req-1"])
            #expect(refused.status == 401)
            #expect(refused.header("x-request-id") == "client-req-1")
            // A request id that is not a sane token is replaced by the gateway's own.
            let health = try await connection.request("GET", "/healthz", headers: ["X-Request-Id: bad id with spaces"])
            let generated = try #require(health.header("x-request-id"))
            #expect(generated != "bad id with spaces")
            #expect(generated.hasPrefix(gateway.ids.instanceID + "-r"))
            await connection.close()

            // A WebSocket with a bad token is refused before upgrading; an anonymous one is not allowed either
            // with keys configured, so open an SSE stream... also refused: check its log line too.
            let stream = try await RawConnection.connect(port: port)
            let sse = try await stream.request("GET", "/events?subject=room&token=SSETOKEN.x.y")
            #expect(sse.status == 401)
            await stream.close()

            // Each request's line is written as its response goes out: wait for all three.
            let logged = try await eventually {
                let paths = try capture.objects().filter { $0["message"] as? String == "http request" }.compactMap { $0["http.path"] as? String }
                return paths.contains("/publish") && paths.contains("/healthz") && paths.contains("/events")
            }
            #expect(logged, "the three requests were not all logged: \(capture.all.suffix(5))")
            let objects = try capture.objects()
            let everything = capture.all.joined()
            for token in ["QUERYTOKEN", "HEADERTOKEN", "SSETOKEN", secret, "Bearer"] {
                #expect(!everything.contains(token), "\(token) was logged")
            }
            let requests = objects.filter { $0["message"] as? String == "http request" }
            #expect(requests.contains { $0["storm.request_id"] as? String == "client-req-1" && $0["http.status"] as? String == "401" && $0["http.path"] as? String == "/publish" })
            #expect(requests.contains { $0["storm.request_id"] as? String == generated })
            #expect(requests.allSatisfy { ($0["storm.connection_id"] as? String)?.hasPrefix(gateway.ids.instanceID + "-c") == true })
            let refusals = objects.filter { $0["message"] as? String == "token refused" }
            #expect(!refusals.isEmpty)
        }
    }

    @Test("WebSocket and SSE connections log with their connection id")
    func connectionIDs() async throws {
        let capture = LogCapture()
        let gateway = try await startGateway(logger: capture.logger())
        try await cleaningUp({ await gateway.stop() }) {
            let socket = try await TestWebSocket.connect(port: gateway.port)
            _ = try await socket.subscribe(["room"])
            await socket.close()
            let stream = try await TestEventStream.connect(port: gateway.port, channels: ["room"])
            await stream.close()
            let deadline = ContinuousClock.now + .seconds(60)
            var messages: [String: String] = [:]
            while ContinuousClock.now < deadline {
                messages = [:]
                for object in try capture.objects() {
                    if let message = object["message"] as? String, let id = object["storm.connection_id"] as? String { messages[message] = id }
                }
                if messages["websocket closed"] != nil, messages["event stream closed"] != nil { break }
                try await Task.sleep(for: .milliseconds(20))
            }
            let webSocket = try #require(messages["websocket connected"])
            #expect(messages["websocket closed"] == webSocket)
            let sse = try #require(messages["event stream opened"])
            #expect(messages["event stream closed"] == sse)
            #expect(webSocket != sse)
            #expect(webSocket.hasPrefix(gateway.ids.instanceID + "-c"))
        }
    }
}

// MARK: - Traces

@Suite("Traces")
struct TraceTests {
    @Test("traceparent parsing follows W3C Trace Context")
    func parsing() {
        #expect(TraceHeaders(traceparent: traceparent)?.traceID == Substring(traceID))
        #expect(TraceHeaders(traceparent: traceparent, tracestate: "vendor=1")?.tracestate == "vendor=1")
        #expect(TraceHeaders(traceparent: traceparent, tracestate: "bad\u{1}state")?.tracestate == nil)
        for bad in [
            "", "00-\(traceID)-\(parentSpanID)", "00-\(traceID.uppercased())-\(parentSpanID)-01",
            "00-00000000000000000000000000000000-\(parentSpanID)-01", "00-\(traceID)-0000000000000000-01",
            "ff-\(traceID)-\(parentSpanID)-01", "00-\(traceID)-\(parentSpanID)-01-extra", "00_\(traceID)-\(parentSpanID)-01",
        ] {
            #expect(TraceHeaders(traceparent: bad) == nil, "\(bad) accepted")
        }
        // A later version may add fields.
        #expect(TraceHeaders(traceparent: "01-\(traceID)-\(parentSpanID)-01-later") != nil)
    }

    @Test("POST /publish continues the client's trace: a publish span, then one fan-out span per message")
    func publishAndFanout() async throws {
        let tracer = W3CTestTracer()
        let gateway = try await startGateway(tracer: tracer)
        try await cleaningUp({ await gateway.stop() }) {
            let socket = try await TestWebSocket.connect(port: gateway.port)
            let second = try await TestWebSocket.connect(port: gateway.port)
            _ = try await socket.subscribe(["room"])
            _ = try await second.subscribe(["room"])

            let connection = try await RawConnection.connect(port: gateway.port)
            let response = try await connection.request("POST", "/publish?subject=room", body: Array("hi".utf8), headers: ["traceparent: \(traceparent)", "tracestate: k=v"])
            #expect(response.status == 200)
            _ = try await socket.next("message")
            _ = try await second.next("message")

            let publish = try await tracer.waitForSpan("publish room")
            #expect(publish.spanContext.traceID == traceID)
            #expect(publish.spanContext.parentSpanID == parentSpanID)
            #expect(publish.kind == .producer)
            #expect(publish.attributes.get("messaging.destination.name") == .string("room"))
            let fanout = try await tracer.waitForSpan("fanout room")
            #expect(fanout.spanContext.traceID == traceID)
            #expect(fanout.spanContext.parentSpanID == publish.spanContext.spanID)
            #expect(fanout.kind == .consumer)
            // One span for the message on this gateway, not one per subscriber.
            #expect(tracer.finishedSpans.filter { $0.operationName == "fanout room" }.count == 1)
            #expect(fanout.attributes.get("storm.subscribers") == .int64(2))
            await connection.close()
            await socket.close()
            await second.close()
        }
    }

    @Test("the WebSocket publish op takes an optional traceparent field")
    func webSocketPublish() async throws {
        let tracer = W3CTestTracer()
        let gateway = try await startGateway(tracer: tracer)
        try await cleaningUp({ await gateway.stop() }) {
            let socket = try await TestWebSocket.connect(port: gateway.port)
            try await socket.send(#"{"op":"publish","id":7,"channel":"room","data":"x","traceparent":"\#(traceparent)"}"#)
            _ = try await socket.next("reply")
            let publish = try await tracer.waitForSpan("publish room")
            #expect(publish.spanContext.traceID == traceID)
            #expect(publish.attributes.get("storm.transport") == .string("websocket"))
            // Without a traceparent the publish starts a trace of its own.
            try await socket.send(#"{"op":"publish","id":8,"channel":"other","data":"x"}"#)
            _ = try await socket.next("reply")
            let own = try await tracer.waitForSpan("publish other")
            #expect(own.spanContext.traceID != traceID)
            #expect(own.spanContext.parentSpanID == nil)
            await socket.close()
        }
    }

    @Test("without a tracer nothing is traced and no trace context is forwarded")
    func noTracer() async throws {
        let broker = MemoryBroker()
        let seen = NIOLockedValueBox<[TraceHeaders?]>([])
        let subscription = try await broker.subscribeTraced(to: ChannelName(validating: "room")) { _, _, trace in seen.withLockedValue { $0.append(trace) } }
        defer { subscription.cancel() }
        let gateway = try await startGateway(broker: broker, tracer: NoOpTracer())
        try await cleaningUp({ await gateway.stop() }) {
            #expect(gateway.context.publisher.tracing == nil)
            let response = try await gateway.publish("room", "hi")
            #expect(response.status == 200)
            #expect(seen.withLockedValue { $0 } == [nil])
        }
    }
}

@Suite("History consumer traces")
struct ConsumerTraceTests {
    @Test("a batch insert span links to the publish span of every traced message in the batch")
    func insertSpanLinks() throws {
        let tracer = W3CTestTracer()
        let otherTrace = "0af7651916cd43dd8448eb211c80319c"
        func row(_ offset: Int64, _ trace: TraceHeaders?) -> HistoryRow {
            HistoryRow(channel: "room", offset: offset, id: "m\(offset)", timestampMicros: 1, encoding: "text", envelope: [], trace: trace)
        }
        let rows = [
            row(1, TraceHeaders(traceparent: traceparent)), row(2, nil),
            row(3, TraceHeaders(traceparent: "00-\(otherTrace)-b7ad6b7169203331-01")),
        ]
        let span = try #require(HistoryConsumer.startInsertSpan(StormTracing(tracer), rows: rows))
        span.end()
        let finished = try #require(tracer.finishedSpans.first { $0.operationName == "history insert" })
        #expect(finished.kind == .client)
        #expect(finished.attributes.get("db.operation.batch.size") == .int64(3))
        let linked = finished.links.compactMap { $0.context.inMemorySpanContext }
        #expect(linked.map(\.traceID) == [traceID, otherTrace])
        #expect(linked.map(\.spanID) == [parentSpanID, "b7ad6b7169203331"])
        // A batch with no traced message makes no span.
        #expect(HistoryConsumer.startInsertSpan(StormTracing(tracer), rows: [row(4, nil)]) == nil)
    }
}

@Suite("Traces through NATS", .serialized, .enabled(if: TestEnvironment.natsURL != nil || TestEnvironment.isCI, "STORM_TEST_NATS_URL is not set: run ./scripts/test"))
struct NATSTraceTests {
    @Test("the traceparent of POST /publish is stored in the JetStream message headers and continued in the fan-out")
    func jetStreamHeaders() async throws {
        let url = try #require(TestEnvironment.requireNATS())
        let tag = "o\(UInt32.random(in: 0...UInt32.max))"
        func broker(_ name: String) -> NATSBroker {
            var configuration = NATSBrokerConfiguration()
            configuration.urls = [url]
            configuration.connectionName = name
            configuration.subjectPrefix = "test.\(tag)"
            configuration.jetStream?.stream.name = tag.uppercased()
            configuration.jetStream?.stream.maxAge = .seconds(600)
            var logger = Logger(label: name)
            logger.logLevel = .warning
            return NATSBroker(configuration: configuration, logger: logger)
        }
        let tracer = W3CTestTracer()
        let gateway = try await startGateway(broker: broker("traced-gateway"), tracer: tracer)
        try await cleaningUp({ await gateway.stop() }) {
            // A second broker reads the stored message's headers as another gateway or the consumer would.
            let reader = broker("header-reader")
            try await reader.start()
            let headers = NIOLockedValueBox<[TraceHeaders?]>([])
            let subscription = try await reader.subscribeTraced(to: ChannelName(validating: "room")) { _, _, trace in headers.withLockedValue { $0.append(trace) } }
            let socket = try await TestWebSocket.connect(port: gateway.port)
            _ = try await socket.subscribe(["room"])

            let connection = try await RawConnection.connect(port: gateway.port)
            let response = try await connection.request("POST", "/publish?subject=room", body: Array("hi".utf8), headers: ["traceparent: \(traceparent)"])
            #expect(response.status == 200)
            _ = try await socket.next("message")

            let publish = try await tracer.waitForSpan("publish room")
            #expect(publish.spanContext.traceID == traceID)
            #expect(publish.attributes.get("storm.offset") != nil)
            let deadline = ContinuousClock.now + .seconds(60)
            while ContinuousClock.now < deadline, headers.withLockedValue({ $0.isEmpty }) { try await Task.sleep(for: .milliseconds(10)) }
            let stored = try #require(headers.withLockedValue { $0.first } ?? nil)
            // The header continues the publish span: same trace, the publish span as parent.
            #expect(stored.traceparent == "00-\(traceID)-\(publish.spanContext.spanID)-01")
            let fanout = try await tracer.waitForSpan("fanout room")
            #expect(fanout.spanContext.traceID == traceID)
            #expect(fanout.spanContext.parentSpanID == publish.spanContext.spanID)
            #expect(fanout.attributes.get("storm.offset") != nil)
            subscription.cancel()
            await reader.shutdown()
            await connection.close()
            await socket.close()
        }
    }
}

#if OTLP
import NIOHTTP1
import NIOPosix

/// A minimal OTLP/HTTP collector on port 0: records each request's path and body, answers 200 with an
/// empty protobuf `ExportTraceServiceResponse`.
private final class TinyCollector: Sendable {
    struct Request: Sendable {
        var path: String
        var headers: [(String, String)]
        var body: [UInt8]
    }

    let requests = NIOLockedValueBox<[Request]>([])
    private let channel: any Channel

    private init(channel: any Channel) {
        self.channel = channel
    }

    var port: Int { channel.localAddress?.port ?? 0 }

    static func start() async throws -> TinyCollector {
        let box = NIOLockedValueBox<TinyCollector?>(nil)
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(Handler(record: { request in box.withLockedValue { $0?.requests.withLockedValue { $0.append(request) } } }))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let collector = TinyCollector(channel: channel)
        box.withLockedValue { $0 = collector }
        return collector
    }

    func stop() async { try? await channel.close() }

    private final class Handler: ChannelInboundHandler {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart
        let record: @Sendable (Request) -> Void
        var current: Request?

        init(record: @escaping @Sendable (Request) -> Void) { self.record = record }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch Self.unwrapInboundIn(data) {
            case .head(let head): current = Request(path: head.uri, headers: head.headers.map { ($0.name, $0.value) }, body: [])
            case .body(let buffer): current?.body += Array(buffer.readableBytesView)
            case .end:
                if let current { record(current) }
                current = nil
                var headers = HTTPHeaders()
                headers.add(name: "Content-Type", value: "application/x-protobuf")
                headers.add(name: "Content-Length", value: "0")
                context.write(Self.wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))), promise: nil)
                context.writeAndFlush(Self.wrapOutboundOut(.end(nil)), promise: nil)
            }
        }
    }
}

@Suite("OTLP export")
struct OTLPExportTests {
    @Test("with --otlp-endpoint, the publish and fan-out spans arrive at an OTLP/HTTP collector")
    func spansReachCollector() async throws {
        let collector = try await TinyCollector.start()
        var configuration = try GatewayConfiguration(sources: ConfigurationSources(flags: [.otlpEndpoint: "http://127.0.0.1:\(collector.port)"]))
        configuration.listen = .init(host: "127.0.0.1", port: 0)
        configuration.eventLoops = 1
        var logger = Logger(label: "otlp-test")
        logger.logLevel = .warning
        let tracing = try #require(try OTLPTracing.make(endpoint: configuration.otlpEndpoint, logger: logger, exportDelay: .milliseconds(100)))
        let exporter = Task { try await tracing.service.run() }
        let gateway = Gateway(configuration: configuration, broker: MemoryBroker(), logger: logger, tracer: tracing.tracer)
        try await gateway.start()
        let socket = try await TestWebSocket.connect(port: gateway.port)
        _ = try await socket.subscribe(["room"])
        let connection = try await RawConnection.connect(port: gateway.port)
        let response = try await connection.request("POST", "/publish?subject=room", body: Array("hi".utf8), headers: ["traceparent: \(traceparent)"])
        #expect(response.status == 200)
        _ = try await socket.next("message")

        let deadline = ContinuousClock.now + .seconds(60)
        var names: Set<String> = []
        while ContinuousClock.now < deadline {
            let requests = collector.requests.withLockedValue { $0 }
            names = []
            for request in requests where request.path == "/v1/traces" {
                let compressed = request.headers.contains { $0.0.lowercased() == "content-encoding" }
                #expect(!compressed, "the test collector reads uncompressed protobuf")
                let body = request.body
                for name in ["publish room", "fanout room"] where body.firstRange(of: Array(name.utf8)) != nil { names.insert(name) }
                // The client's trace id, as 16 raw bytes.
                let id = stride(from: 0, to: 32, by: 2).compactMap { UInt8(traceID.dropFirst($0).prefix(2), radix: 16) }
                #expect(body.firstRange(of: id) != nil)
            }
            if names.count == 2 { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(names == ["publish room", "fanout room"])
        await connection.close()
        await socket.close()
        await gateway.stop()
        exporter.cancel()
        _ = try? await exporter.value
        await collector.stop()
    }
}
#endif
