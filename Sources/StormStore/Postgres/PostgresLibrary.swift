import CLibPQ

/// The libpq stormd is linked with, for `stormd --version` and bug reports.
package enum PostgresLibrary {
    package static var version: String {
        let number = Int(PQlibVersion())
        return "\(number / 10000).\(number % 100)"
    }
}
