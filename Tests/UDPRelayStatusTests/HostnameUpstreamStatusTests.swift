import Foundation
import UDPRelayConfig
import XCTest

@testable import UDPRelayStatus

/// Each address of an upstream hostname as its own upstream in `/status`, `/metrics` and `/`:
/// labelled with the name and the address, an address gone from the answer as draining.
final class HostnameUpstreamStatusTests: XCTestCase {
    /// The fixture's relay with a hostname of two addresses instead of its second upstream: one
    /// in the answer, one that left it with 4 live sessions.
    static func snapshot() -> StatusSnapshot {
        var s = Fixtures.snapshot()
        let literal = s.listeners[1].upstreams[0]
        s.listeners[1].upstreams = [
            literal,
            UpstreamStatus(
                address: "game.example:27015", state: "up", counters: [NamedCounter("sessions", 0)], sessionsActive: 7,
                resolved: "10.0.0.7:27015"),
            UpstreamStatus(
                address: "game.example:27015", state: "up", draining: true, sessionsActive: 4, resolved: "10.0.0.8:27015", removed: true),
        ]
        return s
    }

    func testStatusJSONLabelsEachAddressWithTheNameAndMatchesTheSchema() throws {
        let text = StatusJSON.render(Self.snapshot(), server: Fixtures.server)
        let doc = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
        let relay = try XCTUnwrap((doc["listeners"] as? [[String: Any]])?[1])
        let ups = try XCTUnwrap(relay["upstreams"] as? [[String: Any]])
        XCTAssertEqual(ups.map { $0["address"] as? String }, ["10.0.0.1:27015", "game.example:27015", "game.example:27015"])
        XCTAssertEqual(ups.map { $0["resolved"] as? String }, [nil, "10.0.0.7:27015", "10.0.0.8:27015"])
        XCTAssertTrue(ups[0]["resolved"] is NSNull, "null for a literal address")
        XCTAssertEqual(ups.map { $0["removed"] as? Bool }, [false, false, true])
        XCTAssertEqual(ups.map { $0["draining"] as? Bool }, [false, false, true])
        XCTAssertEqual(ups.map { $0["sessions_active"] as? Int }, [0, 7, 4])

        let schemaURL = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("docs/status.schema.json")
        let schema = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: schemaURL)) as? [String: Any])
        func find(_ key: String, in value: Any) -> [String: Any]? {
            if let d = value as? [String: Any] {
                if let hit = d[key] as? [String: Any] { return hit }
                for v in d.values { if let hit = find(key, in: v) { return hit } }
            }
            return nil
        }
        let item = try XCTUnwrap(find("upstreams", in: schema)?["items"] as? [String: Any])
        let required = Set(try XCTUnwrap(item["required"] as? [String]))
        let properties = Set(try XCTUnwrap(item["properties"] as? [String: Any]).keys)
        for u in ups {
            XCTAssertEqual(Set(u.keys), required, "every key rendered is required by the schema")
            XCTAssertEqual(Set(u.keys), properties)
        }
    }

    func testMetricsGiveEachAddressASeriesOfItsOwn() {
        let text = PrometheusText.render(Self.snapshot(), server: Fixtures.server)
        for line in [
            "udprelayd_upstream_up{listener=\"game-relay\",upstream=\"10.0.0.1:27015\"} 1",
            "udprelayd_upstream_up{listener=\"game-relay\",upstream=\"game.example:27015\",address=\"10.0.0.7:27015\"} 1",
            "udprelayd_upstream_draining{listener=\"game-relay\",upstream=\"game.example:27015\",address=\"10.0.0.8:27015\"} 1",
            "udprelayd_upstream_sessions_active{listener=\"game-relay\",upstream=\"game.example:27015\",address=\"10.0.0.8:27015\"} 4",
            "udprelayd_upstream_events_total{listener=\"game-relay\",upstream=\"game.example:27015\",address=\"10.0.0.7:27015\",event=\"sessions\"} 0",
        ] {
            XCTAssertTrue(text.contains(line + "\n"), "missing: \(line)\n\(text)")
        }
    }

    func testPageShowsTheNameAndTheAddressAndMarksOneThatLeftTheAnswer() {
        let page = StatusPage.render(Self.snapshot(), server: Fixtures.server, rates: [:], problems: [])
        let rows = page.components(separatedBy: "<tr class=\"upstream\">").dropFirst().map { String($0) }
        XCTAssertEqual(rows.count, 3)
        XCTAssertTrue(rows[1].contains("<code>game.example:27015</code> \u{2192} <code>10.0.0.7:27015</code>"), rows[1])
        XCTAssertFalse(rows[1].contains("DRAINING"), rows[1])
        XCTAssertTrue(rows[2].contains("<code>10.0.0.8:27015</code>"), rows[2])
        XCTAssertTrue(rows[2].contains("DRAINING"), rows[2])
        XCTAssertTrue(rows[2].contains("no longer in the DNS answer"), rows[2])
        XCTAssertTrue(rows[2].contains("<b>4</b> active"), rows[2])
        XCTAssertFalse(rows[0].contains("\u{2192}"), "a literal address is shown once")
    }
}
