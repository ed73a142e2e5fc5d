/// The screens `Tab` and `1`-`6` switch between.
package enum View: Int, CaseIterable, Sendable {
    case gateways, channels, errors, consumers, broker, connections

    package var title: String {
        switch self {
        case .gateways: return "Gateways"
        case .channels: return "Channels"
        case .errors: return "Errors"
        case .consumers: return "Consumers"
        case .broker: return "Broker"
        case .connections: return "Connections"
        }
    }

    package var next: View { View(rawValue: (rawValue + 1) % View.allCases.count) ?? .gateways }
    package var previous: View { View(rawValue: (rawValue + View.allCases.count - 1) % View.allCases.count) ?? .gateways }
}

/// Everything the keys change, and how each key changes it: a plain state machine, so the key map is
/// unit-tested without a terminal.
package struct ViewState: Sendable, Equatable {
    package enum Outcome: Equatable {
        case none
        case quit
        /// `--replay`: show the recorded poll this many steps later (negative: earlier); pauses.
        case step(Int)
    }

    package var view: View = .gateways
    /// Sort column per view, an index into the view's columns. The consumers view starts on LAG and the
    /// connections view on OUT/s, so the one that matters comes first.
    package var sortColumn: [View: Int] = [.consumers: 3, .connections: Layout.connectionsDefaultSort]
    /// Sort direction per view; columns start in their natural direction (names ascending, figures
    /// descending, so the busiest gateway comes first).
    package var sortReversed: [View: Bool] = [:]
    /// First table row shown.
    package var scroll = 0
    /// Case-insensitive substring on address and state (on the channel name in the channels view with
    /// `--redis`); empty shows everything.
    package var filter = ""
    /// The filter being typed after `/`, or nil.
    package var editingFilter: String?
    package var paused = false
    package var showingHelp = false
    /// The channels view lists channels from Redis (`--redis`) instead of gateways.
    package var presenceChannels = false

    package var currentSortColumn: Int { sortColumn[view] ?? 0 }

    /// The state of a dashboard with `--redis`: the channels view lists channels from Redis, busiest
    /// (most clients) first.
    package static func withPresenceChannels() -> ViewState {
        var state = ViewState()
        state.presenceChannels = true
        state.sortColumn[.channels] = 1
        return state
    }
    package var currentSortReversed: Bool { sortReversed[view] ?? false }

    /// Applies one key. `pageSize` is the number of table rows visible, `rowCount` the rows after the
    /// filter: scrolling stays within them.
    package mutating func handle(_ key: Key, pageSize: Int, rowCount: Int) -> Outcome {
        if var typed = editingFilter {
            switch key {
            case .enter:
                filter = typed
                editingFilter = nil
                scroll = 0
            case .escape:
                editingFilter = nil
            case .backspace:
                if typed.isEmpty { editingFilter = nil } else { typed.removeLast(); editingFilter = typed }
            case .character(let character):
                typed.append(character)
                editingFilter = typed
            case .interrupt:
                return .quit
            default:
                break
            }
            return .none
        }
        if showingHelp {
            // Any key closes the help; q still quits from it.
            showingHelp = false
            if key == .character("q") || key == .interrupt { return .quit }
            return .none
        }
        let page = max(1, pageSize)
        switch key {
        case .character("q"), .character("Q"), .interrupt:
            return .quit
        case .character("?"), .character("h"):
            showingHelp = true
        case .character("p"), .character("P"), .character(" "):
            paused.toggle()
        case .character("s"):
            let count = Layout.columnCount(self)
            sortColumn[view] = (currentSortColumn + 1) % max(1, count)
            sortReversed[view] = false
            scroll = 0
        case .character("S"):
            let count = Layout.columnCount(self)
            sortColumn[view] = (currentSortColumn + count - 1) % max(1, count)
            sortReversed[view] = false
            scroll = 0
        case .character("o"), .character("O"):
            sortReversed[view] = !currentSortReversed
        case .tab:
            switchTo(view.next)
        case .backTab:
            switchTo(view.previous)
        case .character("1"), .character("2"), .character("3"), .character("4"), .character("5"), .character("6"):
            if case .character(let digit) = key, let number = digit.wholeNumberValue, let target = View(rawValue: number - 1) {
                switchTo(target)
            }
        case .character("/"):
            editingFilter = filter
        case .escape:
            if !filter.isEmpty { filter = ""; scroll = 0 }
        case .up, .character("k"):
            scroll -= 1
        case .down, .character("j"):
            scroll += 1
        case .pageUp:
            scroll -= page
        case .pageDown:
            scroll += page
        case .home, .character("g"):
            scroll = 0
        case .end, .character("G"):
            scroll = rowCount
        case .right, .character("."):
            paused = true
            return .step(1)
        case .left, .character(","):
            paused = true
            return .step(-1)
        default:
            break
        }
        clampScroll(pageSize: page, rowCount: rowCount)
        return .none
    }

    package mutating func clampScroll(pageSize: Int, rowCount: Int) {
        scroll = max(0, min(scroll, rowCount - max(1, pageSize)))
    }

    private mutating func switchTo(_ target: View) {
        view = target
        scroll = 0
    }

    /// The key list of the help screen, one `(keys, what)` per line.
    package static let help: [(String, String)] = [
        ("q", "quit (Ctrl-C too); the terminal is restored"),
        ("p  space", "pause / resume the display (polling goes on)"),
        ("Tab  1-6", "switch view: 1 gateways, 2 channels, 3 errors, 4 consumers, 5 broker, 6 connections (Shift-Tab back)"),
        ("s  S", "sort by the next / previous column"),
        ("o", "reverse the sort order"),
        ("/", "filter rows by address, state or channel (Enter applies, Esc cancels)"),
        ("Esc", "clear the filter"),
        ("Up Down  j k", "scroll one row"),
        ("PgUp PgDn", "scroll one page"),
        ("Home End  g G", "first / last rows"),
        ("Right Left  . ,", "--replay: next / previous recorded poll (pauses; space resumes)"),
        ("?  h", "this help (any key closes it)"),
    ]

    package init(view: View = .gateways, sortColumn: [View: Int] = [.consumers: 3, .connections: Layout.connectionsDefaultSort], sortReversed: [View: Bool] = [:], editingFilter: String? = nil) {
        self.view = view
        self.sortColumn = sortColumn
        self.sortReversed = sortReversed
        self.editingFilter = editingFilter
    }
}
