import Atomics
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import StormCore

/// Calls one hook URL: a JSON POST with a deadline, at most `concurrency` at once (one kept-alive
/// connection each, `StormHTTPClient`), at most `maxWaiting` more waiting for a slot, the rest refused
/// at once. Every call ends by its deadline: waiting for a slot counts towards it, and a request still
/// unanswered then is failed and its connection closed (a late answer could not be matched).
///
/// Runs on the cooperative pool and the clients' own event loop, never on a gateway loop: the sessions
/// only see the future the call completes.
package final class HookClient: Sendable {
    private enum Start {
        case run
        case refused
        case timedOut
    }

    private struct State {
        var admission: HistoryAdmission
        var waiters: [UInt64: CheckedContinuation<Start, Never>] = [:]
        var nextID: UInt64 = 0
        var idle: [StormHTTPClient] = []
        var closed = false
    }

    package let kind: HookConfiguration.Kind
    package let target: HookConfiguration.Target
    private let timeout: TimeAmount
    private let secret: String?
    private let state: NIOLockedValueBox<State>

    package init(kind: HookConfiguration.Kind, target: HookConfiguration.Target, configuration: HookConfiguration) {
        self.kind = kind
        self.target = target
        self.timeout = configuration.timeout
        self.secret = configuration.secret
        self.state = NIOLockedValueBox(State(admission: HistoryAdmission(maxRunning: configuration.concurrency, maxWaiting: configuration.maxWaiting)))
    }

    /// Posts `body` (a hook request, JSON) and returns what came back, by the deadline.
    package func call(_ body: [UInt8], traceparent: String?) async -> HookCallResult {
        let deadline = NIODeadline.now() + timeout
        switch await admit(deadline: deadline) {
        case .refused: return .overloaded
        case .timedOut: return .timedOut
        case .run: break
        }
        let client = takeClient()
        defer { finish(returning: client) }
        let remaining = deadline - .now()
        guard remaining > .zero else { return .timedOut }
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "application/json")
        headers.add(name: "X-Storm-Hook", value: kind.rawValue)
        if let secret { headers.add(name: "X-Storm-Hook-Secret", value: secret) }
        if let traceparent { headers.add(name: "traceparent", value: traceparent) }
        do {
            let response = try await client.request(
                method: .POST, path: target.path, body: body, headers: headers, timeout: remaining, throwingOnErrorStatus: false)
            return .answered(status: response.status, body: response.body)
        } catch {
            if NIODeadline.now() >= deadline { return .timedOut }
            return .failed("could not be called: \(error.message)")
        }
    }

    /// Closes the kept-alive connections; calls after this still work (they reconnect) but none is kept.
    package func shutdown() async {
        let clients = state.withLockedValue { state -> [StormHTTPClient] in
            state.closed = true
            defer { state.idle = [] }
            return state.idle
        }
        for client in clients { await client.close() }
    }

    // MARK: Slots

    private func takeClient() -> StormHTTPClient {
        state.withLockedValue { $0.idle.popLast() } ?? StormHTTPClient(endpoint: target.endpoint)
    }

    private func admit(deadline: NIODeadline) async -> Start {
        await withCheckedContinuation { (continuation: CheckedContinuation<Start, Never>) in
            let (id, decision): (UInt64, HistoryAdmission.Decision) = state.withLockedValue { state in
                let id = state.nextID
                state.nextID &+= 1
                let decision = state.admission.admit(id)
                if decision == .wait { state.waiters[id] = continuation }
                return (id, decision)
            }
            switch decision {
            case .run: continuation.resume(returning: .run)
            case .refuse: continuation.resume(returning: .refused)
            case .wait:
                MultiThreadedEventLoopGroup.singleton.any().scheduleTask(deadline: deadline) { [weak self] in self?.expire(id) }
            }
        }
    }

    private func expire(_ id: UInt64) {
        let continuation: CheckedContinuation<Start, Never>? = state.withLockedValue { state in
            guard let waiter = state.waiters[id], state.admission.withdraw(id) else { return nil }
            state.waiters[id] = nil
            return waiter
        }
        continuation?.resume(returning: .timedOut)
    }

    /// A call ended: its connection goes back to the pool, its slot to the first call in line.
    private func finish(returning client: StormHTTPClient) {
        let (next, surplus): (CheckedContinuation<Start, Never>?, StormHTTPClient?) = state.withLockedValue { state in
            var surplus: StormHTTPClient?
            if state.closed { surplus = client } else { state.idle.append(client) }
            for _ in 0...state.admission.maxWaiting {
                guard let id = state.admission.finish() else { return (nil, surplus) }
                if let waiter = state.waiters.removeValue(forKey: id) { return (waiter, surplus) }
            }
            return (nil, surplus)
        }
        next?.resume(returning: .run)
        if let surplus { Task { await surplus.close() } }
    }
}
