import CNCursesW
import Foundation
import StormDashboard

/// Typed failure of the one curses call that can fail for a reason the operator can act on.
struct TerminalError: Error, CustomStringConvertible {
    var description: String
}

/// The thin wrapper over ncurses: every curses call stormtop makes is in this type, on the main thread.
///
/// `start()` sets the locale first (curses needs it for UTF-8, with `C.UTF-8` as the fallback when the
/// environment names no UTF-8 locale), then takes over the screen; `stop()` gives it back and is safe
/// to call twice, so the normal path and the signal path can both call it.
final class Terminal: Canvas {
    private(set) var unicode = false
    private(set) var hasColours = false
    private var active = false

    private enum Pair: Int16 {
        case up = 1, down, warning, title, bar
    }

    var rows: Int { Int(storm_lines()) }
    var columns: Int { Int(storm_cols()) }

    /// - Parameters:
    ///   - colours: use colours when the terminal has them (`--no-color` and `NO_COLOR` turn them off).
    ///   - refreshMilliseconds: how long `readKey()` waits for a key: the screen's tick.
    func start(colours: Bool, refreshMilliseconds: Int32) throws(TerminalError) {
        Self.setUTF8Locale()
        unicode = storm_locale_is_utf8() != 0
        // initscr exits the process on failure; newterm returns nil, so a missing TERM is an error here.
        guard isatty(STDOUT_FILENO) != 0, isatty(STDIN_FILENO) != 0 else {
            throw TerminalError(description: "standard input and output must be a terminal (use --once or -n for batch mode)")
        }
        // stdout/stdin are C globals Swift 6 will not touch: curses gets its own FILEs on the same fds.
        guard let output = fdopen(STDOUT_FILENO, "w"), let input = fdopen(STDIN_FILENO, "r"), newterm(nil, output, input) != nil else {
            throw TerminalError(description: "cannot use terminal type '\(ProcessInfo.processInfo.environment["TERM"] ?? "")' (set TERM, or use --once)")
        }
        active = true
        cbreak()
        noecho()
        nonl()
        _ = storm_keypad(1)
        _ = curs_set(0)
        set_escdelay(25)
        storm_timeout(refreshMilliseconds)
        if colours, has_colors() {
            start_color()
            // -1 is "the terminal's own background", valid only when use_default_colors succeeded.
            let background: Int16 = use_default_colors() == OK ? -1 : Int16(COLOR_BLACK)
            hasColours = true
            init_pair(Pair.up.rawValue, Int16(COLOR_GREEN), background)
            init_pair(Pair.down.rawValue, Int16(COLOR_RED), background)
            init_pair(Pair.warning.rawValue, Int16(COLOR_YELLOW), background)
            init_pair(Pair.title.rawValue, Int16(COLOR_CYAN), background)
            init_pair(Pair.bar.rawValue, Int16(COLOR_BLACK), Int16(COLOR_CYAN))
        }
    }

    /// Gives the terminal back (cursor, echo, line mode, main screen).
    func stop() {
        guard active else { return }
        active = false
        _ = curs_set(1)
        endwin()
    }

    /// `setlocale(LC_ALL, "")`, falling back to `C.UTF-8` when the environment's locale is not UTF-8
    /// (a bare `LANG=C` in containers and CI): without a UTF-8 locale curses draws `lqqk` for lines.
    static func setUTF8Locale() {
        _ = storm_setlocale_all("")
        if storm_locale_is_utf8() == 0 { _ = storm_setlocale_all("C.UTF-8") }
    }

    func clear() { _ = storm_erase() }

    /// After a resize, the whole screen is redrawn rather than diffed.
    func forceRepaint() { _ = storm_clearok() }

    func present() { _ = storm_refresh() }

    func put(_ row: Int, _ column: Int, _ text: String, _ style: TextStyle) {
        guard row >= 0, row < rows, column >= 0, column < columns else { return }
        var remaining = columns - column
        var wide: [wchar_t] = []
        wide.reserveCapacity(min(text.unicodeScalars.count, remaining))
        for scalar in text.unicodeScalars {
            var code = wchar_t(bitPattern: scalar.value)
            var width = Int(storm_wcwidth(code))
            if width < 0 || (!unicode && scalar.value > 0x7E) {  // control or not drawable here
                code = wchar_t(UInt8(ascii: "?"))
                width = 1
            }
            guard width <= remaining else { break }
            remaining -= width
            wide.append(code)
        }
        guard !wide.isEmpty else { return }
        _ = storm_attrset(attributes(style))
        wide.withUnsafeBufferPointer { buffer in
            // Writing the bottom-right cell returns ERR (the cursor cannot move on); the text is drawn.
            _ = storm_put_wide(Int32(row), Int32(column), buffer.baseAddress, Int32(buffer.count))
        }
        _ = storm_attrset(storm_a_normal())
    }

    private func attributes(_ style: TextStyle) -> Int32 {
        func pair(_ pair: Pair) -> Int32 { hasColours ? storm_color_pair(Int32(pair.rawValue)) : 0 }
        switch style {
        case .normal: return storm_a_normal()
        case .bold: return storm_a_bold()
        case .dim: return hasColours ? storm_a_dim() : storm_a_normal()
        case .bar: return hasColours ? pair(.bar) : storm_a_reverse()
        case .title: return storm_a_bold() | pair(.title)
        case .up: return pair(.up)
        case .down: return hasColours ? storm_a_bold() | pair(.down) : storm_a_bold() | storm_a_reverse()
        case .warning: return storm_a_bold() | pair(.warning)
        case .selected: return storm_a_reverse() | storm_a_bold()
        }
    }

    /// Waits up to the refresh tick for a key; nil when none came.
    func readKey() -> Key? {
        let code = storm_getch()
        switch code {
        case ERR: return nil
        case KEY_UP: return .up
        case KEY_DOWN: return .down
        case KEY_LEFT: return .left
        case KEY_RIGHT: return .right
        case KEY_PPAGE: return .pageUp
        case KEY_NPAGE: return .pageDown
        case KEY_HOME: return .home
        case KEY_END: return .end
        case KEY_BTAB: return .backTab
        case KEY_ENTER, 10, 13: return .enter
        case KEY_BACKSPACE, 127, 8: return .backspace
        case KEY_RESIZE: return .resize
        case 9: return .tab
        case 27: return .escape
        case 3: return .interrupt
        case 32...126: return UnicodeScalar(UInt32(code)).map { .character(Character($0)) }
        default: return nil
        }
    }
}
