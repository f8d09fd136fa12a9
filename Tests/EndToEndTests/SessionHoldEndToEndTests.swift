import Foundation
import XCTest
import TestSupport

/// Closed sessions hold their sockets for a while (late replies cannot reach a newer session on
/// the same port), but never at the cost of serving a new client.
final class SessionHoldEndToEndTests: XCTestCase {
    func testHeldSocketsGiveWayWhenDescriptorsRunOut() throws {
        let upstream = try UpstreamServer()
        addTeardownBlock { upstream.stop() }
        // 48 descriptors in all leave room for the 10 live sessions and a few held ones, far
        // fewer than the 90 sessions the clients below close by eviction.
        let d = try DaemonProcess(config: """
        [status]
        listen = off
        [listener fwd]
        listen = 127.0.0.1:0
        mode = forward
        upstream = \(upstream.address)
        max_sessions = 10
        """, fileLimit: 48)
        addTeardownBlock { d.stop() }
        let relay = try XCTUnwrap(try d.waitUntilReady()["fwd"]?.first)
        // Every client stays open to the end: a client closed earlier frees its port, and one
        // opened later on that port would find the earlier client's session (no eviction).
        var clients: [UDPClient] = []
        for i in 0..<100 {
            let client = try UDPClient()
            clients.append(client)
            client.send(Array("client \(i)".utf8), to: relay)
            XCTAssertEqual(client.receive().map { String(decoding: $0.bytes, as: UTF8.self) }, "client \(i)",
                           "client \(i) is served although closed sessions hold sockets")
        }
        XCTAssertEqual(d.stop(), 0)
        let totals = try XCTUnwrap(d.log.first { $0.contains(" totals ") && DaemonProcess.field("listener.name", in: $0) == "fwd" })
        XCTAssertEqual(DaemonProcess.field("sessions_evicted", in: totals), "90")
        XCTAssertEqual(DaemonProcess.field("session_errors", in: totals), "0", totals)
    }
}
