import Foundation
import UDPRelayConfig
import XCTest

@testable import UDPRelayStatus

/// A draining upstream and its live sessions, as `/status`, `/metrics` and `/` show them.
final class UpstreamOptionsStatusTests: XCTestCase {
    /// The fixture with its second relay upstream draining, a backup of weight 3 with 12 live
    /// sessions, and 5 live sessions on the first.
    static func snapshot() -> StatusSnapshot {
        var s = Fixtures.snapshot()
        s.listeners[1].upstreams[0].sessionsActive = 5
        s.listeners[1].upstreams[1].draining = true
        s.listeners[1].upstreams[1].backup = true
        s.listeners[1].upstreams[1].weight = 3
        s.listeners[1].upstreams[1].sessionsActive = 12
        return s
    }

    func testStatusJSONHasDrainingBackupWeightAndLiveSessions() throws {
        let text = StatusJSON.render(Self.snapshot(), server: Fixtures.server)
        let doc = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
        let relay = try XCTUnwrap((doc["listeners"] as? [[String: Any]])?[1])
        let ups = try XCTUnwrap(relay["upstreams"] as? [[String: Any]])
        XCTAssertEqual(ups.map { $0["draining"] as? Bool }, [false, true])
        XCTAssertEqual(ups.map { $0["backup"] as? Bool }, [false, true])
        XCTAssertEqual(ups.map { $0["weight"] as? Int }, [1, 3])
        XCTAssertEqual(ups.map { $0["sessions_active"] as? Int }, [5, 12])
        XCTAssertEqual(ups[1]["state"] as? String, "down", "draining is not a health state")
    }

    func testMetricsHaveDrainingAndLiveSessionGauges() {
        let text = PrometheusText.render(Self.snapshot(), server: Fixtures.server)
        for line in [
            "# TYPE udprelayd_upstream_draining gauge",
            "udprelayd_upstream_draining{listener=\"game-relay\",upstream=\"10.0.0.1:27015\"} 0",
            "udprelayd_upstream_draining{listener=\"game-relay\",upstream=\"10.0.0.2:27015\"} 1",
            "# TYPE udprelayd_upstream_sessions_active gauge",
            "udprelayd_upstream_sessions_active{listener=\"game-relay\",upstream=\"10.0.0.1:27015\"} 5",
            "udprelayd_upstream_sessions_active{listener=\"game-relay\",upstream=\"10.0.0.2:27015\"} 12",
        ] {
            XCTAssertTrue(text.contains(line + "\n"), "missing: \(line)")
        }
    }

    func testPageMarksTheDrainingUpstreamAndShowsItsSessions() {
        let page = StatusPage.render(Self.snapshot(), server: Fixtures.server, rates: [:], problems: [])
        let rows = page.components(separatedBy: "<tr class=\"upstream\">").dropFirst()
        XCTAssertEqual(rows.count, 2)
        let first = rows.first!, second = rows.last!
        XCTAssertFalse(first.contains("DRAINING"))
        XCTAssertTrue(first.contains("<b>5</b> active"), first)
        XCTAssertTrue(second.contains("DRAINING"), second)
        XCTAssertTrue(second.contains("backup \u{00B7} weight 3"), second)
        XCTAssertTrue(second.contains("<b>12</b> active"), second)

        // A mirror keeps no sessions: no session count on its upstreams.
        var mirror = Self.snapshot()
        mirror.listeners[1].mode = "mirror"
        mirror.listeners[1].sessions = nil
        let mirrorPage = StatusPage.render(mirror, server: Fixtures.server, rates: [:], problems: [])
        XCTAssertFalse(mirrorPage.components(separatedBy: "<tr class=\"upstream\">").dropFirst().contains { $0.contains("active") })
    }
}
