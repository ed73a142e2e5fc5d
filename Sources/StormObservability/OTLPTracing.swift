import Logging
import ServiceLifecycle
import StormCore
import Tracing

#if OTLP
import OTel
#endif

/// The OTLP trace exporter (swift-otel), compiled only with the package trait `OTLP`
/// (`swift build --traits OTLP`): swift-otel adds about 7 minutes to a clean build, so the default build
/// leaves it out and `--otlp-endpoint` is then refused as a configuration error.
///
/// With `--otlp-endpoint URL` (`STORM_OTLP_ENDPOINT`): spans go over OTLP/HTTP (protobuf) to
/// `URL/v1/traces`, batched, with W3C Trace Context propagation, service name `stormd`. Without it: no
/// tracer at all (not even a `NoOpTracer`), so tracing costs nothing.
package struct OTLPTracing: Sendable {
    package let tracer: any Tracer
    /// Exports in the background; run it in the `ServiceGroup` (it flushes on graceful shutdown).
    package let service: any Service

    package static var isAvailable: Bool {
        #if OTLP
        return true
        #else
        return false
        #endif
    }

    /// The endpoint for `--print-config` and logs: credentials in it (`http://user:pass@host`) become `***`.
    package static func redacted(_ endpoint: String) -> String {
        guard let scheme = endpoint.range(of: "://"), let at = endpoint[scheme.upperBound...].lastIndex(of: "@") else { return endpoint }
        return String(endpoint[..<scheme.upperBound]) + "***" + String(endpoint[at...])
    }

    /// The tracer and exporter service for `endpoint` (`--otlp-endpoint`); `nil` when none is configured.
    /// `exportDelay`: how long spans collect before a batch is sent (OpenTelemetry's default, 5 s;
    /// `OTEL_BSP_SCHEDULE_DELAY` overrides it).
    package static func make(endpoint: String?, logger: Logger, exportDelay: Duration = .seconds(5)) throws -> OTLPTracing? {
        guard let endpoint else { return nil }
        #if OTLP
        var otel = OTel.Configuration.default
        otel.serviceName = "stormd"
        otel.resourceAttributes["service.version"] = StormVersion.current
        otel.diagnosticLogger = .custom(logger)
        otel.propagators = [.traceContext]
        otel.metrics.enabled = false
        otel.logs.enabled = false
        otel.traces.enabled = true
        otel.traces.sampler = .parentBasedAlwaysOn
        otel.traces.exporter = .otlp
        otel.traces.batchSpanProcessor.scheduleDelay = exportDelay
        otel.traces.otlpExporter.protocol = .httpProtobuf
        otel.traces.otlpExporter.endpoint = endpoint.hasSuffix("/v1/traces") ? endpoint : endpoint.trimmingSuffix("/") + "/v1/traces"
        let backend = try OTel.makeTracingBackend(configuration: otel)
        logger.info("exporting traces over OTLP/HTTP", metadata: ["storm.otlp_endpoint": "\(redacted(endpoint))"])
        return OTLPTracing(tracer: backend.factory, service: backend.service)
        #else
        throw StormError(.configuration, "--otlp-endpoint \(endpoint): this stormd was built without the OTLP trait")
        #endif
    }
}

extension String {
    fileprivate func trimmingSuffix(_ suffix: Character) -> String {
        var text = self
        while text.last == suffix { text.removeLast() }
        return text
    }
}
