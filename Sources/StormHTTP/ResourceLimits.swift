#if canImport(Glibc)
import Glibc
#endif
import Logging
import StormCore

/// Process limits a gateway needs for many connections.
package enum ResourceLimits {
    /// Raises the soft open-files limit to the hard one: every connection is a file descriptor, and the
    /// usual soft default (1,024) would cap a gateway near a thousand clients.
    package static func raiseOpenFilesLimit(logger: Logger) {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return }
        guard limit.rlim_cur < limit.rlim_max else { return }
        let previous = limit.rlim_cur
        limit.rlim_cur = limit.rlim_max
        if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 {
            logger.debug("raised the open-files limit", metadata: ["from": "\(previous)", "to": "\(limit.rlim_max)"])
        } else {
            logger.warning("cannot raise the open-files limit; connections are capped near it", metadata: ["limit": "\(previous)"])
        }
    }

    /// The open-files limit: the soft one, or with `raised` the hard one `raiseOpenFilesLimit` raises it
    /// to (what `--print-config` reports before the raise). Infinity and absurd values are capped at
    /// `Int32.max`; 1,024 when the limit cannot be read.
    package static func openFilesLimit(raised: Bool = false) -> Int {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 1_024 }
        let value = raised ? limit.rlim_max : limit.rlim_cur
        return value >= rlim_t(Int32.max) ? Int(Int32.max) : Int(value)
    }
}
