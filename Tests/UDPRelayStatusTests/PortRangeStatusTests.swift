import UDPRelayConfig
import XCTest

@testable import UDPRelayStatus

/// A listener with a port range of 100 addresses: the page shows the range on one line and
/// keeps its worker rows few; `/status` and `/metrics` still list every address.
final class PortRangeStatusTests: XCTestCase {
    func testAddressRunsFoldConsecutivePortsOfOneAddress() {
        let range = (5000...5099).map { "0.0.0.0:\($0)" }
        XCTAssertEqual(Format.addressRuns(range), ["0.0.0.0:5000-5099 (100 ports)"])
        XCTAssertEqual(Format.addressRuns(["127.0.0.1:53", "[::1]:53"]), ["127.0.0.1:53", "[::1]:53"])
        XCTAssertEqual(
            Format.addressRuns(["127.0.0.1:7000"] + range + (6000...6009).map { "[::1]:\($0)" } + ["[::1]:6011", "127.0.0.1:5100"]),
            ["127.0.0.1:7000", "0.0.0.0:5000-5099 (100 ports)", "[::1]:6000-6009 (10 ports)", "[::1]:6011", "127.0.0.1:5100"])
        // A gap, a different address or a descending order breaks a run.
        XCTAssertEqual(
            Format.addressRuns(["127.0.0.1:1", "127.0.0.1:2", "127.0.0.2:3", "127.0.0.2:2"]),
            ["127.0.0.1:1-2 (2 ports)", "127.0.0.2:3", "127.0.0.2:2"])
        XCTAssertEqual(Format.addressRuns(["[::1]:65534", "[::1]:65535"]), ["[::1]:65534-65535 (2 ports)"])
    }

    func rangeSnapshot(workers: Int) -> StatusSnapshot {
        var s = Fixtures.snapshot()
        let addresses = (5000...5099).map { "0.0.0.0:\($0)" }
        s.listeners[0].addresses = addresses
        s.listeners[0].configuredAddresses = addresses.count
        s.listeners[0].received = Traffic(packets: 400, bytes: 40_000)
        s.listeners[0].workers = addresses.flatMap { a in
            (1...workers).map { WorkerStatus(address: a, number: $0, of: workers, received: Traffic(packets: $0 == 1 ? 3 : 1, bytes: 10)) }
        }
        return s
    }

    func testPageShowsARangeOnOneLineAndSumsWorkersByNumber() throws {
        let html = StatusPage.render(rangeSnapshot(workers: 2), server: ServerCounters(), rates: [:], problems: [])
        XCTAssertTrue(html.contains("<td data-label=\"Addresses\" class=\"l addr\"><code>0.0.0.0:5000-5099 (100 ports)</code></td>"), html)
        XCTAssertFalse(html.contains("0.0.0.0:5001"))
        XCTAssertFalse(html.contains("UNBOUND"))
        let rows = html.split(separator: "\n").filter { $0.hasPrefix("<tr class=\"worker\">") }.map(String.init)
        XCTAssertEqual(rows.count, 2, "200 sockets: one row per worker number")
        XCTAssertTrue(
            rows[0].contains("worker 1 of 2") && rows[0].contains("<code>on 100 addresses</code>") && rows[0].contains("75.0% of datagrams in"), rows[0])
        XCTAssertTrue(rows[0].contains("300 pkt"), rows[0])
        XCTAssertTrue(rows[1].contains("worker 2 of 2") && rows[1].contains("25.0% of datagrams in"), rows[1])

        // A few sockets keep a row each.
        var few = rangeSnapshot(workers: 2)
        few.listeners[0].workers = Array(few.listeners[0].workers.prefix(StatusPage.workerRowsLimit))
        let fewRows = StatusPage.render(few, server: ServerCounters(), rates: [:], problems: []).split(separator: "\n")
            .filter { $0.hasPrefix("<tr class=\"worker\">") }
        XCTAssertEqual(fewRows.count, StatusPage.workerRowsLimit)
    }

    func testJSONAndMetricsListEveryAddress() throws {
        let s = rangeSnapshot(workers: 1)
        let json = StatusJSON.render(s, server: ServerCounters())
        XCTAssertTrue(json.contains("\"0.0.0.0:5000\"") && json.contains("\"0.0.0.0:5099\""))
        let metrics = PrometheusText.render(s, server: ServerCounters())
        XCTAssertEqual(metrics.split(separator: "\n").filter { $0.hasPrefix("udprelayd_listener_bound{listener=\"dns\"") }.count, 100)
    }
}
