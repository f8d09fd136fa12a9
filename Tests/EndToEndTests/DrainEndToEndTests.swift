import Foundation
import TestSupport
import UDPRelayConfig
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// `drain` as the operator sees it: after a reload that adds it, `/status` and `/metrics` of the
/// real binary show the upstream as draining.
final class DrainEndToEndTests: XCTestCase {
    func testAReloadThatAddsDrainShowsTheUpstreamAsDraining() throws {
        let listener = { (options: String) in
            "[listener lb]\nlisten = 127.0.0.1:0\nmode = balance\nupstream = 127.0.0.1:9, 127.0.0.2:9\(options)\n"
        }
        let (d, _, status) = try startDaemonWithStatus(listener(""))
        func drainingFlags() throws -> [Bool?] {
            let ups = try XCTUnwrap(try listenerStatus(status, "lb")["upstreams"] as? [[String: Any]])
            return ups.map { $0["draining"] as? Bool }
        }
        XCTAssertEqual(try drainingFlags(), [false, false])

        try ("[status]\nlisten = 127.0.0.1:0\n" + listener(" drain")).write(toFile: d.configPath, atomically: true, encoding: .utf8)
        let before = d.log.count
        d.signal(SIGHUP)
        let outcome = d.waitForLine(after: before) { $0.contains("reload rejected") || $0.contains(" reloaded generation=") }
        XCTAssertTrue(outcome?.contains(" reloaded generation=") ?? false, d.log.joined(separator: "\n"))

        XCTAssertEqual(try drainingFlags(), [false, true])
        let metrics = try httpBody("/metrics", from: status)
        XCTAssertTrue(metrics.contains("udprelayd_upstream_draining{listener=\"lb\",upstream=\"127.0.0.2:9\"} 1\n"), metrics)
        XCTAssertTrue(metrics.contains("udprelayd_upstream_draining{listener=\"lb\",upstream=\"127.0.0.1:9\"} 0\n"), metrics)
        XCTAssertTrue(metrics.contains("udprelayd_upstream_sessions_active{listener=\"lb\",upstream=\"127.0.0.2:9\"} "), metrics)
        XCTAssertTrue(try httpBody("/", from: status).contains("DRAINING"))
        XCTAssertEqual(d.stop(), 0)
    }
}
