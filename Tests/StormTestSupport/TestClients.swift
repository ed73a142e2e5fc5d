import NIOCore
import StormCore
import Testing

/// A parsed HTTP response, as the raw tests read it.
package struct TestHTTPResponse {
    package var status: Int
    package var headers: [(String, String)]
    package var body: [UInt8]

    package func header(_ name: String) -> String? {
        headers.first { $0.0.lowercased() == name.lowercased() }?.1
    }

    package var text: String { String(decoding: body, as: UTF8.self) }
}

extension RawConnection {
    /// Reads a response head (`HTTP/1.1 200 OK` and headers).
    package func readResponseHead(seconds: Double = 30) async throws -> TestHTTPResponse {
        try await read("an HTTP response head", seconds: seconds) { buffer in
            let view = buffer.readableBytesView
            let marker: [UInt8] = [13, 10, 13, 10]
            guard let end = view.firstRange(of: marker) else { return nil }
            let headText = String(decoding: view[view.startIndex..<end.lowerBound], as: UTF8.self)
            buffer.moveReaderIndex(forwardBy: end.upperBound - view.startIndex)
            var lines = headText.split(separator: "\r\n").map(String.init)
            let statusLine = lines.removeFirst().split(separator: " ")
            let status = statusLine.count > 1 ? Int(statusLine[1]) ?? 0 : 0
            let headers = lines.compactMap { line -> (String, String)? in
                guard let colon = line.firstIndex(of: ":") else { return nil }
                return (String(line[..<colon]), String(line[line.index(after: colon)...]).trimmingCharacters(in: " "))
            }
            return TestHTTPResponse(status: status, headers: headers, body: [])
        }
    }

    /// Reads a whole response with a `Content-Length` body.
    package func readResponse(seconds: Double = 30) async throws -> TestHTTPResponse {
        var response = try await readResponseHead(seconds: seconds)
        let length = Int(response.header("content-length") ?? "0") ?? 0
        response.body = try await read("a \(length)-byte body", seconds: seconds) { buffer in
            buffer.readBytes(length: length)
        }
        return response
    }

    /// Sends one HTTP/1.1 request and reads its response.
    package func request(_ method: String, _ target: String, body: [UInt8] = [], headers: [String] = []) async throws -> TestHTTPResponse {
        var head = "\(method) \(target) HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: \(body.count)\r\n"
        for header in headers { head += header + "\r\n" }
        try await send(Array((head + "\r\n").utf8) + body)
        return try await readResponse()
    }
}

extension String {
    package func trimmingCharacters(in set: Character) -> String {
        String(drop(while: { $0 == set }).reversed().drop(while: { $0 == set }).reversed())
    }
}

/// One WebSocket frame as the server sent it.
package struct TestFrame {
    package var fin: Bool
    package var opcode: UInt8
    package var payload: [UInt8]

    package var text: String { String(decoding: payload, as: UTF8.self) }

    /// The close code of a close frame.
    package var closeCode: UInt16? {
        guard opcode == 0x8, payload.count >= 2 else { return nil }
        return UInt16(payload[0]) << 8 | UInt16(payload[1])
    }

    /// The JSON members of a text frame.
    package var json: [String: [UInt8]] {
        (try? JSONScanner.objectMembers(payload)) ?? [:]
    }

    package func string(_ key: String) -> String? {
        json[key].flatMap { try? JSONScanner.string($0) }
    }

    package var type: String? { string("type") }
}

/// A WebSocket client over a raw connection: it frames by hand so tests can break the rules on purpose.
package struct TestWebSocket {
    package let connection: RawConnection

    package static func connect(port: Int, path: String = "/ws", receiveBuffer: Int? = nil) async throws -> TestWebSocket {
        let connection = try await RawConnection.connect(port: port, receiveBuffer: receiveBuffer)
        try await connection.send(
            "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        let head = try await connection.readResponseHead()
        guard head.status == 101 else {
            throw StormError(.protocolViolation, "upgrade answered \(head.status)")
        }
        // RFC 6455 section 1.3's worked example: this key must give this accept value.
        #expect(head.header("sec-websocket-accept") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        return TestWebSocket(connection: connection)
    }

    package static func frameBytes(opcode: UInt8, payload: [UInt8], fin: Bool = true, masked: Bool = true, rsv: UInt8 = 0) -> [UInt8] {
        var bytes: [UInt8] = [(fin ? 0x80 : 0) | (rsv << 4) | opcode]
        let maskBit: UInt8 = masked ? 0x80 : 0
        if payload.count < 126 {
            bytes.append(maskBit | UInt8(payload.count))
        } else if payload.count <= 65_535 {
            bytes.append(maskBit | 126)
            bytes += [UInt8(payload.count >> 8), UInt8(payload.count & 0xFF)]
        } else {
            bytes.append(maskBit | 127)
            for shift in stride(from: 56, through: 0, by: -8) { bytes.append(UInt8((payload.count >> shift) & 0xFF)) }
        }
        if masked {
            let key: [UInt8] = [0x37, 0xFA, 0x21, 0x3D]
            bytes += key
            bytes += payload.enumerated().map { $0.element ^ key[$0.offset % 4] }
        } else {
            bytes += payload
        }
        return bytes
    }

    package func sendFrame(opcode: UInt8, payload: [UInt8], fin: Bool = true, masked: Bool = true, rsv: UInt8 = 0) async throws {
        try await connection.send(Self.frameBytes(opcode: opcode, payload: payload, fin: fin, masked: masked, rsv: rsv))
    }

    package func send(_ json: String) async throws {
        try await sendFrame(opcode: 0x1, payload: Array(json.utf8))
    }

    package func readFrame(seconds: Double = 30) async throws -> TestFrame {
        try await connection.read("a WebSocket frame", seconds: seconds) { buffer in
            guard buffer.readableBytes >= 2, let first = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self),
                let second = buffer.getInteger(at: buffer.readerIndex + 1, as: UInt8.self)
            else { return nil }
            var headerLength = 2
            var length = Int(second & 0x7F)
            if length == 126 {
                guard let extended = buffer.getInteger(at: buffer.readerIndex + 2, as: UInt16.self) else { return nil }
                length = Int(extended)
                headerLength = 4
            } else if length == 127 {
                guard let extended = buffer.getInteger(at: buffer.readerIndex + 2, as: UInt64.self) else { return nil }
                length = Int(extended)
                headerLength = 10
            }
            guard buffer.readableBytes >= headerLength + length else { return nil }
            buffer.moveReaderIndex(forwardBy: headerLength)
            let payload = buffer.readBytes(length: length) ?? []
            #expect(second & 0x80 == 0, "server frames must not be masked")
            return TestFrame(fin: first & 0x80 != 0, opcode: first & 0x0F, payload: payload)
        }
    }

    /// Reads frames until one has the wanted `type` (`reply`, `error`, `message`), keeping none of the others.
    package func next(_ type: String, seconds: Double = 30) async throws -> TestFrame {
        let deadline = ContinuousClock.now + .seconds(seconds)
        while ContinuousClock.now < deadline {
            let frame = try await readFrame(seconds: seconds)
            if frame.opcode == 0x1, frame.type == type { return frame }
            if frame.opcode == 0x8 { throw StormError(.connection, "closed with \(frame.closeCode ?? 0) while waiting for \(type)") }
        }
        throw RawConnection.Timeout(what: "a \(type) frame")
    }

    package func subscribe(_ channels: [String], id: Int = 1) async throws -> TestFrame {
        let list = channels.map { JSONWriter.quoted($0) }.joined(separator: ",")
        try await send("{\"id\":\(id),\"op\":\"subscribe\",\"channels\":[\(list)]}")
        let frame = try await readFrame()
        return frame
    }

    package func close() async { await connection.close() }

    package init(connection: RawConnection) {
        self.connection = connection
    }
}

/// An SSE client over a raw connection: reads the chunked stream and splits it into events.
package struct TestEventStream {
    package let connection: RawConnection
    package let head: TestHTTPResponse

    package struct Event {
        package var id: String?
        package var event: String?
        package var data: String
        package var comment: String?
    }

    package static func connect(port: Int, channels: [String], extraHeaders: [String] = []) async throws -> TestEventStream {
        let connection = try await RawConnection.connect(port: port)
        let query = channels.map { "subject=\(percentEncodeQueryValue($0))" }.joined(separator: "&")
        var request = "GET /events?\(query) HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
        for header in extraHeaders { request += header + "\r\n" }
        try await connection.send(request + "\r\n")
        let head = try await connection.readResponseHead()
        return TestEventStream(connection: connection, head: head)
    }

    /// The next `event: message` (comments and the `retry` field are skipped).
    package func nextMessage(seconds: Double = 30) async throws -> Event {
        while true {
            let event = try await nextEvent(seconds: seconds)
            if event.event == "message" { return event }
        }
    }

    /// The next event or comment block, de-chunked.
    package func nextEvent(seconds: Double = 30) async throws -> Event {
        try await connection.read("an SSE event", seconds: seconds) { buffer in
            // Parse chunks without consuming until a whole event (blank line) is available.
            var scan = buffer
            var text: [UInt8] = []
            while true {
                let view = scan.readableBytesView
                guard let lineEnd = view.firstRange(of: [13, 10]) else { return nil }
                let sizeText = String(decoding: view[view.startIndex..<lineEnd.lowerBound], as: UTF8.self)
                guard let size = Int(sizeText, radix: 16) else { return nil }
                let chunkStart = lineEnd.upperBound - view.startIndex
                guard scan.readableBytes >= chunkStart + size + 2 else { return nil }
                scan.moveReaderIndex(forwardBy: chunkStart)
                text += scan.readBytes(length: size) ?? []
                scan.moveReaderIndex(forwardBy: 2)
                if let blank = text.firstRange(of: [10, 10]) {
                    // Events here are always whole chunks, so the blank line ends the chunk.
                    let block = String(decoding: text[..<blank.lowerBound], as: UTF8.self)
                    buffer = scan
                    var event = Event(data: "")
                    for line in block.split(separator: "\n") {
                        if line.hasPrefix("id: ") { event.id = String(line.dropFirst(4)) }
                        if line.hasPrefix("event: ") { event.event = String(line.dropFirst(7)) }
                        if line.hasPrefix("data: ") { event.data += line.dropFirst(6) }
                        if line.hasPrefix(": ") { event.comment = String(line.dropFirst(2)) }
                    }
                    return event
                }
                if size == 0 { return nil }
            }
        }
    }

    package func close() async { await connection.close() }
}
