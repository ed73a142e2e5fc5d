import CHiredis
#if canImport(Glibc)
import Glibc
#endif

/// Where Redis is: parsed from `redis://[:password@]host[:port][/db]` (`--redis`, `STORM_REDIS_URL`).
///
/// The password never appears in `description`, logs or `--print-config`.
public struct RedisEndpoint: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public var database: Int
    public var password: String?

    public init(host: String = "127.0.0.1", port: Int = 6379, database: Int = 0, password: String? = nil) {
        self.host = host
        self.port = port
        self.database = database
        self.password = password
    }

    /// Parses a Redis URL; the error names what is wrong and what a valid URL looks like.
    public init(url: String) throws(StormError) {
        let example = "expected redis://HOST:PORT or redis://HOST:PORT/DB, for example redis://127.0.0.1:6379/0"
        guard url.hasPrefix("redis://") else {
            throw StormError(.configuration, "'\(Self.redacted(url))' is not a Redis URL (\(example))")
        }
        var rest = Substring(url.dropFirst("redis://".count))
        var password: String?
        if let at = rest.lastIndex(of: "@") {
            let credentials = rest[..<at]
            // redis://:secret@host and redis://user:secret@host (the user is ignored: Redis 5 AUTH takes one argument).
            if let colon = credentials.firstIndex(of: ":") {
                password = String(credentials[credentials.index(after: colon)...])
            } else {
                password = String(credentials)
            }
            rest = rest[rest.index(after: at)...]
        }
        var database = 0
        if let slash = rest.firstIndex(of: "/") {
            let dbText = rest[rest.index(after: slash)...]
            if !dbText.isEmpty {
                guard let number = Int(dbText), (0...15).contains(number) else {
                    throw StormError(.configuration, "'\(Self.redacted(url))': database '\(dbText)' is not a number from 0 to 15 (\(example))")
                }
                database = number
            }
            rest = rest[..<slash]
        }
        var host = String(rest)
        var port = 6379
        if let colon = rest.lastIndex(of: ":"), !rest.hasSuffix("]") {
            guard let number = Int(rest[rest.index(after: colon)...]), (1...65_535).contains(number) else {
                throw StormError(.configuration, "'\(Self.redacted(url))': '\(rest[rest.index(after: colon)...])' is not a port number (\(example))")
            }
            port = number
            host = String(rest[..<colon])
        }
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { throw StormError(.configuration, "'\(Self.redacted(url))' names no host (\(example))") }
        self.init(host: host, port: port, database: database, password: password.flatMap { $0.isEmpty ? nil : $0 })
    }

    /// The URL without its password, for logs and configuration output.
    public var description: String {
        let hostPart = host.contains(":") ? "[\(host)]" : host
        return "redis://\(password == nil ? "" : ":***@")\(hostPart):\(port)/\(database)"
    }

    private static func redacted(_ url: String) -> String {
        guard let at = url.lastIndex(of: "@") else { return url }
        return "redis://***" + url[at...]
    }
}

/// One reply, copied out of hiredis's `redisReply` so no C memory outlives the call that read it.
public enum RedisReply: Sendable, Equatable {
    case string([UInt8])
    case status(String)
    case integer(Int64)
    case array([RedisReply])
    case null
    case error(String)

    public var bytes: [UInt8]? {
        if case .string(let bytes) = self { return bytes }
        return nil
    }

    public var text: String? { bytes.map { String(decoding: $0, as: UTF8.self) } }

    public var integer: Int64? {
        if case .integer(let value) = self { return value }
        return nil
    }

    public var array: [RedisReply]? {
        if case .array(let values) = self { return values }
        return nil
    }
}

/// A blocking hiredis connection: the one place STORM calls hiredis, and the choke point that turns every
/// hiredis status into a `StormError` naming the call.
///
/// Not thread-safe (hiredis contexts are not): each owner uses it from one thread at a time (the
/// presence writer thread, or readers under a lock). Commands go through `redisAppendCommandArgv` and
/// `redisGetReply` because hiredis's variadic `redisCommand` cannot be called from Swift, and so that any
/// number of commands share one round trip: measured here, pipelining is 0.65 M ops/s against 15-50 k
/// ops/s for one round trip per command.
public final class RedisConnection {
    public let endpoint: RedisEndpoint
    private var context: UnsafeMutablePointer<redisContext>?
    /// Commands per flush: bounds the memory of one pipeline on both sides.
    public static let pipelineChunk = 1_000

    public var isOpen: Bool { context != nil }

    /// Connects (and authenticates and selects the database) within `timeoutSeconds`; every later read
    /// or write is bounded by the same timeout, so a stalled Redis cannot hang the caller forever.
    public init(endpoint: RedisEndpoint, timeoutSeconds: Double) throws(StormError) {
        self.endpoint = endpoint
        let timeout = timeval(tv_sec: Int(timeoutSeconds), tv_usec: Int((timeoutSeconds - Double(Int(timeoutSeconds))) * 1_000_000))
        guard let context = redisConnectWithTimeout(endpoint.host, Int32(endpoint.port), timeout) else {
            throw StormError(.connection, "cannot connect to Redis at \(endpoint): out of memory for the hiredis context")
        }
        self.context = context
        if context.pointee.err != 0 {
            let message = Self.errorText(context)
            close()
            throw StormError(.connection, "cannot connect to Redis at \(endpoint): \(message); check that redis-server runs there (--redis, STORM_REDIS_URL)")
        }
        guard redisSetTimeout(context, timeout) == REDIS_OK else {
            let message = Self.errorText(context)
            close()
            throw StormError(.connection, "redisSetTimeout on \(endpoint) failed: \(message)")
        }
        _ = redisEnableKeepAlive(context)
        var setup: [[String]] = []
        if let password = endpoint.password { setup.append(["AUTH", password]) }
        if endpoint.database != 0 { setup.append(["SELECT", String(endpoint.database)]) }
        if !setup.isEmpty {
            let replies = try pipeline(setup.map { $0.map { Array($0.utf8) } })
            for (command, reply) in zip(setup, replies) {
                if case .error(let message) = reply {
                    close()
                    throw StormError(.connection, "Redis at \(endpoint) refused \(command[0]): \(message); check the password and database in the URL")
                }
            }
        }
    }

    deinit { close() }

    public func close() {
        if let context { redisFree(context) }
        context = nil
    }

    /// Sends one command and reads its reply (one round trip: prefer `pipeline`).
    public func command(_ arguments: [String]) throws(StormError) -> RedisReply {
        let replies = try pipeline([arguments.map { Array($0.utf8) }])
        return replies.first ?? .null
    }

    /// Sends every command, flushing in chunks of `pipelineChunk`, and returns their replies in order.
    /// A Redis error reply (`-ERR …`) is returned as `.error`, not thrown: only a broken connection throws,
    /// after which this connection is closed and must be replaced.
    public func pipeline(_ commands: [[[UInt8]]]) throws(StormError) -> [RedisReply] {
        var replies: [RedisReply] = []
        replies.reserveCapacity(commands.count)
        var start = 0
        while start < commands.count {
            let end = min(commands.count, start + Self.pipelineChunk)
            for index in start..<end { try append(commands[index]) }
            for _ in start..<end { replies.append(try readReply()) }
            start = end
        }
        return replies
    }

    private func append(_ arguments: [[UInt8]]) throws(StormError) {
        guard let context else { throw StormError(.connection, "the connection to Redis at \(endpoint) is closed") }
        let total = arguments.reduce(0) { $0 + $1.count }
        let storage = UnsafeMutablePointer<CChar>.allocate(capacity: max(total, 1))
        defer { storage.deallocate() }
        var pointers: [UnsafePointer<CChar>?] = []
        var lengths: [Int] = []
        pointers.reserveCapacity(arguments.count)
        lengths.reserveCapacity(arguments.count)
        var offset = 0
        for argument in arguments {
            argument.withUnsafeBytes { bytes in
                if let base = bytes.baseAddress, bytes.count > 0 {
                    UnsafeMutableRawPointer(storage + offset).copyMemory(from: base, byteCount: bytes.count)
                }
            }
            pointers.append(UnsafePointer(storage + offset))
            lengths.append(argument.count)
            offset += argument.count
        }
        // redisAppendCommandArgv copies the arguments into its output buffer before returning.
        let status = pointers.withUnsafeMutableBufferPointer { argv in
            lengths.withUnsafeBufferPointer { argvlen in
                redisAppendCommandArgv(context, Int32(arguments.count), argv.baseAddress, argvlen.baseAddress)
            }
        }
        try check(status, call: "redisAppendCommandArgv")
    }

    private func readReply() throws(StormError) -> RedisReply {
        guard let context else { throw StormError(.connection, "the connection to Redis at \(endpoint) is closed") }
        var raw: UnsafeMutableRawPointer?
        let status = redisGetReply(context, &raw)
        try check(status, call: "redisGetReply")
        guard let raw else { throw StormError(.connection, "redisGetReply on \(endpoint) returned no reply") }
        defer { freeReplyObject(raw) }
        return Self.convert(raw.assumingMemoryBound(to: redisReply.self))
    }

    /// The choke point: a hiredis status other than `REDIS_OK` closes the connection (hiredis leaves it
    /// unusable) and becomes a `.connection` error naming the call and hiredis's reason.
    private func check(_ status: Int32, call: String) throws(StormError) {
        guard status != REDIS_OK else { return }
        let message = context.map(Self.errorText) ?? "no context"
        close()
        throw StormError(.connection, "\(call) on Redis at \(endpoint) failed: \(message)")
    }

    private static func errorText(_ context: UnsafeMutablePointer<redisContext>) -> String {
        withUnsafeBytes(of: context.pointee.errstr) { bytes in
            let prefix = bytes.prefix { $0 != 0 }
            return prefix.isEmpty ? "error \(context.pointee.err)" : String(decoding: prefix, as: UTF8.self)
        }
    }

    private static func convert(_ reply: UnsafeMutablePointer<redisReply>) -> RedisReply {
        let value = reply.pointee
        func bytes() -> [UInt8] {
            guard let str = value.str, value.len > 0 else { return [] }
            return Array(UnsafeRawBufferPointer(start: str, count: value.len))
        }
        switch value.type {
        case REDIS_REPLY_STRING: return .string(bytes())
        case REDIS_REPLY_STATUS: return .status(String(decoding: bytes(), as: UTF8.self))
        case REDIS_REPLY_ERROR: return .error(String(decoding: bytes(), as: UTF8.self))
        case REDIS_REPLY_INTEGER: return .integer(Int64(value.integer))
        case REDIS_REPLY_NIL: return .null
        case REDIS_REPLY_ARRAY:
            var elements: [RedisReply] = []
            elements.reserveCapacity(value.elements)
            for index in 0..<value.elements {
                if let element = value.element?[index] { elements.append(convert(element)) } else { elements.append(.null) }
            }
            return .array(elements)
        default:
            return .error("unknown hiredis reply type \(value.type)")
        }
    }
}

extension RedisConnection {
    /// The hiredis library this program is linked with, for version reports.
    public static var libraryVersion: String { String(cString: storm_hiredis_version()) }
}
