import Foundation
import UDPRelayConfig
import XCTest

@testable import UDPRelayStatus

/// Whether a listener takes PROXY v2 headers off datagrams from its proxies
/// (`accept_proxy_protocol`), as `/status`, `/metrics` and `/` show it, apart from whether it
/// sends them (`proxy_protocol`).
final class AcceptProxyProtocolStatusTests: XCTestCase {
    /// The fixture with its first listener accepting PROXY v2 headers and its second sending them.
    static func snapshot() -> StatusSnapshot {
        var s = Fixtures.snapshot()
        s.listeners[0].acceptProxyProtocol = "v2"
        s.listeners[1].proxyProtocol = "v2"
        return s
    }

    func testStatusJSONSaysV2OrOffPerListener() throws {
        let text = StatusJSON.render(Self.snapshot(), server: Fixtures.server)
        let doc = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
        let listeners = try XCTUnwrap(doc["listeners"] as? [[String: Any]])
        XCTAssertEqual(listeners.map { $0["accept_proxy_protocol"] as? String }, ["v2", "off"])
    }

    func testMetricsHaveTheVersionPerListener() {
        let text = PrometheusText.render(Self.snapshot(), server: Fixtures.server)
        let s = Self.snapshot()
        for line in [
            "# TYPE udprelayd_listener_accept_proxy_protocol gauge",
            "udprelayd_listener_accept_proxy_protocol{listener=\"\(s.listeners[0].name)\"} 2",
            "udprelayd_listener_accept_proxy_protocol{listener=\"\(s.listeners[1].name)\"} 0",
        ] {
            XCTAssertTrue(text.contains(line + "\n"), "missing: \(line)")
        }
    }

    func testPageMarksOnlyTheListenerThatAcceptsHeaders() {
        let page = StatusPage.render(Self.snapshot(), server: Fixtures.server, rates: [:], problems: [])
        let rows = page.components(separatedBy: "<tr class=\"listener\"").dropFirst().map { $0.components(separatedBy: "</tr>")[0] }
        XCTAssertEqual(rows.count, 2)
        XCTAssertEqual(rows.map { $0.contains("accepts PROXY (v2)") }, [true, false])
        XCTAssertEqual(rows.map { $0.contains("PROXY v2") }, [false, true], "sending and accepting are told apart")
    }
}
