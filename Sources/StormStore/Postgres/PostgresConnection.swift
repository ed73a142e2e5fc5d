import CLibPQ
import Foundation
import Logging
import StormCore

/// One value bound to a `$n` parameter: text (sent as a C string, PostgreSQL casts it to the column's
/// type), raw bytes (sent in binary format, for `bytea`), or SQL NULL.
package enum PostgresValue: Sendable, Equatable {
    case text(String)
    case bytes([UInt8])
    case null
}

/// The rows of one statement, copied out of libpq's memory so the `PGresult` is freed at once.
package struct PostgresRows: Sendable {
    /// Column names, in order.
    package var columns: [String] = []
    /// Each row's values in text format (or binary when the query asked for it); nil for SQL NULL.
    package var rows: [[[UInt8]?]] = []
    /// `PQcmdTuples`: rows inserted, updated or deleted by the statement (0 for others).
    package var affected: Int = 0

    /// The value at `row`, `column` as text, or nil for NULL or a missing cell.
    package func text(_ row: Int, _ column: Int) -> String? {
        guard row < rows.count, column < rows[row].count, let bytes = rows[row][column] else { return nil }
        return String(decoding: bytes, as: UTF8.self)
    }

    package func int64(_ row: Int, _ column: Int) -> Int64? {
        text(row, column).flatMap { Int64($0) }
    }
}

/// One libpq connection (`PGconn`). Blocking: every method waits for the server, so it must run on a
/// thread of its own or `NIOThreadPool`, never on an event loop or the cooperative pool.
///
/// Not thread-safe, like `PGconn` itself: one caller at a time, which `PostgresClient` guarantees by
/// checking connections out. Hence `@unchecked Sendable`: it moves between pool threads, never shared.
///
/// Errors: every libpq status goes through `check(_:_:)`, the one choke point that turns `PGRES_*` and
/// `CONNECTION_BAD` into a `StormError` naming the call and the server's message, never the password.
/// NOTICEs (for example "relation already exists, skipping") go to the logger at debug instead of stderr.
package final class PostgresConnection: @unchecked Sendable {
    private let conninfo: String
    private let logger: Logger
    /// What logs and errors show instead of the conninfo: host, port and database, no password.
    package let endpoint: String
    private var raw: OpaquePointer?
    private var noticeBox: Unmanaged<PostgresNoticeBox>?

    package init(conninfo: String, logger: Logger) {
        self.conninfo = conninfo
        self.logger = logger
        self.endpoint = redactedPostgresConnectionString(conninfo)
    }

    deinit { close() }

    /// Whether the last statement left the connection usable.
    package var isConnected: Bool {
        guard let raw else { return false }
        return PQstatus(raw) == CONNECTION_OK
    }

    /// Connects (or reconnects after a failure): a new `PGconn`, the old one closed.
    package func connect() throws(StormError) {
        close()
        // Defaults first: libpq keeps the last value of a repeated keyword, so the operator's conninfo
        // (expanded from `dbname`, expand_dbname = 1) overrides them.
        let keywords = ["connect_timeout", "application_name", "dbname"]
        let values = ["5", "stormd", conninfo]
        let connection: OpaquePointer? = withCStrings(keywords) { keywordPointers in
            withCStrings(values) { valuePointers in
                PQconnectdbParams(keywordPointers, valuePointers, 1)
            }
        }
        guard let connection else {
            throw StormError(.connection, "PostgreSQL could not allocate a connection to \(endpoint) (out of memory?) [PQconnectdbParams]")
        }
        guard PQstatus(connection) == CONNECTION_OK else {
            let message = Self.serverMessage(PQerrorMessage(connection))
            PQfinish(connection)
            throw StormError(
                .connection,
                "PostgreSQL at \(endpoint) refused the connection: \(message); check --postgres (STORM_POSTGRES_URL) and that the server is up [PQconnectdbParams]")
        }
        let box = Unmanaged.passRetained(PostgresNoticeBox(logger: logger, endpoint: endpoint))
        PQsetNoticeProcessor(connection, postgresNoticeProcessor, box.toOpaque())
        raw = connection
        noticeBox = box
    }

    /// Makes sure the connection is usable, reconnecting once if it went bad (server restart, network).
    package func ensureConnected() throws(StormError) {
        if !isConnected { try connect() }
    }

    /// Closes the connection; safe to call twice.
    package func close() {
        if let raw { PQfinish(raw) }
        raw = nil
        // After PQfinish no notice can arrive any more.
        noticeBox?.release()
        noticeBox = nil
    }

    /// Runs one statement with `$1…$n` parameters (`PQexecParams`: never string interpolation of values).
    ///
    /// - Parameters:
    ///   - sql: one statement; values only through `parameters`.
    ///   - parameters: bound in order to `$1`, `$2`, …
    ///   - doing: what STORM was doing, for the error ("insert a batch of 1000 messages").
    @discardableResult
    package func query(_ sql: String, _ parameters: [PostgresValue] = [], doing: @autoclosure () -> String) throws(StormError) -> PostgresRows {
        guard let raw else {
            throw StormError(.connection, "PostgreSQL at \(endpoint) is not connected; could not \(doing()) [PQexecParams]")
        }
        let result: OpaquePointer? = withParameters(parameters) { count, values, lengths, formats in
            PQexecParams(raw, sql, count, nil, values, lengths, formats, 0)
        }
        return try check(result, "PQexecParams", doing())
    }

    /// Runs statements without parameters, possibly several separated by `;` (`PQexec`): migrations.
    @discardableResult
    package func execute(_ sql: String, doing: @autoclosure () -> String) throws(StormError) -> PostgresRows {
        guard let raw else {
            throw StormError(.connection, "PostgreSQL at \(endpoint) is not connected; could not \(doing()) [PQexec]")
        }
        return try check(PQexec(raw, sql), "PQexec", doing())
    }

    /// Runs one `COPY … FROM STDIN` statement and streams `data` to it (`PQputCopyData` in chunks of
    /// 256 KiB, `PQputCopyEnd`, `PQgetResult`); returns the rows copied. `data` is the whole COPY stream in
    /// the statement's format (for `FORMAT binary`: header, tuples and trailer, see `PostgresCopyWriter`).
    ///
    /// The server checks the stream: a malformed one fails the statement (`.internalError`), a broken
    /// socket is `.connection`. Either way the connection is back to idle (or closed) afterwards.
    @discardableResult
    package func copyIn(_ sql: String, data: [UInt8], doing: @autoclosure () -> String) throws(StormError) -> Int {
        guard let raw else {
            throw StormError(.connection, "PostgreSQL at \(endpoint) is not connected; could not \(doing()) [PQexec]")
        }
        guard let started = PQexec(raw, sql) else {
            _ = try check(nil, "PQexec", doing())
            return 0
        }
        guard PQresultStatus(started) == PGRES_COPY_IN else {
            // An error (or, for a statement that is not COPY FROM STDIN, no copy at all).
            let rows = try check(started, "PQexec", doing())
            return rows.affected
        }
        PQclear(started)
        let chunk = 256 * 1024
        var sent = true
        data.withUnsafeBufferPointer { buffer in
            guard let base = buffer.baseAddress else { return }
            var offset = 0
            while offset < buffer.count {
                let length = min(chunk, buffer.count - offset)
                let status = base.advanced(by: offset).withMemoryRebound(to: CChar.self, capacity: length) {
                    PQputCopyData(raw, $0, Int32(length))
                }
                if status != 1 {
                    sent = false
                    return
                }
                offset += length
            }
        }
        // Ending with an error message makes the server fail the COPY instead of committing half a stream.
        let ended = sent ? PQputCopyEnd(raw, nil) : PQputCopyEnd(raw, "stormd could not send the whole COPY stream")
        if ended != 1 {
            let message = Self.serverMessage(PQerrorMessage(raw))
            close()
            throw StormError(.connection, "PostgreSQL at \(endpoint) could not \(doing()): \(message) [PQputCopyEnd]")
        }
        // The COPY's result, then NULL: read both, so the connection is idle for the next statement.
        let result = PQgetResult(raw)
        var extra = 0
        while let more = PQgetResult(raw) {
            let status = PQresultStatus(more)
            PQclear(more)
            extra += 1
            if status == PGRES_COPY_IN || status == PGRES_COPY_OUT || status == PGRES_COPY_BOTH || extra > 8 {
                // Still in a copy state after PQputCopyEnd: the protocol is confused; start afresh.
                if let result { PQclear(result) }
                close()
                throw StormError(.connection, "PostgreSQL at \(endpoint) could not \(doing()): the connection stayed in COPY state [PQgetResult]")
            }
        }
        let rows = try check(result, "PQputCopyEnd", doing())
        if !sent {
            throw StormError(.connection, "PostgreSQL at \(endpoint) could not \(doing()): sending the COPY data failed [PQputCopyData]")
        }
        return rows.affected
    }

    /// Runs `body` inside `BEGIN` … `COMMIT`; any error rolls back (when the connection still lives) and is
    /// rethrown. When COMMIT itself fails the transaction did not happen: callers must not act on it.
    package func transaction<T>(doing: String, _ body: (PostgresConnection) throws(StormError) -> T) throws(StormError) -> T {
        try execute("BEGIN", doing: "begin a transaction to \(doing)")
        let value: T
        do {
            value = try body(self)
        } catch {
            if isConnected { _ = try? execute("ROLLBACK", doing: "roll back after failing to \(doing)") }
            throw error
        }
        try execute("COMMIT", doing: "commit the transaction to \(doing)")
        return value
    }

    // MARK: the choke point

    /// Turns a `PGresult` into rows or a typed error, and always frees it.
    ///
    /// `.connection` when the connection broke (the caller may reconnect and retry), `.internalError`
    /// for a statement the server refused (a bug or a schema mismatch: retrying will not help).
    private func check(_ result: OpaquePointer?, _ call: StaticString, _ doing: String) throws(StormError) -> PostgresRows {
        guard let result else {
            // libpq returns NULL only when out of memory or the connection is unusable.
            let message = raw.map { Self.serverMessage(PQerrorMessage($0)) } ?? "no connection"
            throw StormError(.connection, "PostgreSQL at \(endpoint) could not \(doing): \(message) [\(call)]")
        }
        defer { PQclear(result) }
        let status = PQresultStatus(result)
        switch status {
        case PGRES_COMMAND_OK, PGRES_TUPLES_OK, PGRES_EMPTY_QUERY:
            return Self.rows(of: result)
        default:
            let message = Self.serverMessage(PQresultErrorMessage(result))
            let state = PQresultErrorField(result, Int32(UInt8(ascii: "C"))).map { String(cString: $0) } ?? ""
            let broken = raw.map { PQstatus($0) == CONNECTION_BAD } ?? true
            // Class 08 (connection exception) and 57P (operator intervention: shutdown, restart) are the
            // server going away: retryable, like a dead socket.
            let retryable = broken || state.hasPrefix("08") || state.hasPrefix("57P")
            let statusText = String(cString: PQresStatus(status))
            var text = "PostgreSQL at \(endpoint) could not \(doing): \(message.isEmpty ? statusText : message)"
            if !state.isEmpty { text += " (SQLSTATE \(state))" }
            text += " [\(call)]"
            throw StormError(retryable ? .connection : .internalError, text)
        }
    }

    private static func rows(of result: OpaquePointer) -> PostgresRows {
        var rows = PostgresRows()
        let columnCount = Int(PQnfields(result))
        let rowCount = Int(PQntuples(result))
        rows.columns = (0..<columnCount).map { PQfname(result, Int32($0)).map { String(cString: $0) } ?? "" }
        rows.rows.reserveCapacity(rowCount)
        for row in 0..<rowCount {
            var values: [[UInt8]?] = []
            values.reserveCapacity(columnCount)
            for column in 0..<columnCount {
                if PQgetisnull(result, Int32(row), Int32(column)) == 1 {
                    values.append(nil)
                    continue
                }
                let length = Int(PQgetlength(result, Int32(row), Int32(column)))
                if let pointer = PQgetvalue(result, Int32(row), Int32(column)), length > 0 {
                    values.append(pointer.withMemoryRebound(to: UInt8.self, capacity: length) { Array(UnsafeBufferPointer(start: $0, count: length)) })
                } else {
                    values.append([])
                }
            }
            rows.rows.append(values)
        }
        rows.affected = PQcmdTuples(result).flatMap { Int(String(cString: $0)) } ?? 0
        return rows
    }

    /// libpq's messages end with a newline and may span lines; errors read better on one.
    package static func serverMessage(_ pointer: UnsafePointer<CChar>?) -> String {
        guard let pointer else { return "" }
        return String(cString: pointer).split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }
            .joined(separator: "; ")
    }
}

// MARK: - C interop

/// What the notice processor needs; released when its connection closes.
package final class PostgresNoticeBox: Sendable {
    package let logger: Logger
    package let endpoint: String

    package init(logger: Logger, endpoint: String) {
        self.logger = logger
        self.endpoint = endpoint
    }
}

/// Routes a server NOTICE to the logger (libpq would print it to stderr).
private func postgresNoticeProcessor(_ argument: UnsafeMutableRawPointer?, _ message: UnsafePointer<CChar>?) {
    guard let argument, let message else { return }
    let box = Unmanaged<PostgresNoticeBox>.fromOpaque(argument).takeUnretainedValue()
    box.logger.debug("PostgreSQL: \(PostgresConnection.serverMessage(message))", metadata: ["postgres.server": "\(box.endpoint)"])
}

/// Passes `strings` to C as a NULL-terminated `const char * const *` for the duration of `body`.
private func withCStrings<R>(_ strings: [String], _ body: (UnsafePointer<UnsafePointer<CChar>?>?) -> R) -> R {
    let owned = strings.map { strdup($0) }
    defer { owned.forEach { free($0) } }
    var pointers: [UnsafePointer<CChar>?] = owned.map { $0.map { UnsafePointer($0) } }
    pointers.append(nil)
    return pointers.withUnsafeBufferPointer { buffer in body(buffer.baseAddress) }
}

/// Lays `parameters` out as libpq wants them: values, lengths and formats (0 text, 1 binary).
private func withParameters<R>(
    _ parameters: [PostgresValue],
    _ body: (Int32, UnsafePointer<UnsafePointer<CChar>?>?, UnsafePointer<Int32>?, UnsafePointer<Int32>?) -> R
) -> R {
    if parameters.isEmpty { return body(0, nil, nil, nil) }
    // One contiguous buffer holds every value; text values get a terminating NUL.
    var storage: [UInt8] = []
    var offsets: [Int?] = []
    var lengths: [Int32] = []
    var formats: [Int32] = []
    for parameter in parameters {
        switch parameter {
        case .text(let text):
            offsets.append(storage.count)
            storage.append(contentsOf: text.utf8)
            storage.append(0)
            lengths.append(0)
            formats.append(0)
        case .bytes(let bytes):
            offsets.append(storage.count)
            storage.append(contentsOf: bytes)
            lengths.append(Int32(clamping: bytes.count))
            formats.append(1)
        case .null:
            offsets.append(nil)
            lengths.append(0)
            formats.append(0)
        }
    }
    if storage.isEmpty { storage.append(0) }
    return storage.withUnsafeBufferPointer { bytes in
        let base = UnsafeRawPointer(bytes.baseAddress)
        let values: [UnsafePointer<CChar>?] = offsets.map { offset in
            offset.flatMap { base?.advanced(by: $0).assumingMemoryBound(to: CChar.self) }
        }
        return values.withUnsafeBufferPointer { valuePointers in
            lengths.withUnsafeBufferPointer { lengthPointers in
                formats.withUnsafeBufferPointer { formatPointers in
                    body(Int32(clamping: parameters.count), valuePointers.baseAddress, lengthPointers.baseAddress, formatPointers.baseAddress)
                }
            }
        }
    }
}

/// A libpq conninfo or URI with its password replaced by `***`, for logs, errors and `--print-config`.
///
/// URIs: `postgresql://user:secret@host/db` becomes `postgresql://user:***@host/db`, and a `password=`
/// query parameter is masked too. Keyword strings: `password=secret` (quoted or not) becomes `password=***`.
package func redactedPostgresConnectionString(_ conninfo: String) -> String {
    var text = conninfo
    if text.hasPrefix("postgresql://") || text.hasPrefix("postgres://"),
        let schemeEnd = text.range(of: "://")
    {
        let rest = text[schemeEnd.upperBound...]
        let authorityEnd = rest.firstIndex(where: { $0 == "/" || $0 == "?" }) ?? rest.endIndex
        if let at = rest[..<authorityEnd].lastIndex(of: "@"),
            let colon = rest[..<at].firstIndex(of: ":")
        {
            text.replaceSubrange(text.index(after: colon)..<at, with: "***")
        }
    }
    // `password=…` in a keyword string or a URI query, up to the next space or `&` (or closing quote).
    var output = ""
    var index = text.startIndex
    while let match = text.range(of: "password=", options: .caseInsensitive, range: index..<text.endIndex) {
        output += text[index..<match.upperBound]
        output += "***"
        var end = match.upperBound
        if end < text.endIndex, text[end] == "'" {
            end = text.index(after: end)
            while end < text.endIndex, text[end] != "'" {
                if text[end] == "\\" { end = text.index(after: end) }
                if end < text.endIndex { end = text.index(after: end) }
            }
            if end < text.endIndex { end = text.index(after: end) }
        } else {
            while end < text.endIndex, text[end] != " ", text[end] != "&" { end = text.index(after: end) }
        }
        index = end
    }
    output += text[index...]
    return output
}
