/// Reading a gateway's error answers back into `StormError`, so the CLI shows exactly the code and
/// message the server chose (`{"error":{"code":…,"message":…}}`, see docs/protocol.md).
extension StormError {
    public init(httpStatus status: Int, body: [UInt8]) {
        if let members = try? JSONScanner.objectMembers(body), let rawError = members["error"],
            let inner = try? JSONScanner.objectMembers(rawError),
            let rawCode = inner["code"], let code = try? JSONScanner.string(rawCode)
        {
            let message = inner["message"].flatMap { try? JSONScanner.string($0) } ?? "HTTP \(status)"
            self.init(Code(rawValue: code), message)
            return
        }
        let text = String(decoding: body.prefix(200), as: UTF8.self).trimmingWhitespace()
        let detail = text.isEmpty ? "" : ": \(text)"
        self.init(Self.fallbackCode(forHTTPStatus: status), "server answered HTTP \(status)\(detail)")
    }

    /// The code for an error answer that carried no JSON body (a proxy, or a server from elsewhere).
    static func fallbackCode(forHTTPStatus status: Int) -> Code {
        switch status {
        case 400: return .badRequest
        case 404: return .notFound
        case 405: return .methodNotAllowed
        case 413: return .messageTooLarge
        case 503: return .brokerUnavailable
        case 507: return .storageFull
        case 400..<500: return .badRequest
        default: return .internalError
        }
    }

    /// The error a server's WebSocket close code stands for (docs/protocol.md, error table).
    public init(webSocketCloseCode code: UInt16, reason: String) {
        let detail = reason.isEmpty ? "" : ": \(reason)"
        switch code {
        case 1001: self.init(.shuttingDown, "the server is shutting down (close 1001)\(detail)")
        case 1008: self.init(.badRequest, "the server closed the connection: bad request (close 1008)\(detail)")
        case 1009: self.init(.messageTooLarge, "the server closed the connection: message too large (close 1009)\(detail)")
        case 1013: self.init(.storageFull, "the server closed the connection: its message store is full (close 1013)\(detail)")
        case 4008: self.init(.slowClient, "the server disconnected this slow client (close 4008)\(detail)")
        case 1002, 1003, 1007:
            self.init(.protocolViolation, "the server closed the connection: protocol error (close \(code))\(detail)")
        case 1011: self.init(.connection, "the server closed the connection: server error (close 1011)\(detail)")
        default: self.init(.connection, "the server closed the connection (close \(code))\(detail)")
        }
    }
}
