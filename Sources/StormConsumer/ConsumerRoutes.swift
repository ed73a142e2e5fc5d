import NIOCore
import NIOHTTP1
import Prometheus
import StormCore
import StormHTTP
import StormObservability

/// The HTTP routes of `stormd --role consumer`: `/healthz`, `/readyz` and `/metrics` only, served by the
/// HTTP server every role shares (`HTTPServer`, `HTTPRequestHandler` in StormHTTP: the same Host/Origin
/// policy, connection limits, timeouts and body limit as the gateway), so probes and Prometheus treat a
/// consumer like a gateway. Everything else is 404.
///
/// `/readyz` is 200 while the consumer reads NATS and writes PostgreSQL, and 503 with the reason (the
/// database being down, say) otherwise, as the same JSON error body the gateway uses.
package final class ConsumerRoutes: HTTPRoutes {
    package let consumer: HistoryConsumer
    package let registry: PrometheusCollectorRegistry

    package init(consumer: HistoryConsumer, registry: PrometheusCollectorRegistry) {
        self.consumer = consumer
        self.registry = registry
    }

    /// The consumer role's server on `host:port`. `settings`: the gateway's policy and limits, from the
    /// same configuration (`stormd` builds them).
    package static func server(host: String, port: Int, settings: HTTPServerSettings, consumer: HistoryConsumer, registry: PrometheusCollectorRegistry) -> HTTPServer {
        HTTPServer(host: host, port: port, settings: settings) { ConsumerRoutes(consumer: consumer, registry: registry) }
    }

    package func refusal(head: HTTPRequestHead, target: RequestTarget) -> (StormError, [(String, String)])? { nil }

    package func takeOver(context: ChannelHandlerContext, head: HTTPRequestHead, target: RequestTarget, handler: HTTPRequestHandler) -> HTTPTakeOver { .notTaken }

    package func route(context: ChannelHandlerContext, head: HTTPRequestHead, target: RequestTarget, body: ByteBuffer, handler: HTTPRequestHandler) {
        let path = target.path
        switch (path, head.method) {
        case ("/healthz", .GET), ("/healthz", .HEAD):
            handler.respond(context: context, head: head, status: .ok, contentType: "text/plain; charset=utf-8", body: ByteBuffer(string: "ok\n"))
        case ("/readyz", .GET), ("/readyz", .HEAD):
            if let error = consumer.notReadyError {
                // Always 503, whatever the code (a probe reads the status, an operator the body).
                handler.respond(context: context, head: head, status: .serviceUnavailable, contentType: "application/json", body: ByteBuffer(string: error.jsonBody + "\n"))
            } else {
                handler.respond(context: context, head: head, status: .ok, contentType: "application/json", body: ByteBuffer(string: "{\"status\":\"ready\",\"role\":\"consumer\"}\n"))
            }
        case ("/metrics", .GET):
            var text = registry.emitToBuffer()
            ProcessMetrics.append(to: &text)
            handler.respond(context: context, head: head, status: .ok, contentType: "text/plain; version=0.0.4; charset=utf-8", body: ByteBuffer(bytes: text))
        case ("/healthz", _), ("/readyz", _), ("/metrics", _):
            handler.respond(context: context, head: head, error: StormError(.methodNotAllowed, "\(head.method) is not allowed on \(path)"))
        default:
            handler.respond(context: context, head: head, error: StormError(.notFound, "no route for \(path): a consumer (--role consumer) serves /healthz, /readyz and /metrics only"))
        }
    }
}
