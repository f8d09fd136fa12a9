import Foundation
import NIOHTTP1
import XCTest
import UDPRelayConfig
@testable import UDPRelayStatus

/// A source with fixed contents, for rendering and routing tests.
struct FixedSource: StatusSource {
    var value: StatusSnapshot
    var health: [String] = []
    func snapshot() -> StatusSnapshot { value }
    func problems() async -> [String] { health }
}

enum Fixtures {
    static let drops = ["too_large", "send_buffer_full", "refused", "send_error"]

    static func snapshot() -> StatusSnapshot {
        StatusSnapshot(
            daemon: DaemonInfo(version: "1.2.3", pid: 4242, startTime: 1_795_600_000.25),
            config: ConfigInfo(path: "/etc/udprelayd/udprelayd.ini", generation: 3, loadedAt: 1_795_600_100.5,
                               lastReload: ReloadInfo(ok: false, at: 1_795_600_200, errors: ["x.ini:3: [listener a] mode: bad \"value\""])),
            listeners: [
                ListenerStatus(name: "dns", mode: "echo", addresses: ["127.0.0.1:53", "[::1]:53"],
                               received: Traffic(packets: UInt64.max, bytes: 1_000_000), sent: Traffic(packets: 7, bytes: 700),
                               receiveErrors: 2,
                               drops: drops.enumerated().map { DropCount(reason: $1, count: UInt64($0)) },
                               workers: [
                                   WorkerStatus(address: "127.0.0.1:53", received: Traffic(packets: 60, bytes: 6000), sent: Traffic(packets: 4, bytes: 400)),
                                   WorkerStatus(address: "127.0.0.1:53", received: Traffic(packets: 40, bytes: 4000), sent: Traffic(packets: 3, bytes: 300)),
                                   WorkerStatus(address: "[::1]:53"),
                                   WorkerStatus(address: "[::1]:53", received: Traffic(packets: UInt64.max - 100, bytes: 990_000)),
                               ]),
                ListenerStatus(name: "game-relay", mode: "relay", addresses: ["0.0.0.0:27015"],
                               drops: drops.map { DropCount(reason: $0, count: 0) },
                               sessions: SessionCounters(active: 5, created: 9, expired: 3, evicted: 1),
                               upstreams: [
                                   UpstreamStatus(address: "10.0.0.1:27015", state: "up", sent: Traffic(packets: 10, bytes: 1000),
                                                  received: Traffic(packets: 9, bytes: 900), failures: 0,
                                                  counters: [NamedCounter("probes_sent", 7)]),
                                   UpstreamStatus(address: "10.0.0.2:27015", state: "down", failures: 4),
                               ],
                               counters: [NamedCounter("fail_open", 2), NamedCounter("sessions_closed", 0)],
                               workers: [WorkerStatus(address: "0.0.0.0:27015")]),
            ],
            time: 1_795_600_300.75
        )
    }

    static var server: ServerCounters {
        var c = ServerCounters()
        c.accepted = 10
        c.open = 2
        c.rejectedNotAllowed = 3
        c.acceptErrors = 6
        c.rejectedLimit = 1
        c.requests = 20
        return c
    }
}

final class StatusJSONTests: XCTestCase {
    func parse(_ text: String) throws -> [String: Any] {
        try XCTUnwrap(JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
    }

    func testDocumentHasTheDocumentedShapeAndValues() throws {
        let text = StatusJSON.render(Fixtures.snapshot(), server: Fixtures.server)
        let doc = try parse(text)
        XCTAssertEqual(Set(doc.keys), ["schema_version", "time", "daemon", "config", "status_server", "listeners"])
        XCTAssertEqual(doc["schema_version"] as? Int, 1)
        XCTAssertEqual(doc["time"] as? String, "2026-11-25T09:51:40.750Z")

        let daemon = try XCTUnwrap(doc["daemon"] as? [String: Any])
        XCTAssertEqual(daemon["version"] as? String, "1.2.3")
        XCTAssertEqual(daemon["pid"] as? Int, 4242)
        XCTAssertEqual(daemon["start_time"] as? String, "2026-11-25T09:46:40.250Z")
        XCTAssertEqual(daemon["uptime_seconds"] as? Double, 300.5)

        let config = try XCTUnwrap(doc["config"] as? [String: Any])
        XCTAssertEqual(config["generation"] as? Int, 3)
        let reload = try XCTUnwrap(config["last_reload"] as? [String: Any])
        XCTAssertEqual(reload["ok"] as? Bool, false)
        XCTAssertEqual(reload["errors"] as? [String], ["x.ini:3: [listener a] mode: bad \"value\""])

        let server = try XCTUnwrap(doc["status_server"] as? [String: Any])
        XCTAssertEqual((server["connections_rejected"] as? [String: Any])?["not_allowed"] as? Int, 3)
        XCTAssertEqual(server["accept_errors"] as? Int, 6)

        let listeners = try XCTUnwrap(doc["listeners"] as? [[String: Any]])
        XCTAssertEqual(listeners.map { $0["name"] as? String }, ["dns", "game-relay"])
        let dns = listeners[0]
        XCTAssertEqual(dns["addresses"] as? [String], ["127.0.0.1:53", "[::1]:53"])
        XCTAssertEqual((dns["sent"] as? [String: Any])?["bytes"] as? Int, 700)
        XCTAssertEqual(dns["receive_errors"] as? Int, 2)
        XCTAssertEqual(dns["drops"] as? [String: Int], ["too_large": 0, "send_buffer_full": 1, "refused": 2, "send_error": 3])
        XCTAssertTrue(dns["sessions"] is NSNull, "echo keeps no sessions: null")
        XCTAssertEqual((dns["upstreams"] as? [Any])?.count, 0)
        // 64-bit counters are written exactly (no float rounding).
        XCTAssertTrue(text.contains("\"packets\": 18446744073709551615"), text)

        let relay = listeners[1]
        XCTAssertEqual(relay["sessions"] as? [String: Int], ["active": 5, "created": 9, "expired": 3, "evicted": 1])
        let ups = try XCTUnwrap(relay["upstreams"] as? [[String: Any]])
        XCTAssertEqual(ups.map { $0["state"] as? String }, ["up", "down"])
        XCTAssertEqual(ups[1]["failures"] as? Int, 4)
        XCTAssertEqual((ups[0]["received"] as? [String: Any])?["packets"] as? Int, 9)
        XCTAssertEqual(ups[0]["counters"] as? [String: Int], ["probes_sent": 7])
        XCTAssertEqual(relay["counters"] as? [String: Int], ["fail_open": 2, "sessions_closed": 0])
        XCTAssertEqual(dns["counters"] as? [String: Int], [:])
    }

    func testNarrowingToOneListener() throws {
        let doc = try parse(StatusJSON.render(Fixtures.snapshot(), server: Fixtures.server, only: "game-relay"))
        XCTAssertEqual((doc["listeners"] as? [[String: Any]])?.map { $0["name"] as? String }, ["game-relay"])
    }

    func testNoReloadIsNullAndStringsAreEscaped() throws {
        var s = Fixtures.snapshot()
        s.config.lastReload = nil
        s.config.path = "/tmp/a \"b\"\\c\n\u{1}.ini"
        let doc = try parse(StatusJSON.render(s, server: ServerCounters()))
        let config = try XCTUnwrap(doc["config"] as? [String: Any])
        XCTAssertTrue(config["last_reload"] is NSNull)
        XCTAssertEqual(config["path"] as? String, "/tmp/a \"b\"\\c\n\u{1}.ini")
    }
}

final class PrometheusTextTests: XCTestCase {
    func testEveryFamilyHasHelpAndTypeAndSamplesAreWellFormed() throws {
        let text = PrometheusText.render(Fixtures.snapshot(), server: Fixtures.server)
        XCTAssertTrue(text.hasSuffix("\n"))
        var typed: [String: String] = [:]
        var helped: Set<String> = []
        let sample = try NSRegularExpression(pattern: #"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\[\\"n])*",?)*\})? (-?[0-9.e+]+|NaN|[+-]Inf)$"#)
        for line in text.split(separator: "\n").map(String.init) {
            if line.hasPrefix("# HELP ") {
                helped.insert(String(line.split(separator: " ")[2]))
            } else if line.hasPrefix("# TYPE ") {
                let parts = line.split(separator: " ")
                XCTAssertNil(typed[String(parts[2])], "TYPE given twice for \(parts[2])")
                typed[String(parts[2])] = String(parts[3])
            } else {
                let range = NSRange(line.startIndex..., in: line)
                let m = try XCTUnwrap(sample.firstMatch(in: line, range: range), "malformed sample line: \(line)")
                let name = (line as NSString).substring(with: m.range(at: 1))
                XCTAssertNotNil(typed[name], "sample before its TYPE: \(line)")
                XCTAssertTrue(helped.contains(name), "no HELP for \(name)")
            }
        }
        for (name, type) in typed where type == "counter" {
            XCTAssertTrue(name.hasSuffix("_total"), "\(name): counters end in _total")
        }
    }

    func testNamesAndValues() {
        let text = PrometheusText.render(Fixtures.snapshot(), server: Fixtures.server)
        for line in [
            "udprelayd_build_info{version=\"1.2.3\"} 1",
            "process_start_time_seconds 1795600000.25",
            "udprelayd_config_generation 3",
            "udprelayd_config_last_reload_successful 0",
            "udprelayd_listener_info{listener=\"dns\",mode=\"echo\"} 1",
            "udprelayd_listener_bound{listener=\"dns\",address=\"[::1]:53\"} 1",
            "udprelayd_packets_received_total{listener=\"dns\"} 18446744073709551615",
            "udprelayd_bytes_sent_total{listener=\"dns\"} 700",
            "udprelayd_receive_errors_total{listener=\"dns\"} 2",
            "udprelayd_drops_total{listener=\"dns\",reason=\"send_error\"} 3",
            "udprelayd_drops_total{listener=\"game-relay\",reason=\"too_large\"} 0",
            "udprelayd_sessions_active{listener=\"game-relay\"} 5",
            "udprelayd_sessions_evicted_total{listener=\"game-relay\"} 1",
            "udprelayd_upstream_up{listener=\"game-relay\",upstream=\"10.0.0.1:27015\"} 1",
            "udprelayd_upstream_up{listener=\"game-relay\",upstream=\"10.0.0.2:27015\"} 0",
            "udprelayd_upstream_failures_total{listener=\"game-relay\",upstream=\"10.0.0.2:27015\"} 4",
            "udprelayd_status_connections_rejected_total{reason=\"not_allowed\"} 3",
            "udprelayd_status_accept_errors_total 6",
            "udprelayd_events_total{listener=\"game-relay\",event=\"fail_open\"} 2",
            "udprelayd_upstream_events_total{listener=\"game-relay\",upstream=\"10.0.0.1:27015\",event=\"probes_sent\"} 7",
        ] {
            XCTAssertTrue(text.contains("\n" + line + "\n"), "missing line: \(line)")
        }
        XCTAssertFalse(text.contains("udprelayd_sessions_active{listener=\"dns\"}"), "echo listeners have no session samples")
    }

    func testLabelValuesAreEscaped() {
        var s = Fixtures.snapshot()
        s.daemon.version = "a\"b\\c\nd"
        // The configuration allows only [A-Za-z0-9_-] in listener names; the renderer escapes anyway.
        s.listeners[1].name = "x\"y\\z\n"
        let text = PrometheusText.render(s, server: ServerCounters())
        XCTAssertTrue(text.contains(#"udprelayd_build_info{version="a\"b\\c\nd"} 1"#))
        XCTAssertTrue(text.contains(#"udprelayd_worker_packets_sent_total{listener="x\"y\\z\n",address="0.0.0.0:27015",worker="1"} 0"#), text)
    }

    func testPerWorkerFamiliesExactly() throws {
        let text = PrometheusText.render(Fixtures.snapshot(), server: Fixtures.server)
        // Every socket of every listener, in `workers` order; `worker` counts from 1 per address.
        let block = """
        # HELP udprelayd_worker_packets_received_total Datagrams received by one socket's worker.
        # TYPE udprelayd_worker_packets_received_total counter
        udprelayd_worker_packets_received_total{listener="dns",address="127.0.0.1:53",worker="1"} 60
        udprelayd_worker_packets_received_total{listener="dns",address="127.0.0.1:53",worker="2"} 40
        udprelayd_worker_packets_received_total{listener="dns",address="[::1]:53",worker="1"} 0
        udprelayd_worker_packets_received_total{listener="dns",address="[::1]:53",worker="2"} 18446744073709551515
        udprelayd_worker_packets_received_total{listener="game-relay",address="0.0.0.0:27015",worker="1"} 0
        # HELP udprelayd_worker_bytes_received_total Payload bytes received by one socket's worker.
        # TYPE udprelayd_worker_bytes_received_total counter
        udprelayd_worker_bytes_received_total{listener="dns",address="127.0.0.1:53",worker="1"} 6000
        udprelayd_worker_bytes_received_total{listener="dns",address="127.0.0.1:53",worker="2"} 4000
        udprelayd_worker_bytes_received_total{listener="dns",address="[::1]:53",worker="1"} 0
        udprelayd_worker_bytes_received_total{listener="dns",address="[::1]:53",worker="2"} 990000
        udprelayd_worker_bytes_received_total{listener="game-relay",address="0.0.0.0:27015",worker="1"} 0
        # HELP udprelayd_worker_packets_sent_total Datagrams sent by one socket's worker.
        # TYPE udprelayd_worker_packets_sent_total counter
        udprelayd_worker_packets_sent_total{listener="dns",address="127.0.0.1:53",worker="1"} 4
        udprelayd_worker_packets_sent_total{listener="dns",address="127.0.0.1:53",worker="2"} 3
        udprelayd_worker_packets_sent_total{listener="dns",address="[::1]:53",worker="1"} 0
        udprelayd_worker_packets_sent_total{listener="dns",address="[::1]:53",worker="2"} 0
        udprelayd_worker_packets_sent_total{listener="game-relay",address="0.0.0.0:27015",worker="1"} 0
        # HELP udprelayd_worker_bytes_sent_total Payload bytes sent by one socket's worker.
        # TYPE udprelayd_worker_bytes_sent_total counter
        udprelayd_worker_bytes_sent_total{listener="dns",address="127.0.0.1:53",worker="1"} 400
        udprelayd_worker_bytes_sent_total{listener="dns",address="127.0.0.1:53",worker="2"} 300
        udprelayd_worker_bytes_sent_total{listener="dns",address="[::1]:53",worker="1"} 0
        udprelayd_worker_bytes_sent_total{listener="dns",address="[::1]:53",worker="2"} 0
        udprelayd_worker_bytes_sent_total{listener="game-relay",address="0.0.0.0:27015",worker="1"} 0

        """
        XCTAssertTrue(text.contains("\n" + block), text)
        // Between the listener's session families and the upstream families.
        let sessions = try XCTUnwrap(text.range(of: "# HELP udprelayd_sessions_evicted_total"))
        let workers = try XCTUnwrap(text.range(of: "# HELP udprelayd_worker_packets_received_total"))
        let upstreams = try XCTUnwrap(text.range(of: "# HELP udprelayd_upstream_up"))
        XCTAssertTrue(sessions.lowerBound < workers.lowerBound && workers.lowerBound < upstreams.lowerBound)

        // The families stay, without samples, when no listener has a socket.
        var empty = Fixtures.snapshot()
        empty.listeners = []
        let bare = PrometheusText.render(empty, server: ServerCounters())
        XCTAssertTrue(bare.contains("# TYPE udprelayd_worker_packets_received_total counter\n# HELP udprelayd_worker_bytes_received_total"), bare)
    }
}

final class StatusPageTests: XCTestCase {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// A page as wide as a busy daemon makes it: 13-digit counters (a year at 300,000
    /// datagrams/s), every drop reason and session counter non-zero, rates everywhere, long
    /// addresses and names, a failed reload, problems, upstreams down.
    static func worstCasePage() -> String {
        var s = Fixtures.snapshot()
        let big: UInt64 = 9_876_543_210_987
        for i in s.listeners.indices {
            s.listeners[i].received = Traffic(packets: big, bytes: big)
            s.listeners[i].sent = Traffic(packets: big, bytes: big)
            s.listeners[i].receiveErrors = big
            s.listeners[i].drops = Fixtures.drops.map { DropCount(reason: $0, count: big) }
            s.listeners[i].addresses.append("[2001:db8:ffff:ffff:ffff:ffff:ffff:ffff]:65535")
            if s.listeners[i].sessions != nil {
                s.listeners[i].sessions = SessionCounters(active: big, created: big, expired: big, evicted: big)
                s.listeners[i].counters = ["sessions_closed", "sessions_failed", "session_errors", "fail_open", "sampled_out",
                                           "replies_ignored", "rate_limit_evictions"].map { NamedCounter($0, big) }
            }
        }
        s.listeners[1].name = "a-listener-with-a-long-name-0123456789"
        var rates: [String: ListenerRates] = [:]
        for l in s.listeners {
            rates[l.name] = ListenerRates(receivedPackets: 987_654_321, receivedBytes: 9.87e12, sentPackets: 987_654_321,
                                          sentBytes: 9.87e12, drops: 123_456, window: 10)
        }
        var server = Fixtures.server
        server.acceptErrors = big
        return StatusPage.render(s, server: server, rates: rates,
                                 problems: ["listener 'a-listener-with-a-long-name-0123456789': 1 of 3 addresses bound",
                                            "queue for [2001:db8:ffff:ffff:ffff:ffff:ffff:ffff]:65535 did not answer within 1 s"])
    }

    /// Issue 12 item 13: no horizontal overflow at 1920, 1400, 1024 and 400 px, in headless
    /// Chromium (status_e2e.py --fit-page measures scrollWidth against innerWidth and takes a
    /// screenshot at each width into .build/status-page-widths/).
    func testPageFitsEveryWidthInChromium() throws {
        let dir = Self.repository.appendingPathComponent(".build/status-page-widths")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let page = dir.appendingPathComponent("worst-case.html")
        try Self.worstCasePage().write(to: page, atomically: true, encoding: .utf8)
        let python = Process()
        python.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        python.arguments = [Self.repository.appendingPathComponent("Tests/EndToEndTests/status_e2e.py").path,
                            "--fit-page", page.path, "--screenshot-dir", dir.path]
        let output = Pipe()
        python.standardOutput = output
        python.standardError = output
        python.standardInput = FileHandle.nullDevice
        try python.run()
        let watchdog = DispatchWorkItem { [pid = python.processIdentifier] in kill(pid, SIGKILL) }
        DispatchQueue.global().asyncAfter(deadline: .now() + 240, execute: watchdog)
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        python.waitUntilExit()
        watchdog.cancel()
        XCTAssertEqual(python.terminationStatus, 0, text)
        for width in [1920, 1400, 1024, 400] {
            XCTAssertTrue(text.contains("\(width) px: page "), text)
            XCTAssertTrue(FileManager.default.fileExists(atPath: dir.appendingPathComponent("page-\(width).png").path))
        }
    }

    func testPageShowsEveryListenerHealthAndReloadAndIsSelfContained() {
        let s = Fixtures.snapshot()
        let rates = ["dns": ListenerRates(receivedPackets: 1234, receivedBytes: 2_000_000, sentPackets: 0, sentBytes: 0, drops: 5, window: 10)]
        let html = StatusPage.render(s, server: Fixtures.server, rates: rates, problems: ["listener 'dns' queue did not answer <1s>"])
        for name in ["dns", "game-relay", "127.0.0.1:53", "[::1]:53", "10.0.0.1:27015", "10.0.0.2:27015"] {
            XCTAssertTrue(html.contains(name), "page lacks \(name)")
        }
        XCTAssertTrue(html.contains("1 PROBLEM"))
        XCTAssertTrue(html.contains("queue did not answer &lt;1s&gt;"), "problems are HTML-escaped")
        XCTAssertTrue(html.contains("FAILED"))
        XCTAssertTrue(html.contains("bad &quot;value&quot;"))
        XCTAssertTrue(html.contains("1.23k"), "packets/s shown")
        XCTAssertTrue(html.contains("1.91 MiB/s"), "bytes/s shown")
        XCTAssertTrue(html.contains("pill ok small\">UP"))
        XCTAssertTrue(html.contains("pill bad small\">DOWN"))
        XCTAssertTrue(html.contains("http-equiv=\"refresh\""))
        XCTAssertFalse(html.contains("src="), "no external assets")
        XCTAssertFalse(html.contains("<link"), "no external assets")
        XCTAssertFalse(html.contains("<script"))
    }

    func testPageSplitsListenersWithSeveralWorkersPerAddress() throws {
        var s = Fixtures.snapshot()
        s.listeners[0].received = Traffic(packets: 200, bytes: 20_000)
        s.listeners[0].workers[3].received = Traffic(packets: 100, bytes: 10_000)
        let html = StatusPage.render(s, server: ServerCounters(), rates: [:], problems: [])
        let rows = html.split(separator: "\n").filter { $0.hasPrefix("<tr class=\"worker\">") }.map(String.init)
        XCTAssertEqual(rows.count, 4, "one row per socket of dns, none for game-relay's single worker")
        XCTAssertTrue(rows[0].contains("worker 1 of 2") && rows[0].contains("<code>127.0.0.1:53</code>"), rows[0])
        XCTAssertTrue(rows[0].contains("30.0% of datagrams in") && rows[0].contains("style=\"width:30.0%\""), rows[0])
        XCTAssertTrue(rows[0].contains("<td data-label=\"Received\">60 pkt<br><span class=\"sub\">5.86 KiB</span></td><td data-label=\"Sent\">4 pkt<br>"), rows[0])
        XCTAssertTrue(rows[1].contains("worker 2 of 2") && rows[1].contains("20.0% of datagrams in"), rows[1])
        XCTAssertTrue(rows[2].contains("worker 1 of 2") && rows[2].contains("<code>[::1]:53</code>") && rows[2].contains("0.0% of"), rows[2])
        XCTAssertTrue(rows[3].contains("50.0% of datagrams in"), rows[3])
        let dnsRow = try XCTUnwrap(html.range(of: "id=\"listener-dns\"")), relayRow = try XCTUnwrap(html.range(of: "id=\"listener-game-relay\""))
        let first = try XCTUnwrap(html.range(of: rows[0])), last = try XCTUnwrap(html.range(of: rows[3]))
        XCTAssertTrue(dnsRow.lowerBound < first.lowerBound && last.lowerBound < relayRow.lowerBound,
                      "worker rows follow their listener's row")

        s.listeners[0].received = Traffic()
        let idle = StatusPage.render(s, server: ServerCounters(), rates: [:], problems: [])
        XCTAssertTrue(idle.contains("<td data-label=\"\" colspan=\"4\" class=\"muted\">no datagrams yet</td>"))

        s.listeners[0].workers = [WorkerStatus(address: "127.0.0.1:53"), WorkerStatus(address: "[::1]:53")]
        XCTAssertFalse(StatusPage.render(s, server: ServerCounters(), rates: [:], problems: []).contains("class=\"worker\""),
                       "one socket per address: no split")
    }

    func testHealthyPage() {
        let html = StatusPage.render(Fixtures.snapshot(), server: ServerCounters(), rates: [:], problems: [])
        XCTAssertTrue(html.contains(">HEALTHY<"))
        XCTAssertTrue(html.contains("Rates appear after"))
    }
}

final class FormatTests: XCTestCase {
    func testDatesAndNumbers() {
        XCTAssertEqual(Format.rfc3339(0), "1970-01-01T00:00:00.000Z")
        XCTAssertEqual(Format.rfc3339(1_795_635_285.2026), "2026-11-25T19:34:45.202Z")
        XCTAssertEqual(Format.httpDate(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT")
        XCTAssertEqual(Format.fixed(3.14159, 2), "3.14")
        XCTAssertEqual(Format.fixed(-0.5, 1), "-0.5")
        XCTAssertEqual(Format.si(950), "950")
        XCTAssertEqual(Format.si(12_345), "12.3k")
        XCTAssertEqual(Format.si(4_560_000), "4.56M")
        XCTAssertEqual(Format.bytes(512), "512 B")
        XCTAssertEqual(Format.bytes(1536), "1.50 KiB")
        XCTAssertEqual(Format.grouped(1_234_567), "1\u{202F}234\u{202F}567")
        XCTAssertEqual(Format.duration(3725), "1h 02m")
        XCTAssertEqual(Format.number(1795600000.25), "1795600000.25")
        XCTAssertEqual(Format.number(3), "3")
    }

    func testQueryDecoding() throws {
        let (path, query) = try XCTUnwrap(RequestTarget.split("/status?listener=game%2Drelay&x"))
        XCTAssertEqual(path, "/status")
        XCTAssertEqual(query.map { "\($0.0)=\($0.1)" }, ["listener=game-relay", "x="])
        XCTAssertEqual(RequestTarget.split("http://example/metrics")?.0, "/metrics")
        XCTAssertNil(RequestTarget.split("*"))
        XCTAssertNil(RequestTarget.split("/status?listener=%zz"))
    }
}

final class RateHistoryTests: XCTestCase {
    func listener(_ packets: UInt64) -> ListenerStatus {
        ListenerStatus(name: "a", mode: "echo", addresses: [], received: Traffic(packets: packets, bytes: packets * 100),
                       sent: Traffic(packets: packets, bytes: packets * 100), drops: [DropCount(reason: "too_large", count: packets / 10)])
    }

    func testRatesOverTheWindowFromTheOldestSampleInIt() throws {
        let h = RateHistory(window: 10)
        XCTAssertNil(h.rates(of: listener(0), now: 100), "no history yet")
        for t in 0...30 { h.record([listener(UInt64(t) * 1000)], at: Double(t)) }
        XCTAssertLessThanOrEqual(h.count, 12, "the ring stays small")
        // At t=30.2 the oldest sample within 10.5 s is t=20 (20 000 packets).
        let r = try XCTUnwrap(h.rates(of: listener(30_200), now: 30.2))
        XCTAssertEqual(r.window, 10.2, accuracy: 1e-9)
        XCTAssertEqual(r.receivedPackets, 10_200 / 10.2, accuracy: 1e-6)
        XCTAssertEqual(r.sentBytes, 1_020_000 / 10.2, accuracy: 1e-6)
        XCTAssertEqual(r.drops, 1020 / 10.2, accuracy: 1e-6)
    }

    func testCountersThatWentBackwardsGiveZeroNotNegative() throws {
        let h = RateHistory()
        h.record([listener(5000)], at: 0)
        XCTAssertEqual(try XCTUnwrap(h.rates(of: listener(10), now: 1)).receivedPackets, 0)
    }
}

final class RoutesTests: XCTestCase {
    func routes(health: [String] = []) -> StatusRoutes {
        StatusRoutes(source: FixedSource(value: Fixtures.snapshot(), health: health), history: RateHistory(),
                     counters: { ServerCounters() }, monotonicNow: { 0 })
    }

    func testEndpointsAndErrors() async {
        let r = routes()
        let health = await r.respond(method: .GET, uri: "/healthz")
        XCTAssertEqual(health.status, .ok)
        XCTAssertEqual(health.body, "ok\n")
        let status = await r.respond(method: .GET, uri: "/status")
        XCTAssertEqual(status.contentType, "application/json")
        let metrics = await r.respond(method: .HEAD, uri: "/metrics")
        XCTAssertEqual(metrics.contentType, "text/plain; version=0.0.4; charset=utf-8")
        let page = await r.respond(method: .GET, uri: "/")
        XCTAssertEqual(page.contentType, "text/html; charset=utf-8")

        let missing = await r.respond(method: .GET, uri: "/nope")
        XCTAssertEqual(missing.status, .notFound)
        let post = await r.respond(method: .POST, uri: "/status")
        XCTAssertEqual(post.status, .methodNotAllowed)
        XCTAssertEqual(post.headers.first { $0.0 == "Allow" }?.1, "GET, HEAD")
        XCTAssertTrue(post.close)
        let bad = await r.respond(method: .GET, uri: "status")
        XCTAssertEqual(bad.status, .badRequest)
        let unknownListener = await r.respond(method: .GET, uri: "/status?listener=nope")
        XCTAssertEqual(unknownListener.status, .notFound)
        XCTAssertTrue(unknownListener.body.contains("dns, game-relay"))
    }

    func testUnhealthyIs503WithOneLinePerProblem() async {
        let r = await routes(health: ["listener 'a': queue stuck", "listener 'b': 0 of 1 addresses bound"]).respond(method: .GET, uri: "/healthz")
        XCTAssertEqual(r.status, .serviceUnavailable)
        XCTAssertEqual(r.body, "listener 'a': queue stuck\nlistener 'b': 0 of 1 addresses bound\n")
    }
}

final class AllowListTests: XCTestCase {
    func testMatchesNetworksAndIPv4MappedPeers() throws {
        let allow = AllowList([try CIDR(parsing: "10.0.0.0/8"), try CIDR(parsing: "2001:db8::/32"), try CIDR(parsing: "::1")])
        XCTAssertTrue(allow.allows(IPAddress(literal: "10.1.2.3")!))
        XCTAssertTrue(allow.allows(IPAddress(literal: "::ffff:10.1.2.3")!), "IPv4 peers of a dual-stack socket")
        XCTAssertTrue(allow.allows(IPAddress(literal: "2001:db8::5")!))
        XCTAssertTrue(allow.allows(IPAddress(literal: "::1")!))
        XCTAssertFalse(allow.allows(IPAddress(literal: "127.0.0.1")!))
        XCTAssertFalse(allow.allows(IPAddress(literal: "::ffff:11.0.0.1")!))
        XCTAssertFalse(AllowList([]).allows(IPAddress(literal: "10.0.0.1")!))
    }
}
