import NIOCore
import NIOHTTP1
import StormCore

/// Writes complete HTTP responses; shared by the request handler and SSE sessions that fail to start.
package enum HTTPResponder {
    /// What becomes of the connection once the answer is written.
    package enum After {
        case keepAlive
        case close
        /// The request's body was not read: stop writing (FIN), drop what the client still sends for
        /// up to `lingerTime` and `lingerBytes`, then close. Closing at once with unread bytes would make the kernel send
        /// a reset, and a reset can destroy the answer before the client reads it.
        case lingeringClose
    }

    package static let lingerTime = TimeAmount.seconds(2)
    /// Most bytes of an unread body dropped while lingering.
    package static let lingerBytes = 256 * 1024

    package static func respond(context: ChannelHandlerContext, status: HTTPResponseStatus, contentType: String, body: ByteBuffer, keepAlive: Bool, requestID: String? = nil) {
        respond(context: context, status: status, contentType: contentType, body: body, after: keepAlive ? .keepAlive : .close, requestID: requestID)
    }

    package static func respond(
        context: ChannelHandlerContext, status: HTTPResponseStatus, contentType: String, body: ByteBuffer, after: After, requestID: String? = nil, headers extra: [(String, String)] = []
    ) {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: contentType)
        headers.add(name: "Content-Length", value: String(body.readableBytes))
        if let requestID { headers.add(name: "X-Request-Id", value: requestID) }
        for (name, value) in extra { headers.add(name: name, value: value) }
        if after != .keepAlive { headers.add(name: "Connection", value: "close") }
        context.write(NIOAny(HTTPServerResponsePart.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
        if body.readableBytes > 0 {
            context.write(NIOAny(HTTPServerResponsePart.body(.byteBuffer(body))), promise: nil)
        }
        let done = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(NIOAny(HTTPServerResponsePart.end(nil)), promise: done)
        switch after {
        case .keepAlive:
            break
        case .close:
            done.futureResult.assumeIsolated().whenComplete { [context] _ in context.close(promise: nil) }
        case .lingeringClose:
            let channel = context.channel
            done.futureResult.assumeIsolated().whenComplete { [context] _ in
                let halfClosed = context.eventLoop.makePromise(of: Void.self)
                context.close(mode: .output, promise: halfClosed)
                // The client closing its side ends the connection at once (no half-closure is allowed).
                halfClosed.futureResult.whenFailure { _ in channel.close(promise: nil) }
                channel.eventLoop.scheduleTask(in: lingerTime) { channel.close(promise: nil) }
            }
        }
    }

    package static func respond(context: ChannelHandlerContext, error: StormError, keepAlive: Bool, requestID: String? = nil) {
        respond(context: context, error: error, after: keepAlive ? .keepAlive : .close, requestID: requestID)
    }

    package static func respond(context: ChannelHandlerContext, error: StormError, after: After, requestID: String? = nil, headers: [(String, String)] = []) {
        respond(
            context: context, status: HTTPResponseStatus(statusCode: error.code.httpStatus), contentType: "application/json",
            body: ByteBuffer(string: error.jsonBody + "\n"), after: after, requestID: requestID, headers: headers)
    }
}

/// A request target split into its path and decoded query parameters.
package struct RequestTarget {
    package let path: String
    package let query: [(name: String, value: String)]

    /// Splits on bytes, not `Character`s: a `String.split` walks grapheme clusters, and on the publish
    /// path that was a tenth of the gateway's time per request.
    package init(_ uri: String) {
        let bytes = uri.utf8
        guard let mark = bytes.firstIndex(of: UInt8(ascii: "?")) else {
            path = uri
            query = []
            return
        }
        path = String(uri[..<mark])
        var query: [(String, String)] = []
        for pair in bytes[bytes.index(after: mark)...].split(separator: UInt8(ascii: "&")) {
            if let equals = pair.firstIndex(of: UInt8(ascii: "=")) {
                query.append((Self.percentDecode(pair[..<equals]), Self.percentDecode(pair[pair.index(after: equals)...])))
            } else {
                query.append((Self.percentDecode(pair), ""))
            }
        }
        self.query = query
    }

    package func values(of name: String) -> [String] {
        query.filter { $0.name == name }.map(\.value)
    }

    /// Decodes `%XX` and `+`; a malformed escape is kept literally (channel validation then refuses it).
    package static func percentDecode(_ text: Substring) -> String {
        percentDecode(text.utf8)
    }

    package static func percentDecode<Bytes: Collection<UInt8>>(_ text: Bytes) -> String {
        guard text.contains(where: { $0 == UInt8(ascii: "%") || $0 == UInt8(ascii: "+") }) else {
            return String(decoding: text, as: UTF8.self)
        }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(text.count)
        var index = text.startIndex
        while index != text.endIndex {
            let byte = text[index]
            let next = text.index(after: index)
            if byte == UInt8(ascii: "+") {
                bytes.append(UInt8(ascii: " "))
            } else if byte == UInt8(ascii: "%"), next != text.endIndex, text.index(after: next) != text.endIndex,
                let high = hexValue(text[next]), let low = hexValue(text[text.index(after: next)])
            {
                bytes.append(high << 4 | low)
                index = text.index(next, offsetBy: 2)
                continue
            } else {
                bytes.append(byte)
            }
            index = next
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return byte - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}
