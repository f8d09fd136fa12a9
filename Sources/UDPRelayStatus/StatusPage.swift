/// Renders `GET /`: one self-contained HTML page (inline CSS, no scripts, no external assets)
/// in the spirit of HAProxy's stats page. It reloads itself every `refreshSeconds`.
public enum StatusPage {
    public static let refreshSeconds = 2

    /// - Parameters:
    ///   - rates: per-second rates of each listener by name (missing: not enough history yet).
    ///   - problems: health problems, empty when healthy.
    ///   - busiest: the busiest live sessions of each relay listener by name (see `busiest(_:)`).
    public static func render(
        _ s: StatusSnapshot, server: ServerCounters, rates: [String: ListenerRates],
        problems: [String], busiest: [String: [SessionStatus]] = [:]
    ) -> String {
        var h = ""
        h += """
            <!DOCTYPE html>
            <html lang="en"><head><meta charset="utf-8">
            <meta http-equiv="refresh" content="\(refreshSeconds)">
            <meta name="viewport" content="width=device-width, initial-scale=1">
            <title>\(problems.isEmpty ? "" : "\u{26A0} ")udprelayd \(Format.html(s.daemon.version)) \u{2014} status</title>
            <style>\(css)</style></head><body>

            """
        // Header: identity, health, process facts.
        let healthy = problems.isEmpty
        h += "<header><h1>udprelayd <span class=\"ver\">\(Format.html(s.daemon.version))</span></h1>"
        h +=
            healthy
            ? "<span class=\"pill ok\" id=\"health\">HEALTHY</span>"
            : "<span class=\"pill bad\" id=\"health\">\(problems.count) PROBLEM\(problems.count == 1 ? "" : "S")</span>"
        h += "<div class=\"facts\">pid <b>\(s.daemon.pid)</b> \u{00B7} up <b>\(Format.duration(s.time - s.daemon.startTime))</b>"
        h += " \u{00B7} \(s.listeners.count) listener\(s.listeners.count == 1 ? "" : "s")"
        h += " \u{00B7} updated <b>\(Format.clock(s.time))</b> UTC</div></header>\n"

        if !healthy {
            h += "<ul class=\"problems\">"
            for p in problems { h += "<li>\(Format.html(p))</li>" }
            h += "</ul>\n"
        }

        // Configuration line.
        h += "<section class=\"config\"><span>config <code>\(Format.html(s.config.path))</code></span>"
        h += "<span>generation <b>\(s.config.generation)</b></span>"
        h += "<span>loaded <b>\(Format.clock(s.config.loadedAt))</b> UTC</span>"
        if let r = s.config.lastReload {
            if r.ok {
                h += "<span>last reload <b class=\"good\">ok</b> at \(Format.clock(r.at)) UTC</span>"
            } else {
                h += "<span>last reload <b class=\"badtext\">FAILED</b> at \(Format.clock(r.at)) UTC: "
                h += r.errors.map { "<code class=\"err\">\(Format.html($0))</code>" }.joined(separator: " ")
                h += "</span>"
            }
        } else {
            h += "<span>last reload <b class=\"muted\">none</b></span>"
        }
        h += "</section>\n"

        // The listener table.
        let window = rates.values.map(\.window).max()
        h += "<table><thead><tr>"
        h += "<th class=\"l\">Listener</th><th class=\"l\">Mode</th><th class=\"l\">Addresses</th>"
        h += "<th>In pkt/s</th><th>In bytes/s</th><th>Out pkt/s</th><th>Out bytes/s</th>"
        h += "<th>Received</th><th>Sent</th><th class=\"l\">Drops</th><th>Sessions</th>"
        h += "</tr></thead><tbody>\n"
        let bodyStart = h.endIndex
        if s.listeners.isEmpty {
            h += "<tr><td colspan=\"11\" class=\"muted\">no listeners configured</td></tr>\n"
        }
        for l in s.listeners {
            let r = rates[l.name]
            let unbound = l.addresses.count < l.configuredAddresses
            h += "<tr class=\"listener\" id=\"listener-\(Format.html(l.name))\">"
            h += "<td class=\"l name\">\(Format.html(l.name))\(unbound ? " <span class=\"pill bad small\">UNBOUND</span>" : "")</td>"
            h += "<td class=\"l\"><span class=\"mode\">\(Format.html(l.mode))</span>"
            if l.sendsProxyProtocol {
                h += "<br><span class=\"sub\" title=\"proxy_protocol: each datagram to an upstream starts with a PROXY header\">"
                h += "PROXY \(Format.html(l.proxyProtocol))</span>"
            }
            if l.transparent {
                h += "<br><span class=\"sub\" title=\"transparent: upstreams see each client's own address and port\">transparent</span>"
            }
            if l.spoof {
                h += "<br><span class=\"sub\" title=\"spoof: copies leave with each client's own address and port\">spoof</span>"
            }
            if l.acceptProxyProtocol != "off" {
                h += "<br><span class=\"sub\" title=\"accept_proxy_protocol: datagrams from proxy_protocol_from carry a PROXY header naming the client\">"
                h += "accepts PROXY (\(Format.html(l.acceptProxyProtocol)))</span>"
            }
            h += "</td>"
            h += "<td class=\"l addr\">\(Format.addressRuns(l.addresses).map { "<code>\(Format.html($0))</code>" }.joined(separator: "<br>"))</td>"
            h += rateCell(r?.receivedPackets, Format.si)
            h += rateCell(r?.receivedBytes) { Format.bytes($0) + "/s" }
            h += rateCell(r?.sentPackets, Format.si)
            h += rateCell(r?.sentBytes) { Format.bytes($0) + "/s" }
            h += "<td>\(Format.grouped(l.received.packets)) pkt<br><span class=\"sub\">\(Format.bytes(Double(l.received.bytes)))</span></td>"
            h += "<td>\(Format.grouped(l.sent.packets)) pkt<br><span class=\"sub\">\(Format.bytes(Double(l.sent.bytes)))</span></td>"
            h += "<td class=\"l wrap\">\(dropsCell(l, rate: r?.drops))</td>"
            let events = l.counters.filter { $0.value > 0 }.map { nowrap("\(Format.html($0.name)) \(Format.grouped($0.value))") }
            let eventsLine = events.isEmpty ? "" : "<br><span class=\"sub\">\(events.joined(separator: " \u{00B7} "))</span>"
            if let x = l.sessions {
                h +=
                    "<td class=\"wrap\"><b>\(Format.grouped(x.active))</b> active<br><span class=\"sub\">\(nowrap("\(Format.grouped(x.created)) created")) \u{00B7} \(nowrap("\(Format.grouped(x.expired)) expired")) \u{00B7} \(nowrap("\(Format.grouped(x.evicted)) evicted"))</span>\(eventsLine)</td>"
            } else {
                h += events.isEmpty ? "<td class=\"muted\">\u{2014}</td>" : "<td class=\"wrap\">\(eventsLine.dropFirst(4))</td>"
            }
            h += "</tr>\n"
            if l.hasSeveralWorkersPerAddress {
                for w in workerRows(l) { h += workerRow(w, listener: l) }
            }
            for u in l.upstreams {
                let cls = u.isUp ? "ok" : (u.state == "down" ? "bad" : "warn")
                h += "<tr class=\"upstream\"><td class=\"l\" colspan=\"2\">\u{21B3} upstream</td>"
                h += "<td class=\"l addr\"><code>\(Format.html(u.address))</code>"
                if let r = u.resolved { h += " \u{2192} <code>\(Format.html(r))</code>" }
                h += " <span class=\"pill \(cls) small\">\(Format.html(u.state.uppercased()))</span>"
                if u.draining { h += " <span class=\"pill warn small\">DRAINING</span>" }
                if u.removed { h += "<br><span class=\"sub\">no longer in the DNS answer: goes once its sessions end</span>" }
                let options = (u.backup ? ["backup"] : []) + (u.weight != 1 ? ["weight \(u.weight)"] : [])
                if !options.isEmpty { h += "<br><span class=\"sub\">\(options.joined(separator: " \u{00B7} "))</span>" }
                h += "</td>"
                h += "<td colspan=\"4\" class=\"muted\"></td>"
                h += "<td>\(Format.grouped(u.received.packets)) pkt<br><span class=\"sub\">\(Format.bytes(Double(u.received.bytes)))</span></td>"
                h += "<td>\(Format.grouped(u.sent.packets)) pkt<br><span class=\"sub\">\(Format.bytes(Double(u.sent.bytes)))</span></td>"
                h +=
                    "<td class=\"l wrap\">\(u.failures == 0 ? "<span class=\"muted\">no failures</span>" : "<span class=\"drop\">\(Format.grouped(u.failures)) failures</span>")"
                // Why it is down: the last error, and how its health probes fare.
                if !u.isUp, let e = u.lastError { h += "<br><span class=\"sub\">last error: \(Format.html(e))</span>" }
                let probesSent = u.counter(UpstreamStatus.probesSentName)
                if probesSent > 0 {
                    let answered = u.counter(UpstreamStatus.probesAnsweredName)
                    h += "<br><span class=\"sub\">probes \(Format.grouped(answered)) of \(Format.grouped(probesSent)) answered</span>"
                }
                h += "</td>"
                // Live sessions on it (mirror listeners keep none).
                h += l.sessions == nil ? "<td></td></tr>\n" : "<td><b>\(Format.grouped(u.sessionsActive))</b> active</td></tr>\n"
            }
        }
        // Narrow screens show each row as a stack of "label value" lines: every cell carries
        // its column's name.
        h.replaceSubrange(bodyStart..., with: labelCells(String(h[bodyStart...])))
        h += "</tbody></table>\n"
        h += busiestSection(s, busiest)

        h += "<footer>"
        h += window.map { "Rates over the last \(Format.fixed($0, 0)) s." } ?? "Rates appear after a second or two."
        h +=
            " Page refreshes every \(refreshSeconds) s. Status endpoint: \(server.open) open connection\(server.open == 1 ? "" : "s"), \(Format.grouped(server.requests)) requests"
        if server.rejectedNotAllowed + server.rejectedLimit > 0 {
            h += ", rejected \(server.rejectedNotAllowed) not allowed / \(server.rejectedLimit) over the limit"
        }
        if server.acceptErrors > 0 {
            h += ", <span class=\"badtext\">\(Format.grouped(server.acceptErrors)) not accepted for lack of file descriptors</span>"
        }
        h += ". Machine-readable: <a href=\"/status\">/status</a> \u{00B7} <a href=\"/sessions\">/sessions</a>"
        h += " \u{00B7} <a href=\"/metrics\">/metrics</a> \u{00B7} <a href=\"/healthz\">/healthz</a>"
        h += "</footer>\n</body></html>\n"
        return h
    }

    /// Sessions shown per relay listener on the page.
    static let busiestRows = 5

    /// Of `sessions` (the most recently active, as `/sessions` gives them), the `busiestRows`
    /// with the most datagrams both ways, per listener.
    public static func busiest(_ sessions: [SessionStatus]) -> [String: [SessionStatus]] {
        Dictionary(grouping: sessions, by: \.listener).mapValues { list in
            Array(
                list.enumerated().sorted { a, b in
                    let x = a.element.toUpstream.packets &+ a.element.toClient.packets
                    let y = b.element.toUpstream.packets &+ b.element.toClient.packets
                    return x != y ? x > y : a.offset < b.offset
                }.prefix(busiestRows).map(\.element))
        }
    }

    /// The busiest sessions of each relay listener that has some, one line each (wraps on
    /// narrow screens); nothing when none has.
    static func busiestSection(_ s: StatusSnapshot, _ busiest: [String: [SessionStatus]]) -> String {
        var h = ""
        for l in s.listeners where l.sessions != nil {
            guard let list = busiest[l.name], !list.isEmpty else { continue }
            h += "<section class=\"busiest\" id=\"sessions-\(Format.html(l.name))\"><h2>Busiest sessions \u{2014} \(Format.html(l.name))</h2><ul>"
            for x in list {
                h += "<li><code>\(Format.html(x.client))</code> \u{2192} <code>\(Format.html(x.upstream))</code>"
                // A hostname's sessions spread over its addresses: say which one.
                if let a = x.upstreamAddress, a != x.upstream { h += " (<code>\(Format.html(a))</code>)" }
                h += " \u{00B7} \(nowrap("\(Format.grouped(x.toUpstream.packets)) pkt / \(Format.bytes(Double(x.toUpstream.bytes))) up"))"
                h += " \u{00B7} \(nowrap("\(Format.grouped(x.toClient.packets)) pkt / \(Format.bytes(Double(x.toClient.bytes))) down"))"
                h += " \u{00B7} \(nowrap("age \(Format.duration(x.ageSeconds))")) \u{00B7} \(nowrap("idle \(Format.duration(x.idleSeconds))"))</li>"
            }
            h += "</ul></section>\n"
        }
        return h
    }

    /// At most this many worker rows per listener; beyond, workers are summed by their number.
    static let workerRowsLimit = 32

    /// The worker rows of a listener: one per socket, or, for a listener with many addresses
    /// (a port range), one per worker number summed over its addresses ("worker 1 of 2" on
    /// every address together), which still shows how the kernel spreads clients.
    static func workerRows(_ l: ListenerStatus) -> [WorkerStatus] {
        guard l.workers.count > workerRowsLimit else { return l.workers }
        var byNumber: [Int: WorkerStatus] = [:]
        var addresses: [Int: Int] = [:]
        for w in l.workers {
            var sum = byNumber[w.number] ?? WorkerStatus(address: "", number: w.number, of: 0)
            sum.of = max(sum.of, w.of)
            sum.received.packets += w.received.packets
            sum.received.bytes += w.received.bytes
            sum.sent.packets += w.sent.packets
            sum.sent.bytes += w.sent.bytes
            byNumber[w.number] = sum
            addresses[w.number, default: 0] += 1
        }
        return byNumber.keys.sorted().map { n in
            var w = byNumber[n]!
            w.address = "on \(addresses[n]!) addresses"
            return w
        }
    }

    /// One socket's worker of a listener with `workers` above 1: its totals and its share of the
    /// listener's received datagrams, which shows how the kernel spreads clients (SO_REUSEPORT).
    static func workerRow(_ w: WorkerStatus, listener l: ListenerStatus) -> String {
        var h = "<tr class=\"worker\"><td class=\"l\" colspan=\"2\">\u{21B3} worker \(w.number) of \(w.of)</td>"
        h += "<td class=\"l addr\"><code>\(Format.html(w.address))</code></td>"
        if l.received.packets == 0 {
            h += "<td colspan=\"4\" class=\"muted\">no datagrams yet</td>"
        } else {
            let share = 100 * Double(w.received.packets) / Double(l.received.packets)
            h += "<td colspan=\"4\" class=\"share\">\(Format.fixed(share, 1))% of datagrams in"
            h += "<span class=\"bar\"><i style=\"width:\(Format.fixed(min(100, share), 1))%\"></i></span></td>"
        }
        h += "<td>\(Format.grouped(w.received.packets)) pkt<br><span class=\"sub\">\(Format.bytes(Double(w.received.bytes)))</span></td>"
        h += "<td>\(Format.grouped(w.sent.packets)) pkt<br><span class=\"sub\">\(Format.bytes(Double(w.sent.bytes)))</span></td>"
        h += "<td></td><td></td></tr>\n"
        return h
    }

    /// Column names, for the stacked layout of narrow screens.
    static let columns = [
        "Listener", "Mode", "Addresses", "In pkt/s", "In bytes/s", "Out pkt/s", "Out bytes/s",
        "Received", "Sent", "Drops", "Sessions",
    ]

    /// Adds `data-label="<column>"` to every `<td` of the rows in `body`, following colspans;
    /// a cell spanning several columns gets an empty label (its content says what it is).
    static func labelCells(_ body: String) -> String {
        var out = ""
        out.reserveCapacity(body.utf8.count + body.utf8.count / 4)
        var column = 0
        var rest = Substring(body)
        while let open = rest.firstIndex(of: "<") {
            out += rest[..<open]
            rest = rest[open...]
            if rest.hasPrefix("<tr") {
                column = 0
            } else if rest.hasPrefix("<td"), let close = rest.firstIndex(of: ">") {
                let tag = rest[..<close]
                var span = 1
                if let r = tag.firstRange(of: "colspan=\"") {
                    span = Int(tag[r.upperBound...].prefix { $0.isNumber }) ?? 1
                }
                let label = span == 1 && column < columns.count ? columns[column] : ""
                out += "<td data-label=\"\(label)\""
                rest = rest[rest.index(rest.startIndex, offsetBy: 3)...]
                column += span
                continue
            }
            out += "<"
            rest = rest.dropFirst()
        }
        out += rest
        return out
    }

    static func nowrap(_ html: String) -> String { "<span class=\"nw\">\(html)</span>" }

    static func rateCell(_ value: Double?, _ format: (Double) -> String) -> String {
        guard let value else { return "<td class=\"muted\">\u{2026}</td>" }
        return value == 0 ? "<td class=\"muted\">0</td>" : "<td class=\"rate\">\(format(value))</td>"
    }

    static func dropsCell(_ l: ListenerStatus, rate: Double?) -> String {
        var parts = l.drops.filter { $0.count > 0 }.map {
            "<span class=\"drop\">\(Format.html($0.reason)) \(Format.grouped($0.count))</span>"
        }
        if l.receiveErrors > 0 { parts.append("<span class=\"drop\">\(ListenerStatus.receiveErrorsName) \(Format.grouped(l.receiveErrors))</span>") }
        guard !parts.isEmpty else { return "<span class=\"muted\">none</span>" }
        var cell = parts.joined(separator: " ")
        if let rate, rate > 0 { cell += "<br><span class=\"sub badtext\">\(Format.si(rate))/s now</span>" }
        return cell
    }

    static let css = """
        :root{--ok:#1a7f37;--bad:#cf222e;--warn:#9a6700;--fg:#1f2328;--muted:#6e7781;--line:#d0d7de;--head:#24292f}
        *{box-sizing:border-box}
        body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI","DejaVu Sans",sans-serif;color:var(--fg);background:#f6f8fa}
        header{display:flex;align-items:center;gap:16px;flex-wrap:wrap;background:var(--head);color:#fff;padding:12px 24px}
        h1{font-size:22px;margin:0;font-weight:600}
        .ver{font-weight:400;color:#afb8c1;font-size:16px}
        .facts{margin-left:auto;color:#d0d7de}
        .facts b{color:#fff}
        .pill{display:inline-block;padding:2px 12px;border-radius:999px;font-weight:700;font-size:14px;letter-spacing:.04em;color:#fff}
        .pill.small{font-size:11px;padding:1px 8px;vertical-align:middle}
        .ok{background:var(--ok)} .bad{background:var(--bad)} .warn{background:var(--warn)}
        .problems{margin:0;padding:10px 24px 10px 44px;background:#ffebe9;color:var(--bad);font-weight:600;border-bottom:1px solid #ffcecb}
        .config{display:flex;flex-wrap:wrap;gap:6px 28px;padding:10px 24px;background:#fff;border-bottom:1px solid var(--line)}
        code{font:13px ui-monospace,"DejaVu Sans Mono",monospace}
        code.err{color:var(--bad);display:block}
        .good{color:var(--ok)} .badtext{color:var(--bad)} .muted{color:var(--muted)}
        table{border-collapse:collapse;margin:16px 24px;background:#fff;border:1px solid var(--line);width:calc(100% - 48px)}
        th{background:#eaeef2;font-size:12px;text-transform:uppercase;letter-spacing:.05em;color:#57606a;padding:8px 10px;text-align:right}
        td{padding:8px 10px;border-top:1px solid var(--line);text-align:right;vertical-align:top;font-variant-numeric:tabular-nums}
        .l{text-align:left}
        td.name,td.addr,.problems,.config,footer{overflow-wrap:anywhere}
        td.wrap{min-width:120px;max-width:260px}
        .nw{white-space:normal}
        tr.listener td.name{font-weight:700;font-size:17px}
        tr.upstream td,tr.worker td{border-top:1px dashed var(--line);background:#fbfcfd;font-size:14px}
        .bar{display:inline-block;width:120px;height:8px;margin-left:10px;background:#eaeef2;border-radius:4px;overflow:hidden;vertical-align:middle}
        .bar i{display:block;height:100%;background:#0969da}
        .mode{background:#ddf4ff;color:#0969da;border-radius:6px;padding:1px 8px;font-size:13px;font-weight:600}
        .rate{font-weight:700;font-size:16px}
        .sub{color:var(--muted);font-size:13px}
        .sub.badtext{color:var(--bad)}
        .drop{display:inline-block;background:#ffebe9;color:var(--bad);border-radius:6px;padding:0 6px;margin:1px 0;font-weight:600;font-size:13px}
        footer{margin:0 24px 24px;color:var(--muted);font-size:13px}
        .busiest{margin:0 24px 16px;font-size:14px;overflow-wrap:anywhere}
        .busiest h2{font-size:15px;margin:0 0 4px}
        .busiest ul{margin:0;padding-left:20px}
        a{color:#0969da}
        @media (max-width:1100px){
        header{padding:10px 14px;gap:6px 14px}
        .facts{margin-left:0}
        .problems{padding:8px 14px 8px 32px}
        .config{padding:8px 14px}
        table,tbody,tr,td{display:block}
        table{margin:12px;width:auto;border:0;background:none}
        thead{display:none}
        tr{background:#fff;border:1px solid var(--line);border-radius:8px;margin-bottom:10px;overflow:hidden}
        tr.upstream,tr.worker{margin:-4px 0 10px 18px}
        td{position:relative;padding:6px 12px 6px 9.5em;min-height:2.2em;text-align:right;border-top:1px solid #eef1f4}
        td:first-child{border-top:0}
        td.wrap{min-width:0;max-width:none}
        td::before{content:attr(data-label);position:absolute;left:12px;top:8px;font-size:12px;text-transform:uppercase;letter-spacing:.05em;color:#57606a;text-align:left}
        td[data-label=""]{padding-left:12px}
        td:empty{display:none}
        tr.listener td.name{text-align:left;padding-left:12px;background:#eaeef2}
        tr.listener td.name::before{content:none}
        .bar{width:80px}
        footer{margin:0 14px 18px}
        .busiest{margin:0 14px 12px}
        }
        """
}
