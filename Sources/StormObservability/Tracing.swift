import Atomics
import NIOHTTP1
import StormCore
import Tracing

/// W3C Trace Context carried with one message: `traceparent` and, when the caller sent one, `tracestate`.
///
/// It enters on `POST /publish` (HTTP headers) or the WebSocket publish op (a `traceparent` field), travels
/// in the NATS message headers (`traceparent`, `tracestate`) to every gateway's fan-out and to the history
/// consumer, and is only ever built from validated text, so a header copied into NATS cannot break a message.
package struct TraceHeaders: Sendable, Equatable {
    package static let traceparentKey = "traceparent"
    package static let tracestateKey = "tracestate"

    package let traceparent: String
    package let tracestate: String?

    /// `nil` unless `traceparent` is a well-formed W3C `traceparent` (version 00 layout, non-zero ids); a
    /// `tracestate` that is too long or not printable ASCII is dropped, as the specification allows.
    package init?(traceparent: String?, tracestate: String? = nil) {
        guard let traceparent, Self.isValidTraceparent(traceparent) else { return nil }
        self.traceparent = traceparent
        if let tracestate, !tracestate.isEmpty, tracestate.utf8.count <= 512,
            tracestate.utf8.allSatisfy({ $0 >= 0x20 && $0 < 0x7f })
        {
            self.tracestate = tracestate
        } else {
            self.tracestate = nil
        }
    }

    /// From HTTP request headers; `nil` when there is no valid `traceparent`.
    package init?(_ headers: HTTPHeaders) {
        guard let parent = headers.first(name: Self.traceparentKey) else { return nil }
        self.init(traceparent: parent, tracestate: headers.first(name: Self.tracestateKey))
    }

    /// `VV-TTTTTTTTTTTTTTTTTTTTTTTTTTTTTTTT-SSSSSSSSSSSSSSSS-FF`, lowercase hex; version ff and all-zero
    /// trace or span ids are invalid. Later versions may append fields after a dash (W3C, "Versioning").
    package static func isValidTraceparent(_ text: String) -> Bool {
        let bytes = Array(text.utf8)
        guard bytes.count >= 55, bytes.count <= 256 else { return false }
        func isHex(_ range: Range<Int>) -> Bool {
            bytes[range].allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) }
        }
        func isZero(_ range: Range<Int>) -> Bool { bytes[range].allSatisfy { $0 == 0x30 } }
        guard isHex(0..<2), bytes[2] == 0x2d, isHex(3..<35), bytes[35] == 0x2d, isHex(36..<52), bytes[52] == 0x2d, isHex(53..<55) else {
            return false
        }
        let version = bytes[0..<2]
        guard version != [0x66, 0x66], !isZero(3..<35), !isZero(36..<52) else { return false }
        if version == [0x30, 0x30] { return bytes.count == 55 }
        return bytes.count == 55 || bytes[55] == 0x2d
    }

    /// The trace id part of `traceparent` (32 hex digits).
    package var traceID: Substring {
        let start = traceparent.index(traceparent.startIndex, offsetBy: 3)
        return traceparent[start..<traceparent.index(start, offsetBy: 32)]
    }
}

/// Reads `TraceHeaders` for a tracer's `extract`.
package struct TraceHeadersExtractor: Extractor {
    package func extract(key: String, from carrier: TraceHeaders) -> String? {
        switch key.lowercased() {
        case TraceHeaders.traceparentKey: return carrier.traceparent
        case TraceHeaders.tracestateKey: return carrier.tracestate
        default: return nil
        }
    }
}

/// Collects what a tracer's `inject` writes.
package struct DictionaryInjector: Injector {
    package func inject(_ value: String, forKey key: String, into carrier: inout [String: String]) {
        carrier[key.lowercased()] = value
    }
}

/// The gateway's tracer, or none. With none (no `--otlp-endpoint`, or a build without the OTLP trait)
/// every tracing call site is a `nil` check: the fan-out path costs nothing and allocates nothing.
///
/// Takes a `Tracer` instance rather than `InstrumentationSystem`'s global one, so tests can give each
/// gateway its own in-memory tracer.
package struct StormTracing: Sendable {
    package let tracer: any Tracer

    package init(_ tracer: any Tracer) {
        self.tracer = tracer
    }

    /// The remote parent carried by `headers`, as a context to start spans in.
    package func context(from headers: TraceHeaders?) -> ServiceContext {
        var context = ServiceContext.topLevel
        if let headers { tracer.extract(headers, into: &context, using: TraceHeadersExtractor()) }
        return context
    }

    /// The headers that continue `context` (a span's) in another process; `nil` when the tracer writes none.
    package func headers(continuing context: ServiceContext) -> TraceHeaders? {
        var carrier: [String: String] = [:]
        tracer.inject(context, into: &carrier, using: DictionaryInjector())
        return TraceHeaders(traceparent: carrier[TraceHeaders.traceparentKey], tracestate: carrier[TraceHeaders.tracestateKey])
    }

    package func startSpan(_ name: String, context: ServiceContext, ofKind kind: SpanKind) -> any Span {
        tracer.startAnySpan(name, context: context, ofKind: kind)
    }
}

/// Request and connection ids: the gateway's instance id and a per-process counter ("k3x9a-r42"), cheap
/// enough for every request, unique across a cluster, and easy to grep for in logs.
package final class ConnectionIDs: Sendable {
    private let prefix: String
    private let requests = ManagedAtomic<UInt64>(0)
    private let connections = ManagedAtomic<UInt64>(0)

    package init(instanceID: String) {
        self.prefix = instanceID
    }

    package func nextRequest() -> String { "\(prefix)-r\(requests.wrappingIncrementThenLoad(ordering: .relaxed))" }
    package func nextConnection() -> ConnectionID { ConnectionID(prefix: prefix, number: connections.wrappingIncrementThenLoad(ordering: .relaxed)) }

    /// A client's `X-Request-Id`, kept when it is a short token (1 to 128 of A-Z a-z 0-9 - _ . : / + = @),
    /// so it can go into logs and the response unescaped.
    package static func acceptedRequestID(_ value: String?) -> String? {
        guard let value, (1...128).contains(value.utf8.count) else { return nil }
        let allowed = value.utf8.allSatisfy { byte in
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"): return true
            case UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."), UInt8(ascii: ":"), UInt8(ascii: "/"), UInt8(ascii: "+"), UInt8(ascii: "="), UInt8(ascii: "@"): return true
            default: return false
            }
        }
        return allowed ? value : nil
    }
}

/// A connection's id, `<instance id>-c<n>`, formatted only when logged: the prefix's storage is shared by
/// every connection, so keeping the id costs 24 bytes of each connection and no allocation.
package struct ConnectionID: Sendable, Equatable, CustomStringConvertible {
    package let prefix: String
    package let number: UInt64
    package var description: String { "\(prefix)-c\(number)" }
}

/// The fan-out span of one traced message on this gateway: started when the broker hands the message over
/// (a child of the publisher's span, from the NATS headers), ended once every event loop with subscribers
/// has written it to them. One span per message per gateway, never per subscriber.
package final class FanoutTrace: Sendable {
    package let span: any Span
    private let remainingLoops: ManagedAtomic<Int>
    private let subscribers = ManagedAtomic<Int>(0)

    private init(span: any Span, loops: Int) {
        self.span = span
        self.remainingLoops = ManagedAtomic(loops)
    }

    package static func start(_ tracing: StormTracing, trace: TraceHeaders, channel: ChannelName, offset: UInt64, loops: Int) -> FanoutTrace {
        let span = tracing.startSpan("fanout \(channel.rawValue)", context: tracing.context(from: trace), ofKind: .consumer)
        span.attributes["messaging.system"] = "storm"
        span.attributes["messaging.operation.type"] = "process"
        span.attributes["messaging.destination.name"] = channel.rawValue
        if offset > 0 { span.attributes["storm.offset"] = Int(clamping: offset) }
        span.attributes["storm.loops"] = loops
        let trace = FanoutTrace(span: span, loops: loops)
        if loops == 0 { trace.finish() }
        return trace
    }

    /// One event loop wrote the message to its `subscribers`; the last loop ends the span.
    package func loopFinished(subscribers count: Int) {
        subscribers.wrappingIncrement(by: count, ordering: .relaxed)
        if remainingLoops.wrappingDecrementThenLoad(ordering: .acquiringAndReleasing) == 0 { finish() }
    }

    private func finish() {
        span.attributes["storm.subscribers"] = subscribers.load(ordering: .relaxed)
        span.end()
    }
}
