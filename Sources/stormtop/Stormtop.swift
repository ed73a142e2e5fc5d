import ArgumentParser
import CNCursesW
import StormCore

/// `stormtop`: the live dashboard of a STORM cluster.
///
/// Only the skeleton lands with the foundation: it links the wide-character ncurses library through the
/// `CNCursesW` system-library target so the build proves the toolchain setup. The dashboard itself
/// (polling gateways' /metrics, rates, views, keys) is its own issue.
@main
struct Stormtop: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stormtop",
        abstract: "Live dashboard of a STORM cluster (not yet implemented beyond --version).",
        version: "stormtop \(StormVersion.current) (\(String(cString: storm_curses_version())))"
    )

    func run() throws {
        print("stormtop \(StormVersion.current): the dashboard is not implemented yet; linked against \(String(cString: storm_curses_version())).")
        throw ExitCode(69)
    }
}
