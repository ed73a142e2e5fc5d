/// One Server-Sent Event as the gateway sends it (`id:`, `event:`, `data:` lines, then a blank line).
public struct ServerSentEvent: Sendable, Equatable {
    public var id: String?
    public var event: String?
    /// The `data` lines joined with `\n`, as bytes: for STORM, one envelope's JSON.
    public var data: [UInt8]

    public init(id: String? = nil, event: String? = nil, data: [UInt8]) {
        self.id = id
        self.event = event
        self.data = data
    }
}

/// Splits a `text/event-stream` body into events, following the WHATWG "event stream interpretation"
/// rules that matter here: lines end in LF, CRLF or CR (a CR at the end of one chunk and the LF at the
/// start of the next are one line end), comment lines start with `:`, a blank line dispatches, an event
/// without data is dropped, one leading space after the colon is removed.
///
/// Fed arbitrary chunks as they come off the socket; memory is one line plus the event being built.
public struct ServerSentEventParser: Sendable {
    private var line: [UInt8] = []
    private var lastWasCR = false
    private var id: String?
    private var event: String?
    private var data: [UInt8] = []
    private var hasData = false
    /// Longest line accepted: bounds memory when the peer is not an SSE server.
    public let maximumLineLength: Int

    public init(maximumLineLength: Int = 1 << 20) {
        self.maximumLineLength = maximumLineLength
    }

    public enum Failure: Error, Equatable {
        case lineTooLong(Int)
    }

    /// Consumes `bytes`, calling `onEvent` for every event they complete.
    public mutating func feed<Bytes: Sequence>(
        _ bytes: Bytes, onEvent: (ServerSentEvent) -> Void
    ) throws(Failure) where Bytes.Element == UInt8 {
        for byte in bytes {
            switch byte {
            case 0x0A:
                if lastWasCR {
                    lastWasCR = false  // the LF of a CRLF
                    continue
                }
                endLine(onEvent: onEvent)
            case 0x0D:
                lastWasCR = true
                endLine(onEvent: onEvent)
            default:
                lastWasCR = false
                guard line.count < maximumLineLength else { throw .lineTooLong(maximumLineLength) }
                line.append(byte)
            }
        }
    }

    private mutating func endLine(onEvent: (ServerSentEvent) -> Void) {
        defer { line.removeAll(keepingCapacity: true) }
        if line.isEmpty {
            dispatch(onEvent: onEvent)
            return
        }
        if line[0] == UInt8(ascii: ":") { return }  // comment (heartbeat)
        let colon = line.firstIndex(of: UInt8(ascii: ":"))
        let name = line[..<(colon ?? line.endIndex)]
        var valueStart = colon.map { $0 + 1 } ?? line.endIndex
        if valueStart < line.endIndex, line[valueStart] == UInt8(ascii: " ") { valueStart += 1 }
        let value = line[valueStart...]
        switch String(decoding: name, as: UTF8.self) {
        case "data":
            if hasData { data.append(0x0A) }
            data.append(contentsOf: value)
            hasData = true
        case "id":
            if !value.contains(0) { id = String(decoding: value, as: UTF8.self) }
        case "event":
            event = String(decoding: value, as: UTF8.self)
        default:
            break  // `retry` and unknown fields: nothing for a STORM client to do
        }
    }

    private mutating func dispatch(onEvent: (ServerSentEvent) -> Void) {
        defer {
            data.removeAll(keepingCapacity: false)
            hasData = false
            event = nil
        }
        guard hasData else { return }
        // The last event id persists across events, as in the spec.
        onEvent(ServerSentEvent(id: id, event: event, data: data))
    }
}
