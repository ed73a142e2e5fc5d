import CNATS

/// The nats.c library stormd is linked with, for `stormd --version` and bug reports.
package enum NATSLibrary {
    package static var version: String { String(cString: nats_GetVersion()) }
}
