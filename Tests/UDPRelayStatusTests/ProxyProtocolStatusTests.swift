import Foundation
import UDPRelayConfig
import XCTest

@testable import UDPRelayStatus

/// Whether a listener sends PROXY v2 headers, as `/status`, `/metrics` and `/` show it.
final class ProxyProtocolStatusTests: XCTestCase {
    /// The fixture with its relay listener (the second) sending PROXY v2 headers.
    static func snapshot() -> StatusSnapshot {
        var s = Fixtures.snapshot()
        s.listeners[1].proxyProtocol = "v2"
        return s
    }

    func testStatusJSONSaysV2OrOffPerListener() throws {
        let text = StatusJSON.render(Self.snapshot(), server: Fixtures.server)
        let doc = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
        let listeners = try XCTUnwrap(doc["listeners"] as? [[String: Any]])
        XCTAssertEqual(listeners.map { $0["proxy_protocol"] as? String }, ["off", "v2"])
    }

    func testMetricsHaveTheVersionPerListener() {
        let text = PrometheusText.render(Self.snapshot(), server: Fixtures.server)
        let s = Self.snapshot()
        for line in [
            "# TYPE udprelayd_listener_proxy_protocol gauge",
            "udprelayd_listener_proxy_protocol{listener=\"\(s.listeners[0].name)\"} 0",
            "udprelayd_listener_proxy_protocol{listener=\"\(s.listeners[1].name)\"} 2",
        ] {
            XCTAssertTrue(text.contains(line + "\n"), "missing: \(line)")
        }
    }

    func testPageMarksOnlyTheListenerThatSendsHeaders() {
        let page = StatusPage.render(Self.snapshot(), server: Fixtures.server, rates: [:], problems: [])
        let rows = page.components(separatedBy: "<tr class=\"listener\"").dropFirst().map { $0.components(separatedBy: "</tr>")[0] }
        XCTAssertEqual(rows.count, 2)
        XCTAssertEqual(rows.map { $0.contains("PROXY v2") }, [false, true])
    }
}
