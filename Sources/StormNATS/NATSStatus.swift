import CNATS
import StormCore

/// The one place where a nats.c status code becomes a `StormError`.
///
/// Every nats.c call whose status matters goes through here, so no `natsStatus` escapes unchecked and every
/// failure reads the same way in logs and HTTP answers: what STORM was doing, nats.c's own words, and the C
/// function that said it ("NATS could not publish on 'storm.ch.a': Connection Closed [natsConnection_Publish]").
///
/// - Parameters:
///   - call: the nats.c function, named in the message so a bug report points at the exact call.
///   - code: the `StormError` code for a failure; `NATS_MAX_PAYLOAD` always maps to `.messageTooLarge`,
///     because that is the client's fault, not the broker's.
///   - doing: what STORM was trying to do, phrased for an operator ("connect to nats://10.0.0.1:4222").
///   - body: the nats.c call itself. It runs synchronously on this thread, so nats.c's thread-local last
///     error still belongs to it when it is read.
@inline(__always)
package func natsCall(
    _ call: StaticString, _ code: StormError.Code, _ doing: @autoclosure () -> String,
    _ body: () -> natsStatus
) throws(StormError) {
    let status = body()
    guard status == NATS_OK else {
        throw natsError(call, status, code, doing())
    }
}

/// Builds the error for a failed nats.c call (see `natsCall`).
package func natsError(_ call: StaticString, _ status: natsStatus, _ code: StormError.Code, _ doing: String) -> StormError {
    let text = natsStatusText(status)
    var message = "NATS could not \(doing): \(text)"
    // nats.c keeps a more specific, thread-local explanation ("no server available for connection",
    // "invalid URL …") beside the generic status text; add it when it says more.
    var lastStatus = NATS_OK
    if let detail = nats_GetLastError(&lastStatus).map({ String(cString: $0) }), lastStatus == status,
        !detail.isEmpty, detail != text
    {
        message += " (\(detail))"
    }
    message += " [\(call)]"
    let effectiveCode: StormError.Code = status == NATS_MAX_PAYLOAD ? .messageTooLarge : code
    return StormError(effectiveCode, message)
}

/// nats.c's short description of a status ("Connection Closed"), or its number if it has none.
package func natsStatusText(_ status: natsStatus) -> String {
    if let text = natsStatus_GetText(status) {
        return String(cString: text)
    }
    return "nats.c status \(status.rawValue)"
}
