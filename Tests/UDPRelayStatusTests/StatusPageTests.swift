import Foundation
import NIOHTTP1
import XCTest
import UDPRelayConfig
@testable import UDPRelayStatus

final class StatusPageTests: XCTestCase {
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
        XCTAssertTrue(rows[0].contains("<td>60 pkt<br><span class=\"sub\">5.86 KiB</span></td><td>4 pkt<br>"), rows[0])
        XCTAssertTrue(rows[1].contains("worker 2 of 2") && rows[1].contains("20.0% of datagrams in"), rows[1])
        XCTAssertTrue(rows[2].contains("worker 1 of 2") && rows[2].contains("<code>[::1]:53</code>") && rows[2].contains("0.0% of"), rows[2])
        XCTAssertTrue(rows[3].contains("50.0% of datagrams in"), rows[3])
        let dnsRow = try XCTUnwrap(html.range(of: "id=\"listener-dns\"")), relayRow = try XCTUnwrap(html.range(of: "id=\"listener-game-relay\""))
        let first = try XCTUnwrap(html.range(of: rows[0])), last = try XCTUnwrap(html.range(of: rows[3]))
        XCTAssertTrue(dnsRow.lowerBound < first.lowerBound && last.lowerBound < relayRow.lowerBound,
                      "worker rows follow their listener's row")

        s.listeners[0].received = Traffic()
        let idle = StatusPage.render(s, server: ServerCounters(), rates: [:], problems: [])
        XCTAssertTrue(idle.contains("<td colspan=\"4\" class=\"muted\">no datagrams yet</td>"))

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
