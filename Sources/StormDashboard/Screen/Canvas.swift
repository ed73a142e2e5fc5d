/// How a piece of text is drawn. Colours are a bonus: every style still reads on a terminal without
/// them (DOWN is bold and reversed, the selected tab reversed).
package enum TextStyle: Sendable {
    case normal, bold, dim, bar, title, up, down, warning, selected
}

/// A keystroke, decoded from curses' key codes.
package enum Key: Equatable, Sendable {
    case character(Character)
    case up, down, pageUp, pageDown, home, end, left, right
    case tab, backTab, enter, escape, backspace
    case resize
    /// Ctrl-C typed while curses has the terminal in cbreak mode arrives as SIGINT instead; kept for
    /// terminals that deliver it as a byte.
    case interrupt
}

/// Something the layout draws on: the terminal, or a text buffer in tests.
package protocol Canvas: AnyObject {
    var rows: Int { get }
    var columns: Int { get }
    /// Draws `text` from (`row`, `column`), clipped at the right edge.
    func put(_ row: Int, _ column: Int, _ text: String, _ style: TextStyle)
    /// True when block and box characters can be drawn (a UTF-8 locale).
    var unicode: Bool { get }
}
