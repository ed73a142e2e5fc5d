#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Logging
import NIOConcurrencyHelpers
import StormCore

/// `--log-format`: `text` (swift-log's `StreamLogHandler` lines) or `json` (one object per line).
package enum LogFormat: String, Sendable, CaseIterable {
    case text
    case json
}

/// A `LogHandler` that writes one JSON object per line, for log shippers (Loki, Elasticsearch, journald's
/// JSON export):
///
///     {"ts":"2026-11-29T09:16:38.123Z","level":"info","label":"stormd","message":"…","storm.request_id":"k3x9a-r42","source":"stormd"}
///
/// Metadata is flattened into the object with dotted keys (`["http": ["status": "200"]]` becomes
/// `"http.status":"200"`); arrays become JSON arrays of strings. Values under keys that name a secret
/// (`token`, `password`, `secret`, `authorization`, `cookie`, anywhere in the key) are written as
/// `"[redacted]"`: stormd never logs secrets on purpose, and this catches a mistake.
package struct JSONLogHandler: LogHandler {
    /// Where finished lines go: stderr in `stormd`, a buffer in tests. Must be thread-safe.
    package typealias Sink = @Sendable (String) -> Void

    package let label: String
    package var logLevel: Logger.Level = .info
    package var metadata: Logger.Metadata = [:]
    package var metadataProvider: Logger.MetadataProvider?
    private let sink: Sink

    package init(label: String, metadataProvider: Logger.MetadataProvider? = nil, sink: @escaping Sink = JSONLogHandler.standardError) {
        self.label = label
        self.metadataProvider = metadataProvider
        self.sink = sink
    }

    package subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    package func log(event: LogEvent) {
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { _, new in new } }
        if let extra = event.metadata { merged.merge(extra) { _, new in new } }
        sink(Self.line(timestamp: Self.now(), level: event.level, label: label, message: "\(event.message)", metadata: merged, source: event.source))
    }

    package func log(level: Logger.Level, message: Logger.Message, metadata: Logger.Metadata?, source: String, file: String, function: String, line: UInt) {
        log(event: LogEvent(level: level, message: message, metadata: metadata, source: source, file: file, function: function, line: line))
    }

    /// One complete line (with its newline).
    package static func line(timestamp: String, level: Logger.Level, label: String, message: String, metadata: Logger.Metadata, source: String) -> String {
        var out = "{\"ts\":\"\(timestamp)\",\"level\":\"\(level.rawValue)\",\"label\":\(JSONWriter.quoted(label)),\"message\":\(JSONWriter.quoted(message))"
        var flat: [(String, String)] = []
        flatten(metadata, prefix: "", into: &flat)
        flat.sort { $0.0 < $1.0 }
        for (key, json) in flat where !reserved.contains(key) {
            out += ",\(JSONWriter.quoted(key)):\(json)"
        }
        out += ",\"source\":\(JSONWriter.quoted(source))}\n"
        return out
    }

    private static let reserved: Set<String> = ["ts", "level", "label", "message", "source"]
    private static let secretWords = ["token", "password", "passwd", "secret", "authorization", "cookie", "credential"]

    package static func isSecret(_ key: String) -> Bool {
        let lowered = key.lowercased()
        return secretWords.contains { lowered.contains($0) }
    }

    /// Flattens nested dictionaries into dotted keys; values are rendered as JSON.
    private static func flatten(_ metadata: Logger.Metadata, prefix: String, into flat: inout [(String, String)]) {
        for (key, value) in metadata {
            let name = prefix.isEmpty ? key : "\(prefix).\(key)"
            if isSecret(name) {
                flat.append((name, "\"[redacted]\""))
                continue
            }
            switch value {
            case .string(let text): flat.append((name, JSONWriter.quoted(text)))
            case .stringConvertible(let value): flat.append((name, JSONWriter.quoted(value.description)))
            case .dictionary(let nested): flatten(nested, prefix: name, into: &flat)
            case .array(let values): flat.append((name, "[" + values.map { JSONWriter.quoted($0.description) }.joined(separator: ",") + "]"))
            }
        }
    }

    /// RFC 3339 in UTC with milliseconds: `2026-11-29T09:16:38.123Z`.
    package static func now() -> String {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return rfc3339(seconds: Int(spec.tv_sec), milliseconds: Int(spec.tv_nsec) / 1_000_000)
    }

    package static func rfc3339(seconds: Int, milliseconds: Int) -> String {
        var time = time_t(seconds)
        var parts = tm()
        gmtime_r(&time, &parts)
        func pad(_ value: Int32, _ width: Int) -> String {
            let text = String(value)
            return String(repeating: "0", count: max(0, width - text.count)) + text
        }
        return "\(pad(parts.tm_year + 1900, 4))-\(pad(parts.tm_mon + 1, 2))-\(pad(parts.tm_mday, 2))T\(pad(parts.tm_hour, 2)):\(pad(parts.tm_min, 2)):\(pad(parts.tm_sec, 2)).\(pad(Int32(milliseconds), 3))Z"
    }

    /// Writes each line with one `write(2)` to stderr, under a lock so lines of several threads never mix.
    package static let standardError: Sink = { line in
        stderrLock.withLock {
            var line = line
            line.withUTF8 { bytes in
                var offset = 0
                while offset < bytes.count {
                    let written = write(2, bytes.baseAddress.map { $0 + offset }, bytes.count - offset)
                    if written <= 0 { break }
                    offset += written
                }
            }
        }
    }
    private static let stderrLock = NIOLock()
}

extension LogFormat {
    /// The logging bootstrap of `stormd`: every `Logger` writes in this format at `level`.
    package func bootstrap(level: Logger.Level) {
        switch self {
        case .text:
            LoggingSystem.bootstrap { label in
                var handler = StreamLogHandler.standardError(label: label)
                handler.logLevel = level
                return handler
            }
        case .json:
            LoggingSystem.bootstrap { label in
                var handler = JSONLogHandler(label: label)
                handler.logLevel = level
                return handler
            }
        }
    }
}
