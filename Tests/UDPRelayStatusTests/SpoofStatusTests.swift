import Foundation
import UDPRelayConfig
import XCTest

@testable import UDPRelayStatus

/// Whether a listener spoofs (`spoof = yes`), as `/status`, `/metrics` and `/` show it.
final class SpoofStatusTests: XCTestCase {
    /// The fixture with its relay listener (the second) spoofing (the status renders what it is given).
    static func snapshot() -> StatusSnapshot {
        var s = Fixtures.snapshot()
        s.listeners[1].spoof = true
        return s
    }

    func testStatusJSONSaysTrueOrFalsePerListener() throws {
        let text = StatusJSON.render(Self.snapshot(), server: Fixtures.server)
        let doc = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
        let listeners = try XCTUnwrap(doc["listeners"] as? [[String: Any]])
        XCTAssertEqual(listeners.map { $0["spoof"] as? Bool }, [false, true])
    }

    func testMetricsHaveAGaugePerListener() {
        let text = PrometheusText.render(Self.snapshot(), server: Fixtures.server)
        let s = Self.snapshot()
        for line in [
            "# TYPE udprelayd_listener_spoof gauge",
            "udprelayd_listener_spoof{listener=\"\(s.listeners[0].name)\"} 0",
            "udprelayd_listener_spoof{listener=\"\(s.listeners[1].name)\"} 1",
        ] {
            XCTAssertTrue(text.contains(line + "\n"), "missing: \(line)")
        }
    }

    func testPageMarksOnlyTheSpoofingListener() {
        let page = StatusPage.render(Self.snapshot(), server: Fixtures.server, rates: [:], problems: [])
        let rows = page.components(separatedBy: "<tr class=\"listener\"").dropFirst().map { $0.components(separatedBy: "</tr>")[0] }
        XCTAssertEqual(rows.count, 2)
        XCTAssertEqual(rows.map { $0.contains(">spoof</span>") }, [false, true])
    }
}
