import StormCore

/// A sortable value: text sorts by name, numbers by size; unknown numbers always go last.
package enum SortValue: Sendable {
    case text(String)
    case number(Double?)
}

/// One table column: how to show a row's figure in it and how to sort by it. `Row` is a gateway
/// (`GatewayFigures`) or, in the channels view with `--redis`, a channel (`ChannelFigures`).
package struct Column<Row>: Sendable {
    package var title: String
    package var width: Int
    package var leftAligned = false
    /// Whether the first `s` on this column sorts biggest first (figures) or A-Z (names).
    package var descendingFirst = true
    package var text: @Sendable (Row, Bool) -> String
    package var sortValue: @Sendable (Row) -> SortValue
    package var style: @Sendable (Row) -> TextStyle = { _ in .normal }

    package static func number(_ title: String, _ width: Int, _ value: @escaping @Sendable (Row) -> Double?, _ format: @escaping @Sendable (Double?) -> String) -> Column {
        Column(title: title, width: width, text: { figures, _ in format(value(figures)) }, sortValue: { .number(value($0)) })
    }

    package static func latency(_ title: String, _ width: Int, _ value: @escaping @Sendable (Row) -> Double?) -> Column {
        Column(title: title, width: width, text: { figures, unicode in Format.latency(value(figures), ascii: !unicode) }, sortValue: { .number(value($0)) })
    }
}

/// Where everything goes on the screen; draws a `DashboardFrame` on any `Canvas`.
///
/// ```
/// row 0      title: version, gateways up/down, clock or PAUSED
/// rows 1-3   cluster totals: connections, msg/s, p95s, drops, broker
/// row 4      sparkline of the cluster's delivered msg/s
/// row 5      alerts (gateway or consumer down, consumer lag, stream under-replicated or full)
/// row 6      view tabs, sort column, filter
/// row 7      column titles
/// rows 8…    one row per gateway, consumer or channel (scrolls)
/// last row   key hints, or the filter being typed
/// ```
package enum Layout {
    package static let headerRows = 8
    package static let minimumRows = 12
    package static let minimumColumns = 50

    package static let gatewayColumn = Column<GatewayFigures>(
        title: "GATEWAY", width: 21, leftAligned: true, descendingFirst: false, text: { figures, _ in figures.address },
        sortValue: { .text($0.address) })
    package static let stateColumn = Column<GatewayFigures>(
        title: "STATE", width: 5, leftAligned: true, descendingFirst: false, text: { figures, _ in figures.state.label },
        sortValue: { .text($0.state.isDown ? "0" : $0.state == .up ? "2" : "1") },
        style: { $0.state.isDown ? .down : $0.state == .up ? .up : .dim })

    package static func columns(_ view: View) -> [Column<GatewayFigures>] {
        switch view {
        case .gateways:
            return [
                gatewayColumn, stateColumn,
                .number("UPTIME", 7, { $0.uptimeSeconds }, Format.duration),
                .number("CONNS", 6, { $0.connections }, Format.count),
                .number("WS", 6, { $0.webSocketConnections }, Format.count),
                .number("SSE", 6, { $0.sseConnections }, Format.count),
                .number("IN/s", 7, { $0.publishedPerSecond }, Format.quantity),
                .number("OUT/s", 7, { $0.deliveredPerSecond }, Format.quantity),
                .latency("P95 PUB", 8, { $0.p95PublishSeconds }),
                .latency("P95 FAN", 8, { $0.p95FanoutSeconds }),
                .number("CPU", 6, { $0.cpuPercent }, Format.percent),
                .number("MEM", 8, { $0.residentMemoryBytes }, Format.bytes),
            ]
        case .channels:
            return [
                gatewayColumn, stateColumn,
                .number("CHANNELS", 8, { $0.brokerSubscriptions }, Format.count),
                .number("CONNS", 6, { $0.connections }, Format.count),
                .number("BROKER IN/s", 11, { $0.brokerReceivedPerSecond }, Format.quantity),
                .number("OUT/s", 7, { $0.deliveredPerSecond }, Format.quantity),
                .number("FAN-OUT", 7, { $0.fanoutRatio }, { $0.map { "x" + Format.quantity($0) } ?? Format.unknown }),
                .latency("P95 FAN", 8, { $0.p95FanoutSeconds }),
                Column(
                    title: "BROKER", width: 6, descendingFirst: false,
                    text: { figures, _ in figures.brokerConnected.map { $0 ? "up" : "DOWN" } ?? Format.unknown },
                    sortValue: { .number($0.brokerConnected.map { $0 ? 1 : 0 }) },
                    style: { $0.brokerConnected == false ? .down : .normal }),
            ]
        case .broker:
            return [
                gatewayColumn, stateColumn,
                Column(
                    title: "NATS", width: 6, leftAligned: true, descendingFirst: false,
                    text: { figures, _ in figures.brokerConnected.map { $0 ? "up" : "DOWN" } ?? Format.unknown },
                    sortValue: { .number($0.brokerConnected.map { $0 ? 1 : 0 }) },
                    style: { $0.brokerConnected == false ? .down : .normal }),
                Column(
                    title: "REPLICAS", width: 8, descendingFirst: false,
                    text: { figures, _ in
                        guard let stream = figures.stream else { return Format.unknown }
                        return "\(Format.count(stream.replicas))/\(Format.count(stream.configuredReplicas))"
                    },
                    sortValue: { .number($0.stream?.replicas) },
                    style: { $0.stream?.underReplicated == true ? .down : .normal }),
                Column(
                    title: "LEADER", width: 14, leftAligned: true, descendingFirst: false,
                    text: { figures, _ in figures.stream?.leaderLabel ?? Format.unknown }, sortValue: { .text($0.stream?.leaderLabel ?? "") },
                    style: { $0.stream?.leaderless == true ? .down : .normal }),
                .number("MSGS", 8, { $0.stream?.messages }, Format.count),
                .number("BYTES", 9, { $0.stream?.bytes }, Format.bytes),
                .number("MAX MSGS", 8, { $0.stream?.maxMessages }, Format.count),
                .number("MAX BYTES", 9, { $0.stream?.maxBytes }, Format.bytes),
                Column(
                    title: "FULL", width: 6, text: { figures, _ in Format.percent(figures.stream?.fullPercent) },
                    sortValue: { .number($0.stream?.fullPercent) },
                    style: { ($0.stream?.fullPercent ?? 0) > 90 ? .warning : .normal }),
                .number("SUBS", 6, { $0.brokerSubscriptions }, Format.count),
            ]
        case .consumers, .connections:
            // Their rows are consumers and channels: `consumerColumns`, `connectionColumns`.
            return []
        case .errors:
            return [
                gatewayColumn, stateColumn,
                .number("DROPS/s", 7, { $0.slowClientDropsPerSecond }, Format.quantity),
                .number("DROPS", 7, { $0.slowClientDropsTotal }, Format.count),
                .number("SLOW DISC", 9, { $0.slowClientDisconnectsTotal }, Format.count),
                .number("MALFORMED", 9, { $0.malformedDropsTotal }, Format.count),
                .number("ERR/s", 6, { $0.clientErrorsPerSecond }, Format.quantity),
                .number("ERRORS", 6, { $0.clientErrorsTotal }, Format.count),
                Column(
                    title: "TOP ERROR", width: 24, leftAligned: true, descendingFirst: false,
                    text: { figures, _ in figures.topClientError.map { "\($0.code) \(Format.count($0.count))" } ?? Format.unknown },
                    sortValue: { .text($0.topClientError?.code ?? "") }),
                .number("ACCEPT/s", 8, { $0.acceptedPerSecond }, Format.quantity),
                Column(
                    title: "VERSION", width: 8, leftAligned: true, descendingFirst: false,
                    text: { figures, _ in figures.version ?? Format.unknown }, sortValue: { .text($0.version ?? "") }),
            ]
        }
    }

    /// The busiest-channels view with `--redis`: one row per channel with presence, from Redis.
    package static let channelColumns: [Column<ChannelFigures>] = [
        Column(
            title: "CHANNEL", width: 32, leftAligned: true, descendingFirst: false, text: { channel, _ in channel.channel },
            sortValue: { .text($0.channel) }),
        .number("CLIENTS", 7, { Double($0.clients) }, Format.count),
        .number("USERS", 7, { $0.users.map { Double($0) } }, Format.count),
        .number("GATEWAYS", 8, { $0.gateways.map { Double($0) } }, Format.count),
    ]

    /// The consumers view: one row per history consumer (`--consumer`).
    package static let consumerColumns: [Column<ConsumerFigures>] = [
        Column(
            title: "CONSUMER", width: 21, leftAligned: true, descendingFirst: false, text: { figures, _ in figures.address },
            sortValue: { .text($0.address) }),
        Column(
            title: "STATE", width: 5, leftAligned: true, descendingFirst: false, text: { figures, _ in figures.state.label },
            sortValue: { .text($0.state.isDown ? "0" : $0.state == .up ? "2" : "1") },
            style: { $0.state.isDown ? .down : $0.state == .up ? .up : .dim }),
        Column(
            title: "READY", width: 9, leftAligned: true, descendingFirst: false, text: { figures, _ in figures.readyLabel },
            sortValue: { .text($0.readyLabel) }, style: { $0.ready == false ? .down : $0.ready == true ? .up : .dim }),
        .number("LAG", 8, { $0.lag }, Format.count),
        .number("ROWS/s", 8, { $0.rowsPerSecond }, Format.quantity),
        .number("BATCH", 6, { $0.batchSize }, Format.quantity),
        .latency("P95 INS", 8, { $0.p95InsertSeconds }),
        .number("FAIL/s", 6, { $0.failuresPerSecond }, Format.quantity),
        .number("FAILURES", 8, { $0.failuresTotal }, Format.count),
        Column(
            title: "PG", width: 4, leftAligned: true, descendingFirst: false,
            text: { figures, _ in figures.postgresConnected.map { $0 ? "up" : "DOWN" } ?? Format.unknown },
            sortValue: { .number($0.postgresConnected.map { $0 ? 1 : 0 }) }, style: { $0.postgresConnected == false ? .down : .normal }),
    ]

    /// The connections view: one row per channel and gateway, busiest first.
    package static let connectionColumns: [Column<ChannelRate>] = [
        Column(
            title: "CHANNEL", width: 28, leftAligned: true, descendingFirst: false, text: { rate, _ in rate.channel },
            sortValue: { .text($0.channel) }),
        Column(
            title: "GATEWAY", width: 21, leftAligned: true, descendingFirst: false, text: { rate, _ in rate.gateway },
            sortValue: { .text($0.gateway) }),
        .number("SUBS", 6, { Double($0.subscribers) }, Format.count),
        .number("MSGS/s", 8, { $0.messagesPerSecond }, Format.quantity),
        .number("OUT/s", 8, { $0.deliveriesPerSecond }, Format.quantity),
    ]

    /// The sort column the connections view starts on: deliveries per second.
    package static let connectionsDefaultSort = 4

    package static func consumerRows(_ consumers: [ConsumerFigures], state: ViewState) -> [ConsumerFigures] {
        let needle = state.filter.lowercased()
        let filtered = needle.isEmpty ? consumers : consumers.filter {
            $0.address.lowercased().contains(needle) || $0.state.label.lowercased().contains(needle) || $0.readyLabel.lowercased().contains(needle)
        }
        return sorted(filtered, columns: consumerColumns, state: state) { $0.address }
    }

    package static func connectionRows(_ rates: [ChannelRate], state: ViewState) -> [ChannelRate] {
        let needle = state.filter.lowercased()
        let filtered = needle.isEmpty ? rates : rates.filter { $0.channel.lowercased().contains(needle) || $0.gateway.lowercased().contains(needle) }
        return sorted(filtered, columns: connectionColumns, state: state) { $0.channel + " " + $0.gateway }
    }

    /// Whether the channels view shows channels from Redis rather than each gateway's broker figures.
    package static func showsPresence(_ state: ViewState) -> Bool {
        state.view == .channels && state.presenceChannels
    }

    /// The number of sortable columns of the view `state` is on (`s` cycles through them).
    package static func columnCount(_ state: ViewState) -> Int {
        if showsPresence(state) { return channelColumns.count }
        switch state.view {
        case .consumers: return consumerColumns.count
        case .connections: return connectionColumns.count
        default: return columns(state.view).count
        }
    }

    /// The title and direction of the current sort column.
    package static func sortTitle(_ state: ViewState) -> (title: String, descending: Bool) {
        func pick<Row>(_ columns: [Column<Row>]) -> (String, Bool) {
            let column = columns[min(state.currentSortColumn, columns.count - 1)]
            return (column.title, column.descendingFirst != state.currentSortReversed)
        }
        if showsPresence(state) { return pick(channelColumns) }
        switch state.view {
        case .consumers: return pick(consumerColumns)
        case .connections: return pick(connectionColumns)
        default: return pick(columns(state.view))
        }
    }

    /// The rows of the current view: filtered, then sorted (ties by address, so rows do not jump).
    package static func rows(_ gateways: [GatewayFigures], state: ViewState) -> [GatewayFigures] {
        let needle = state.filter.lowercased()
        let filtered = needle.isEmpty ? gateways : gateways.filter {
            $0.address.lowercased().contains(needle) || $0.state.label.lowercased().contains(needle)
        }
        return sorted(filtered, columns: columns(state.view), state: state) { $0.address }
    }

    /// The channel rows: filtered on the channel name, then sorted (ties by name).
    package static func channelRows(_ channels: [ChannelFigures], state: ViewState) -> [ChannelFigures] {
        let needle = state.filter.lowercased()
        let filtered = needle.isEmpty ? channels : channels.filter { $0.channel.lowercased().contains(needle) }
        return sorted(filtered, columns: channelColumns, state: state) { $0.channel }
    }

    /// The number of rows the current view has, for scrolling.
    package static func rowCount(_ frame: DashboardFrame, state: ViewState) -> Int {
        if showsPresence(state) { return channelRows(frame.presence?.channels ?? [], state: state).count }
        switch state.view {
        case .consumers: return consumerRows(frame.consumers, state: state).count
        case .connections: return connectionRows(frame.channelRates, state: state).count
        default: return rows(frame.gateways, state: state).count
        }
    }

    package static func sorted<Row>(_ filtered: [Row], columns: [Column<Row>], state: ViewState, name: (Row) -> String) -> [Row] {
        let column = columns[min(state.currentSortColumn, columns.count - 1)]
        let descending = column.descendingFirst != state.currentSortReversed
        return filtered.sorted { a, b in
            switch (column.sortValue(a), column.sortValue(b)) {
            case (.text(let x), .text(let y)) where x != y:
                return descending ? x > y : x < y
            case (.number(let x?), .number(let y?)) where x != y:
                return descending ? x > y : x < y
            case (.number(.some), .number(.none)):
                return true
            case (.number(.none), .number(.some)):
                return false
            default:
                return name(a) < name(b)
            }
        }
    }

    /// Table rows that fit under the header and above the footer (and the channels note).
    package static func pageSize(rows: Int, view: View) -> Int {
        max(1, rows - headerRows - 1 - (view == .channels || view == .connections ? 1 : 0))
    }

    // MARK: - Drawing

    package static func render(_ frame: DashboardFrame, state: ViewState, interval: Double, on canvas: any Canvas) {
        guard canvas.rows >= minimumRows, canvas.columns >= minimumColumns else {
            canvas.put(0, 0, "stormtop: terminal too small (\(canvas.columns)x\(canvas.rows), need \(minimumColumns)x\(minimumRows))", .warning)
            canvas.put(1, 0, "q quits", .normal)
            return
        }
        if state.showingHelp {
            renderHelp(on: canvas)
            return
        }
        renderHeader(frame, state: state, interval: interval, on: canvas)
        renderTable(frame, state: state, on: canvas)
        renderFooter(frame, state: state, on: canvas)
    }

    package static func put(_ canvas: any Canvas, _ row: Int, _ column: Int, _ segments: [(String, TextStyle)]) {
        var x = column
        for (text, style) in segments {
            canvas.put(row, x, text, style)
            x += text.count
        }
    }

    package static func renderHeader(_ frame: DashboardFrame, state: ViewState, interval: Double, on canvas: any Canvas) {
        let c = frame.cluster
        let unicode = canvas.unicode
        var title: [(String, TextStyle)] = [
            ("stormtop \(StormVersion.current)", .title),
            ("  \(frame.gateways.count) gateway\(frame.gateways.count == 1 ? "" : "s"): ", .normal),
            ("\(c.gatewaysUp) up", c.gatewaysUp > 0 ? .up : .normal),
        ]
        if c.gatewaysDown > 0 { title += [("  ", .normal), ("\(c.gatewaysDown) DOWN", .down)] }
        if c.gatewaysWaiting > 0 { title += [("  \(c.gatewaysWaiting) waiting", .dim)] }
        put(canvas, 0, 0, title)
        var right = state.paused ? "PAUSED" : "every \(Format.quantity(interval))s  \(Format.clock(frame.wallClock))"
        if let replay = frame.replayPosition { right = "\(replay)  \(Format.clock(frame.wallClock))" + (state.paused ? "  PAUSED" : "") }
        canvas.put(0, max(0, canvas.columns - right.count - 1), right, state.paused ? .warning : .normal)

        put(canvas, 1, 0, [
            ("Conns    ", .bold), ("ws \(Format.count(c.webSocketConnections))  sse \(Format.count(c.sseConnections))  total \(Format.count(c.connections))", .normal),
        ])
        put(canvas, 1, 44, [
            ("Msgs/s  ", .bold),
            ("in \(Format.quantity(c.publishedPerSecond))  out \(Format.quantity(c.deliveredPerSecond))  from broker \(Format.quantity(c.brokerReceivedPerSecond))", .normal),
        ])
        put(canvas, 2, 0, [
            ("p95      ", .bold),
            ("publish \(Format.latency(c.p95PublishSeconds, ascii: !unicode))  fan-out \(Format.latency(c.p95FanoutSeconds, ascii: !unicode))", .normal),
        ])
        let dropsStyle: TextStyle = (c.slowClientDropsPerSecond ?? 0) > 0 ? .warning : .normal
        put(canvas, 2, 44, [
            ("Drops   ", .bold),
            ("slow-client \(Format.quantity(c.slowClientDropsPerSecond))/s  (\(Format.count(c.slowClientDropsTotal)) total)", dropsStyle),
        ])
        let brokerStyle: TextStyle = c.brokersKnown == 0 ? .dim : c.brokersConnected == c.brokersKnown ? .up : .down
        put(canvas, 3, 0, [
            ("Broker   ", .bold), ("\(c.brokersConnected)/\(c.brokersKnown) connected", brokerStyle),
            ("  \(Format.count(c.brokerSubscriptions)) channels", .normal),
        ])
        let redis = redisStatus(frame)
        put(canvas, 3, 44, [("Redis   ", .bold), redis])

        let label = "Delivered/s "
        let now = frame.deliveryHistory.last ?? nil
        let visibleHistory = frame.deliveryHistory.suffix(max(0, canvas.columns - label.count - 34))
        let peak = visibleHistory.compactMap { $0 }.max()
        let span = Format.duration(Double(visibleHistory.count) * interval)
        canvas.put(4, 0, label, .bold)
        let spark = sparkline(Array(visibleHistory), unicode: unicode)
        canvas.put(4, label.count, spark, .up)
        canvas.put(4, label.count + spark.count + 1, "now \(Format.quantity(now))  max \(Format.quantity(peak))  last \(span)", .dim)

        var tabs: [(String, TextStyle)] = []
        for view in View.allCases {
            // Brackets as well as the highlight: the current view reads on any terminal and in a capture.
            let title = "\(view.rawValue + 1) \(view.title)"
            tabs.append((view == state.view ? "[\(title)]" : " \(title) ", view == state.view ? .selected : .normal))
            tabs.append((" ", .normal))
        }
        let sort = sortTitle(state)
        let arrow = unicode ? (sort.descending ? "▼" : "▲") : (sort.descending ? "v" : "^")
        tabs.append(("  sort: \(sort.title) \(arrow)", .normal))
        if !state.filter.isEmpty { tabs.append(("  filter: \(state.filter)", .warning)) }
        put(canvas, 6, 0, tabs)
        renderAlerts(frame, on: canvas)
    }

    /// Column titles on a full-width bar; the sort column's title stands out. Columns that do not fit are
    /// dropped from the right, never skipped in the middle.
    package static func renderTitles<Row>(_ columns: [Column<Row>], state: ViewState, on canvas: any Canvas) {
        let sortIndex = min(state.currentSortColumn, columns.count - 1)
        canvas.put(headerRows - 1, 0, String(repeating: " ", count: canvas.columns), .bar)
        var x = 0
        for (index, column) in columns.enumerated() {
            guard x + column.width <= canvas.columns else { break }
            canvas.put(headerRows - 1, x, align(column.title, column.width, left: column.leftAligned), index == sortIndex ? .selected : .bar)
            x += column.width + 1
        }
    }

    /// The busiest channels from Redis: subscribers and unique users per channel, across the cluster.
    package static func renderChannels(_ frame: DashboardFrame, state: ViewState, on canvas: any Canvas) {
        renderTitles(channelColumns, state: state, on: canvas)
        let channels = frame.presence?.channels ?? []
        let rows = channelRows(channels, state: state)
        let page = pageSize(rows: canvas.rows, view: state.view)
        let first = max(0, min(state.scroll, rows.count - page))
        for (offset, channel) in rows.dropFirst(first).prefix(page).enumerated() {
            var x = 0
            for column in channelColumns {
                guard x + column.width <= canvas.columns else { break }
                canvas.put(headerRows + offset, x, align(column.text(channel, canvas.unicode), column.width, left: column.leftAligned), column.style(channel))
                x += column.width + 1
            }
        }
        if rows.isEmpty {
            let message: String
            switch frame.presence?.state {
            case .down(let reason)?: message = "Redis is not answering: \(reason)"
            case .waiting?, nil: message = "reading Redis…"
            case .up?:
                message = channels.isEmpty
                    ? "no channel has presence (stormd --presence-channels, and --redis on every gateway)"
                    : "no channel matches the filter \"\(state.filter)\" (Esc clears it)"
            }
            canvas.put(headerRows, 0, message, .dim)
        }
        var note = "Channels with presence in Redis: connections, unique users and gateways holding them."
        if frame.presence?.truncated == true { note += " More keys than stormtop reads per poll: list incomplete." }
        if rows.contains(where: { $0.users == nil }) { note += " Users '-': channel too big to read in full." }
        canvas.put(canvas.rows - 2, 0, note, .dim)
    }

    /// The Redis figure of the header. With `--redis`, stormtop's own reading comes first. Without it,
    /// `storm_redis_connected` is 0 both when Redis is down and when the gateway runs without --redis:
    /// none connected is therefore shown plainly, some connected as a warning.
    package static func redisStatus(_ frame: DashboardFrame) -> (String, TextStyle) {
        let c = frame.cluster
        let gateways = c.redisKnown == 0 ? "" : "  gateways \(c.redisConnected)/\(c.redisKnown)"
        if let presence = frame.presence {
            switch presence.state {
            case .waiting: return ("connecting", .dim)
            case .down(let reason): return ("DOWN \(reason)", .down)
            case .up:
                let channels = "\(presence.channels.count)\(presence.truncated ? "+" : "") channels"
                return ("up  \(presence.gateways.count) registered  \(channels)\(gateways)", .up)
            }
        }
        if c.redisKnown == 0 { return ("-", .dim) }
        if c.redisConnected == 0 { return ("0/\(c.redisKnown) connected (down, or no --redis)", .dim) }
        return ("\(c.redisConnected)/\(c.redisKnown) connected", c.redisConnected == c.redisKnown ? .up : .warning)
    }

    /// Row 5: the alerts, or that there are none.
    package static func renderAlerts(_ frame: DashboardFrame, on canvas: any Canvas) {
        guard !frame.alerts.isEmpty else {
            put(canvas, 5, 0, [("Alerts   ", .bold), ("none", .dim)])
            return
        }
        var segments: [(String, TextStyle)] = [("Alerts   ", .bold), ("\(frame.alerts.count): ", .down)]
        for (index, alert) in frame.alerts.enumerated() {
            segments.append(((index > 0 ? "  |  " : "") + alert.text, alert.kind == .consumerLag || alert.kind == .storeFull ? .warning : .down))
        }
        put(canvas, 5, 0, segments)
    }

    /// Rows of any type under their column titles, scrolled; `message` when there are none.
    package static func renderRows<Row>(_ rows: [Row], columns: [Column<Row>], state: ViewState, empty message: String, on canvas: any Canvas) {
        renderTitles(columns, state: state, on: canvas)
        let page = pageSize(rows: canvas.rows, view: state.view)
        let first = max(0, min(state.scroll, rows.count - page))
        for (offset, row) in rows.dropFirst(first).prefix(page).enumerated() {
            var x = 0
            for column in columns {
                guard x + column.width <= canvas.columns else { break }
                canvas.put(headerRows + offset, x, align(column.text(row, canvas.unicode), column.width, left: column.leftAligned), column.style(row))
                x += column.width + 1
            }
        }
        if rows.isEmpty { canvas.put(headerRows, 0, message, .dim) }
    }

    package static func renderTable(_ frame: DashboardFrame, state: ViewState, on canvas: any Canvas) {
        if showsPresence(state) {
            renderChannels(frame, state: state, on: canvas)
            return
        }
        switch state.view {
        case .consumers:
            let rows = consumerRows(frame.consumers, state: state)
            let message = frame.consumers.isEmpty
                ? "no history consumer to poll: give --consumer URL (stormd --role consumer, or a gateway with --role all)"
                : "no consumer matches the filter \"\(state.filter)\" (Esc clears it)"
            renderRows(rows, columns: consumerColumns, state: state, empty: message, on: canvas)
            // A consumer that is down or not ready says why under the table.
            let reasons = frame.consumers.compactMap { consumer -> String? in
                if case .down(let reason) = consumer.state { return "\(consumer.address): \(reason)" }
                if consumer.ready == false { return "\(consumer.address): \(consumer.readyReason ?? "not ready")" }
                return nil
            }
            if !reasons.isEmpty { canvas.put(canvas.rows - 2, 0, reasons.joined(separator: "  "), .down) }
            return
        case .connections:
            let rows = connectionRows(frame.channelRates, state: state)
            let message = frame.channelRates.isEmpty
                ? (frame.channelFailures.isEmpty ? "no channel has subscribers" : "GET /api/v1/channels: " + frame.channelFailures.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: "; "))
                : "no channel matches the filter \"\(state.filter)\" (Esc clears it)"
            renderRows(rows, columns: connectionColumns, state: state, empty: message, on: canvas)
            let perGateway = frame.gateways.filter { $0.state == .up }.map { gateway in
                "\(gateway.address): conns \(Format.count(gateway.connections))  drops \(Format.quantity(gateway.slowClientDropsPerSecond))/s (\(Format.count(gateway.slowClientDropsTotal)))  rate-limited \(Format.quantity(gateway.rateLimitedPerSecond))/s (\(Format.count(gateway.rateLimitedTotal)))"
            }
            canvas.put(canvas.rows - 2, 0, perGateway.joined(separator: "   "), .dim)
            return
        default:
            break
        }
        let columns = columns(state.view)
        renderTitles(columns, state: state, on: canvas)
        let rows = rows(frame.gateways, state: state)
        let page = pageSize(rows: canvas.rows, view: state.view)
        let first = max(0, min(state.scroll, rows.count - page))
        for (offset, gateway) in rows.dropFirst(first).prefix(page).enumerated() {
            let row = headerRows + offset
            var x = 0
            for (index, column) in columns.enumerated() {
                guard x + column.width <= canvas.columns else { break }
                if index >= 2, case .down(let reason) = gateway.state {
                    // A down gateway has no figures: the reason takes the rest of the line.
                    canvas.put(row, x, reason, .down)
                    break
                }
                canvas.put(row, x, align(column.text(gateway, canvas.unicode), column.width, left: column.leftAligned), column.style(gateway))
                x += column.width + 1
            }
        }
        if rows.isEmpty {
            let message = frame.gateways.isEmpty ? "no gateways" : "no gateway matches the filter \"\(state.filter)\" (Esc clears it)"
            canvas.put(headerRows, 0, message, .dim)
        }
        if state.view == .channels {
            canvas.put(
                canvas.rows - 2, 0,
                "Per-channel subscribers and users need --redis (presence in Redis); shown: channels each gateway subscribes to at the broker.",
                .dim)
        }
    }

    package static func renderFooter(_ frame: DashboardFrame, state: ViewState, on canvas: any Canvas) {
        let row = canvas.rows - 1
        if let typed = state.editingFilter {
            put(canvas, row, 0, [("/", .bold), (typed, .normal), ("_", .selected), ("   Enter apply  Esc cancel", .dim)])
            return
        }
        let count = rowCount(frame, state: state)
        let page = pageSize(rows: canvas.rows, view: state.view)
        let first = max(0, min(state.scroll, count - page))
        let position = count > page ? "rows \(first + 1)-\(min(count, first + page)) of \(count)  " : ""
        put(canvas, row, 0, [
            (position, .normal),
            ("?", .bold), (" help  ", .dim), ("q", .bold), (" quit  ", .dim), ("p", .bold), (" pause  ", .dim),
            ("Tab/1-6", .bold), (" views  ", .dim), ("s/o", .bold), (" sort/order  ", .dim), ("/", .bold), (" filter", .dim),
        ])
    }

    package static func renderHelp(on canvas: any Canvas) {
        canvas.put(0, 0, "stormtop \(StormVersion.current): keys", .title)
        var row = 2
        for (keys, what) in ViewState.help where row < canvas.rows - 1 {
            canvas.put(row, 2, align(keys, 15, left: true), .bold)
            canvas.put(row, 18, what, .normal)
            row += 1
        }
        row += 1
        let notes = [
            "Views: 1 Gateways (one row per gateway), 2 Channels (with --redis: clients and users per channel; without: broker",
            "subscriptions and fan-out per gateway), 3 Errors (drops, client errors), 4 Consumers (--consumer: lag, rows/s,",
            "batch size, insert p95, failures, /readyz), 5 Broker (NATS per gateway; the stream's replicas, leader, size, limits),",
            "6 Connections (channels by deliveries/s from GET /api/v1/channels; drops and rate-limited publishes per gateway).",
            "Alerts: gateway or consumer down, consumer lag >= --lag-alert, stream under-replicated, stream > --store-alert % full.",
            "With --redis, gateways come from the registry in Redis too; one whose record expired leaves the table.",
            "Rates are per second between the last two polls; p95s are from the histogram buckets observed in that interval.",
            "A gateway that does not answer within --timeout is shown DOWN with the reason.",
        ]
        for note in notes where row < canvas.rows - 1 {
            canvas.put(row, 2, note, .dim)
            row += 1
        }
        canvas.put(canvas.rows - 1, 0, "press any key to return", .bold)
    }

    package static func align(_ text: String, _ width: Int, left: Bool) -> String {
        if text.count >= width { return left ? String(text.prefix(width)) : text }
        let fill = String(repeating: " ", count: width - text.count)
        return left ? text + fill : fill + text
    }

    /// One character per sample, scaled to the largest visible sample: `▁` is zero, `█` the peak, a blank
    /// a poll with no figure.
    package static func sparkline(_ values: [Double?], unicode: Bool) -> String {
        let levels: [Character] = unicode ? ["▁", "▂", "▃", "▄", "▅", "▆", "▇", "█"] : ["_", ".", "-", "~", "=", "+", "*", "#"]
        let peak = values.compactMap { $0 }.max() ?? 0
        return String(values.map { value -> Character in
            guard let value, value.isFinite else { return " " }
            guard peak > 0, value > 0 else { return levels[0] }
            let level = Int((value / peak * Double(levels.count - 1)).rounded(.up))
            return levels[max(1, min(levels.count - 1, level))]
        })
    }
}
