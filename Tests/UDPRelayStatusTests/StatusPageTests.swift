import Foundation
import NIOHTTP1
import TestSupport
import UDPRelayConfig
import XCTest

@testable import UDPRelayStatus

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
                s.listeners[i].counters = [
                    "sessions_closed", "sessions_failed", "session_errors", "fail_open", "sampled_out",
                    "replies_ignored", "rate_limit_evictions",
                ].map { NamedCounter($0, big) }
            }
        }
        s.listeners[1].name = "a-listener-with-a-long-name-0123456789"
        var rates: [String: ListenerRates] = [:]
        for l in s.listeners {
            rates[l.name] = ListenerRates(
                receivedPackets: 987_654_321, receivedBytes: 9.87e12, sentPackets: 987_654_321,
                sentBytes: 9.87e12, drops: 123_456, window: 10)
        }
        var server = Fixtures.server
        server.acceptErrors = big
        return StatusPage.render(
            s, server: server, rates: rates,
            problems: [
                "listener 'a-listener-with-a-long-name-0123456789': 1 of 3 addresses bound",
                "queue for [2001:db8:ffff:ffff:ffff:ffff:ffff:ffff]:65535 did not answer within 1 s",
            ])
    }

    /// Issue 12 item 13: no horizontal overflow at 1920, 1400, 1024 and 400 px, in headless
    /// Chromium (status_e2e.py --fit-page measures scrollWidth against innerWidth and takes a
    /// screenshot at each width into .build/status-page-widths/).
    func testPageFitsEveryWidthInChromium() throws {
        let dir = Self.repository.appendingPathComponent(".build/status-page-widths")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let page = dir.appendingPathComponent("worst-case.html")
        try Self.worstCasePage().write(to: page, atomically: true, encoding: .utf8)
        let (status, text) = try runCommand([
            "/usr/bin/python3", Self.repository.appendingPathComponent("Tests/EndToEndTests/status_e2e.py").path,
            "--fit-page", page.path, "--screenshot-dir", dir.path,
        ])
        XCTAssertEqual(status, 0, text)
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
        XCTAssertTrue(
            rows[0].contains("<td data-label=\"Received\">60 pkt<br><span class=\"sub\">5.86 KiB</span></td><td data-label=\"Sent\">4 pkt<br>"), rows[0])
        XCTAssertTrue(rows[1].contains("worker 2 of 2") && rows[1].contains("20.0% of datagrams in"), rows[1])
        XCTAssertTrue(rows[2].contains("worker 1 of 2") && rows[2].contains("<code>[::1]:53</code>") && rows[2].contains("0.0% of"), rows[2])
        XCTAssertTrue(rows[3].contains("50.0% of datagrams in"), rows[3])
        let dnsRow = try XCTUnwrap(html.range(of: "id=\"listener-dns\"")), relayRow = try XCTUnwrap(html.range(of: "id=\"listener-game-relay\""))
        let first = try XCTUnwrap(html.range(of: rows[0])), last = try XCTUnwrap(html.range(of: rows[3]))
        XCTAssertTrue(
            dnsRow.lowerBound < first.lowerBound && last.lowerBound < relayRow.lowerBound,
            "worker rows follow their listener's row")

        s.listeners[0].received = Traffic()
        let idle = StatusPage.render(s, server: ServerCounters(), rates: [:], problems: [])
        XCTAssertTrue(idle.contains("<td data-label=\"\" colspan=\"4\" class=\"muted\">no datagrams yet</td>"))

        s.listeners[0].workers = [WorkerStatus(address: "127.0.0.1:53"), WorkerStatus(address: "[::1]:53")]
        XCTAssertFalse(
            StatusPage.render(s, server: ServerCounters(), rates: [:], problems: []).contains("class=\"worker\""),
            "one socket per address: no split")
    }

    func testHealthyPage() {
        let html = StatusPage.render(Fixtures.snapshot(), server: ServerCounters(), rates: [:], problems: [])
        XCTAssertTrue(html.contains(">HEALTHY<"))
        XCTAssertTrue(html.contains("Rates appear after"))
    }
}
