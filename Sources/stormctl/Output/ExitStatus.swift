import ArgumentParser
import StormCore

/// The process exit status for each kind of failure (sysexits(3) numbers).
enum ExitStatus {
    static let usage: Int32 = 64
    static let dataError: Int32 = 65
    static let unavailable: Int32 = 69
    static let software: Int32 = 70
    static let temporaryFailure: Int32 = 75
    static let noPermission: Int32 = 77

    static let helpText = """
        Exit status:
          0   success
          64  usage error (bad flag or argument)
          65  the server refused the request (4xx: invalid channel, message too large)
          69  cannot connect to the server, or the connection was lost
          70  unexpected failure
          75  the server is temporarily unavailable (503: broker down, shutting down)
          77  not allowed: a missing or refused token (401), or one that does not allow it (403)
        """

    static func code(for error: StormError) -> Int32 {
        switch error.code {
        case .connection, .slowClient: return unavailable
        case .badRequest, .invalidChannel, .messageTooLarge, .notFound, .methodNotAllowed, .tooManyChannels:
            return dataError
        case .brokerUnavailable, .shuttingDown: return temporaryFailure
        case .unauthorized, .forbidden: return noPermission
        case .conflict: return dataError
        case .configuration: return usage
        default: return software
        }
    }
}

/// Runs a command body, turning failures into `stormctl: <message>` on stderr and the matching exit
/// status. Argument-parser's own errors (`ValidationError`, `ExitCode`) pass through untouched.
func reportingFailures(_ body: () async throws -> Void) async throws {
    do {
        try await body()
    } catch let error as StormError {
        StandardError.write("stormctl: \(error.message)\n")
        throw ExitCode(ExitStatus.code(for: error))
    } catch let error as ExitCode {
        throw error
    } catch let error as ValidationError {
        throw error
    } catch let error as CleanExit {
        throw error
    } catch {
        StandardError.write("stormctl: \(error)\n")
        throw ExitCode(ExitStatus.software)
    }
}
