import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix

/// A small real HTTP server on a loopback port 0 standing in for an application's hook endpoint: it
/// records every request and answers each path as told (`answer`), or never (`hang`), so tests see
/// exactly what the gateway sends and how it takes each answer.
package final class TestHookServer: Sendable {
    package struct Received: Sendable {
        package var path: String
        package var headers: HTTPHeaders
        package var body: [UInt8]
        package var text: String { String(decoding: body, as: UTF8.self) }
    }

    package enum Behaviour: Sendable {
        case answer(status: Int, body: String)
        /// Reads the request and never answers (a hung application).
        case hang
    }

    private struct State {
        var behaviours: [String: Behaviour] = [:]
        var received: [Received] = []
        var children: [ObjectIdentifier: any Channel] = [:]
    }

    private let state = NIOLockedValueBox(State())
    private let channel: NIOLockedValueBox<(any Channel)?> = NIOLockedValueBox(nil)

    package init() {}

    package static func start(_ behaviours: [String: Behaviour] = [:]) async throws -> TestHookServer {
        let server = TestHookServer()
        server.state.withLockedValue { $0.behaviours = behaviours }
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { [server] child in
                server.state.withLockedValue { $0.children[ObjectIdentifier(child)] = child }
                child.closeFuture.whenComplete { _ in _ = server.state.withLockedValue { $0.children.removeValue(forKey: ObjectIdentifier(child)) } }
                return child.eventLoop.makeCompletedFuture {
                    try child.pipeline.syncOperations.configureHTTPServerPipeline()
                    try child.pipeline.syncOperations.addHandler(Handler(server: server))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        server.channel.withLockedValue { $0 = channel }
        return server
    }

    package var port: Int { channel.withLockedValue { $0?.localAddress?.port } ?? 0 }

    package func url(_ path: String) -> String { "http://127.0.0.1:\(port)\(path)" }

    package func set(_ path: String, _ behaviour: Behaviour) {
        state.withLockedValue { $0.behaviours[path] = behaviour }
    }

    package var received: [Received] { state.withLockedValue { $0.received } }

    package func received(on path: String) -> [Received] { received.filter { $0.path == path } }

    /// Closes the listener and every connection, and waits for them.
    package func stop() async {
        let listener = channel.withLockedValue { $0 }
        try? await listener?.close()
        let children = state.withLockedValue { Array($0.children.values) }
        for child in children { try? await child.close() }
    }

    fileprivate func record(_ request: Received) -> Behaviour {
        state.withLockedValue { state in
            state.received.append(request)
            return state.behaviours[request.path] ?? .answer(status: 404, body: "{}")
        }
    }

    private final class Handler: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart

        let server: TestHookServer
        var head: HTTPRequestHead?
        var body: [UInt8] = []

        init(server: TestHookServer) { self.server = server }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let head):
                self.head = head
                body = []
            case .body(let chunk):
                body += chunk.readableBytesView
            case .end:
                guard let head else { return }
                self.head = nil
                switch server.record(Received(path: head.uri, headers: head.headers, body: body)) {
                case .hang:
                    break
                case .answer(let status, let text):
                    var headers = HTTPHeaders()
                    headers.add(name: "Content-Type", value: "application/json")
                    headers.add(name: "Content-Length", value: String(text.utf8.count))
                    context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: HTTPResponseStatus(statusCode: status), headers: headers))), promise: nil)
                    context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: text)))), promise: nil)
                    context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
                }
            }
        }
    }
}
