import Foundation
import TestSupport
import UDPRelayConfig
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// How upstream health shows to an operator: `/status`, the `/` page and the log.
final class UpstreamHealthEndToEndTests: XCTestCase {
    func upstreams(_ status: SocketAddress) throws -> [[String: Any]] {
        try XCTUnwrap(try listenerStatus(status, "lb")["upstreams"] as? [[String: Any]])
    }

    /// An upstream marked down by its probe showed `failures` 0 and "no
    /// failures" next to its DOWN badge.
    func testProbeDownUpstreamShowsItsFailuresAndWhy() throws {
        let silent = try UpstreamServer(reply: nil)
        addTeardownBlock { silent.stop() }
        let (daemon, _, status) = try startDaemonWithStatus(
            """
            [listener lb]
            listen = 127.0.0.1:0
            mode = forward
            health_probe = ping
            health_interval = 50ms
            upstream = \(silent.address)
            """)
        XCTAssertNotNil(daemon.waitForLine(containing: "upstream down", timeout: 10), daemon.log.joined(separator: "\n"))
        let u = try XCTUnwrap(try upstreams(status).first)
        XCTAssertEqual(u["state"] as? String, "down")
        XCTAssertGreaterThanOrEqual(u["failures"] as? Int ?? 0, 1, "unanswered probes are failures: \(u)")
        XCTAssertEqual(u["last_error"] as? String, "health probe not answered within 0.05 seconds", "\(u)")
        let counters = try XCTUnwrap(u["counters"] as? [String: Int])
        XCTAssertGreaterThanOrEqual(counters["probes_sent"] ?? 0, 1)
        XCTAssertEqual(counters["probes_answered"], 0)

        let page = try httpBody("/", from: status)
        XCTAssertTrue(page.contains("last error: health probe not answered within 0.05 seconds"), page)
        XCTAssertTrue(page.contains(" failures</span>"), "the failures are on the page")
        XCTAssertFalse(page.contains("no failures"), "a down upstream does not say 'no failures'")
        XCTAssertTrue(page.range(of: #"probes 0 of [0-9,]+ answered"#, options: .regularExpression) != nil, page)

        let metrics = try httpBody("/metrics", from: status)
        let line = try XCTUnwrap(metrics.split(separator: "\n").first { $0.hasPrefix("udprelayd_upstream_failures_total{") })
        XCTAssertNotEqual(line.split(separator: " ").last, "0", String(line))
    }
}

extension UpstreamHealthEndToEndTests {
    /// Coming back from a passive mark-down was never logged.
    func testPassiveMarkDownAndItsEndAreLoggedOnceEach() throws {
        let refusing = try closedLoopbackPort()
        let d = try DaemonProcess(
            config: """
                [status]
                listen = off
                [listener lb]
                listen = 127.0.0.1:0
                mode = forward
                max_fails = 1
                fail_timeout = 300ms
                upstream = \(refusing)
                """)
        addTeardownBlock { d.stop() }
        let relay = try XCTUnwrap(try d.waitUntilReady()["lb"]?.first)
        let client = try UDPClient()
        client.send([1], to: relay)  // refused: ICMP port unreachable marks the upstream down
        let down = try XCTUnwrap(d.waitForLine(containing: "upstream down", timeout: 10), d.log.joined(separator: "\n"))
        XCTAssertTrue(down.contains("upstream=\(refusing)"), down)
        let mark = try XCTUnwrap(d.log.firstIndex(of: down))
        let up = try XCTUnwrap(
            d.waitForLine(containing: "upstream up", after: mark, timeout: 10),
            "the end of the mark-down is logged: \(d.log.joined(separator: "\n"))")
        XCTAssertTrue(up.contains("upstream=\(refusing)") && up.contains("fail_timeout"), up)
        XCTAssertEqual(d.stop(), 0)
        XCTAssertEqual(d.log.filter { $0.contains("upstream down") }.count, 1, "logged once")
        XCTAssertEqual(d.log.filter { $0.contains("upstream up") }.count, 1, "logged once")
    }
}
