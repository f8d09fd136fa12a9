import Foundation
import NIOHTTP1
import UDPRelayConfig
import XCTest

@testable import UDPRelayStatus

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
