import Foundation
import NIOCore
import NIOHTTP1
import StormTestSupport
import Testing

@testable import StormBroker
@testable import StormConfiguration
@testable import StormConsumer
@testable import StormGateway
@testable import StormNATS
@testable import StormObservability
@testable import StormPresence
@testable import StormStore

/// The page and storm.js come from StormWeb's resource bundle, with the same paths and headers as when
/// they were Swift strings.
@Suite("WebFiles")
struct WebFilesTests {
    private func get(_ path: String, ifNoneMatch: String? = nil, method: HTTPMethod = .GET) -> WebUI.Response? {
        var head = HTTPRequestHead(version: .http1_1, method: method, uri: path)
        if let ifNoneMatch { head.headers.add(name: "If-None-Match", value: ifNoneMatch) }
        return WebUI.response(for: head, path: path)
    }

    @Test("every file is read from the bundle and served with its content type and an ETag")
    func servedFromTheBundle() throws {
        let expected: [(String, String)] = [
            ("/", "text/html; charset=utf-8"), ("/ui/", "text/html; charset=utf-8"), ("/ui/index.html", "text/html; charset=utf-8"),
            ("/ui/app.js", "text/javascript; charset=utf-8"), ("/ui/app.css", "text/css; charset=utf-8"),
            ("/ui/favicon.svg", "image/svg+xml"), ("/storm.js", "text/javascript; charset=utf-8"),
            ("/storm.d.ts", "application/typescript; charset=utf-8"),
        ]
        #expect(throws: Never.self) { try WebUI.loaded.get() }
        for (path, type) in expected {
            let response = try #require(get(path), "\(path) is not served")
            #expect(response.status == .ok)
            #expect(response.headers["Content-Type"] == [type], "\(path)")
            #expect(response.headers["Cache-Control"] == ["no-cache"])
            #expect(response.body.readableBytes > 0)
            let etag = try #require(response.headers["ETag"].first)
            #expect(get(path, ifNoneMatch: etag)?.status == .notModified)
        }
        #expect(get("/ui/")?.headers["Content-Security-Policy"].first?.contains("script-src 'self'") == true)
        #expect(get("/storm.js")?.headers["Content-Security-Policy"] == [])
        #expect(get("/nope") == nil)
        #expect(get("/storm.js", method: .POST)?.status == .methodNotAllowed)
    }

    @Test("the bytes served are the files in Sources/StormWeb/Resources")
    func sameBytesAsTheRepository() throws {
        let resources = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../Sources/StormWeb/Resources")
        for (path, file) in [("/ui/", "index.html"), ("/storm.js", "storm.js"), ("/ui/app.js", "app.js")] {
            let onDisk = try Data(contentsOf: resources.appendingPathComponent(file))
            let served = try #require(get(path)).body
            #expect(Data(served.readableBytesView) == onDisk, "\(file)")
        }
    }
}
