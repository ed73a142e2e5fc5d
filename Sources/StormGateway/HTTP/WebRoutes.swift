import NIOCore
import NIOHTTP1
import StormCore
import StormWeb

/// The web dashboard's routes: `/`, `/ui/…` and `/storm.js` answered from `StormWeb`'s resource files.
///
/// The HTTP router asks `response(for:path:)` before its own routes when the page is enabled; `nil`
/// means "not a page path", so API routes and 404s stay the router's. The answers are built once:
/// each asset's bytes, content type and strong `ETag` (an FNV-1a hash of the bytes) are computed at
/// first use, so a request costs a dictionary lookup. Assets are served with `Cache-Control: no-cache`
/// and revalidated by `If-None-Match` (a `304` with no body), because their URLs carry no version: a
/// new stormd is picked up at the next load, and an unchanged one costs no body.
///
/// The page gets a strict Content-Security-Policy: scripts, styles and connections from this origin
/// only, no inline script, no framing. With messages rendered through `textContent`, untrusted payloads
/// can neither run script nor send data elsewhere.
package enum WebUI {
    /// A complete answer for one page request, written by `write(_:to:keepAlive:)`.
    package struct Response {
        package let status: HTTPResponseStatus
        /// Content type, cache and security headers; `Content-Length` and `Connection` are added when
        /// written.
        package let headers: HTTPHeaders
        /// The body to send; empty for `HEAD` and `304`.
        package let body: ByteBuffer
        /// The length `Content-Length` announces: the asset's length also for `HEAD`.
        package let contentLength: Int
    }

    /// One served file, prepared once.
    package struct Asset: Sendable {
        package let contentType: String
        package let bytes: ByteBuffer
        package let etag: String
        package let isPage: Bool

        package init(_ bytes: [UInt8], contentType: String, isPage: Bool = false) {
            self.contentType = contentType
            self.bytes = ByteBuffer(bytes: bytes)
            self.etag = "\"" + WebUI.fingerprint(bytes) + "\""
            self.isPage = isPage
        }
    }

    /// The files of `StormWeb`'s resource bundle, read once, or why they could not be.
    package static let loaded: Result<[String: Asset], StormWebFiles.LoadError> = Result { () throws(StormWebFiles.LoadError) in
        var assets: [String: Asset] = [:]
        for file in try StormWebFiles.load() {
            let asset = Asset(file.bytes, contentType: file.contentType, isPage: file.isPage)
            for path in file.paths { assets[path] = asset }
        }
        return assets
    }

    /// Paths answered, with the file each serves (empty when the bundle could not be read, which
    /// `stormd` refuses at start). `/` and `/ui/` are the same page; the page refers to its files by
    /// absolute `/ui/…` paths so it works from either; `/storm.js` is the client library.
    package static var assets: [String: Asset] {
        (try? loaded.get()) ?? [:]
    }

    /// The policy the page runs under; `connect-src 'self'` covers `EventSource` and `fetch`.
    package static let contentSecurityPolicy =
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        + "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

    /// Whether `path` belongs to the page (so a wrong method there is a 405, not a 404).
    package static func handles(_ path: String) -> Bool {
        assets[path] != nil
    }

    /// The answer for a request to a page path, or `nil` when `path` is not one (the router goes on).
    ///
    /// `GET` and `HEAD` are served; any other method gets the usual `method_not_allowed` JSON error.
    package static func response(for head: HTTPRequestHead, path: String) -> Response? {
        guard let asset = assets[path] else { return nil }
        guard head.method == .GET || head.method == .HEAD else {
            let error = StormError(.methodNotAllowed, "\(head.method) is not allowed on \(path): the web page takes GET and HEAD")
            var headers = HTTPHeaders()
            headers.add(name: "Content-Type", value: "application/json")
            headers.add(name: "Allow", value: "GET, HEAD")
            let body = ByteBuffer(string: error.jsonBody + "\n")
            return Response(status: HTTPResponseStatus(statusCode: error.code.httpStatus), headers: headers, body: body, contentLength: body.readableBytes)
        }
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: asset.contentType)
        headers.add(name: "Cache-Control", value: "no-cache")
        headers.add(name: "ETag", value: asset.etag)
        headers.add(name: "X-Content-Type-Options", value: "nosniff")
        headers.add(name: "Referrer-Policy", value: "no-referrer")
        if asset.isPage {
            headers.add(name: "Content-Security-Policy", value: contentSecurityPolicy)
            headers.add(name: "X-Frame-Options", value: "DENY")
        }
        if matches(head.headers[canonicalForm: "if-none-match"], etag: asset.etag) {
            return Response(status: .notModified, headers: headers, body: ByteBuffer(), contentLength: 0)
        }
        let body = head.method == .HEAD ? ByteBuffer() : asset.bytes
        return Response(status: .ok, headers: headers, body: body, contentLength: asset.bytes.readableBytes)
    }

    /// Writes `response` as one complete HTTP response, closing the connection after it unless
    /// `keepAlive`.
    package static func write(_ response: Response, to context: ChannelHandlerContext, keepAlive: Bool) {
        var headers = response.headers
        if response.status != .notModified {
            headers.replaceOrAdd(name: "Content-Length", value: String(response.contentLength))
        }
        if !keepAlive { headers.replaceOrAdd(name: "Connection", value: "close") }
        let head = HTTPResponseHead(version: .http1_1, status: response.status, headers: headers)
        context.write(NIOAny(HTTPServerResponsePart.head(head)), promise: nil)
        if response.body.readableBytes > 0 {
            context.write(NIOAny(HTTPServerResponsePart.body(.byteBuffer(response.body))), promise: nil)
        }
        let done = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(NIOAny(HTTPServerResponsePart.end(nil)), promise: done)
        if !keepAlive {
            done.futureResult.assumeIsolated().whenComplete { [context] _ in context.close(promise: nil) }
        }
    }

    /// Whether an `If-None-Match` header (a list of entity tags, or `*`) names `etag`; weak tags
    /// (`W/"…"`) match too, as RFC 9110 asks for this comparison.
    package static func matches(_ ifNoneMatch: [Substring], etag: String) -> Bool {
        ifNoneMatch.contains { candidate in
            let tag = candidate.trimmingPrefix("W/")
            return tag == "*" || tag == etag
        }
    }

    /// A 64-bit FNV-1a hash in hex: stable across runs and builds, unlike `Hasher`.
    package static func fingerprint(_ bytes: some Sequence<UInt8>) -> String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in bytes {
            hash ^= UInt64(byte)
            hash &*= 0x0000_0100_0000_01b3
        }
        let hex = String(hash, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }
}
