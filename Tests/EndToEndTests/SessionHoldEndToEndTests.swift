import Foundation
import TestSupport
import XCTest

/// Closed sessions hold their sockets for a while so late replies cannot reach a newer session
/// on the same port; when descriptors run out, the hold is kept and new clients wait for it.
final class SessionHoldEndToEndTests: XCTestCase {
    func testHeldSocketsKeepTheirHoldWhenDescriptorsRunOut() throws {
        let upstream = try UpstreamServer()
        addTeardownBlock { upstream.stop() }
        // 48 descriptors in all leave room for the 10 live sessions and a few held ones, far
        // fewer than the 30 sessions the clients below close by eviction within the hold.
        let (d, bound) = try startDaemon(
            """
            [listener fwd]
            listen = 127.0.0.1:0
            mode = forward
            upstream = \(upstream.address)
            max_sessions = 10
            """, fileLimit: 48)
        let relay = try XCTUnwrap(bound["fwd"]?.first)
        // Every client stays open to the end: a client closed earlier frees its port, and one
        // opened later on that port would find the earlier client's session (no eviction).
        var clients: [UDPClient] = []
        var refused = 0
        for i in 0..<40 {
            let client = try UDPClient()
            clients.append(client)
            // A client refused for want of descriptors is served once a hold ends (2 s).
            let deadline = Date().addingTimeInterval(10)
            var reply: String?
            while reply == nil && Date() < deadline {
                client.send(Array("client \(i)".utf8), to: relay)
                reply = client.receive(timeout: 0.5).map { String(decoding: $0.bytes, as: UTF8.self) }
                if reply == nil { refused += 1 }
            }
            XCTAssertEqual(reply, "client \(i)", "client \(i) is served, with its own reply")
        }
        let totals = try stopAndTotals(d, "fwd")
        let log = d.log.joined(separator: "\n")
        XCTAssertEqual(DaemonProcess.field("sessions_evicted", in: totals), "30")
        let noSession = DaemonProcess.number("drop.no_session", in: totals) ?? 0
        XCTAssertGreaterThan(noSession, 0, "held sockets were not closed early to make room: \(totals)")
        XCTAssertLessThanOrEqual(noSession, refused, totals)
        XCTAssertTrue(log.contains("cannot open session sockets"), log)
        XCTAssertTrue(log.contains("session sockets open again"), log)
    }
}

extension SessionHoldEndToEndTests {
    /// A relay listener whose max_sessions does not fit the open-file limit
    /// warned at every start and every rebuild. Once, with what to do.
    func testOpenFileLimitWarningIsLoggedOnceWithWhatToDo() throws {
        let upstream = try UpstreamServer()
        addTeardownBlock { upstream.stop() }
        let config = { (timeout: String) in
            "[status]\nlisten = off\n[listener fwd]\nlisten = 127.0.0.1:0\nmode = forward\nupstream = \(upstream.address)\nsession_timeout = \(timeout)\n"
        }
        // The default max_sessions needs 70,656 descriptors; 4096 is the hard limit here.
        let d = try DaemonProcess(config: config("60s"), fileLimit: 4096)
        addTeardownBlock { d.stop() }
        let address = try XCTUnwrap(try d.waitUntilReady()["fwd"]?.first)
        let warnings = { d.log.filter { $0.contains("max_sessions exceeds the open-file limit") } }
        XCTAssertEqual(warnings().count, 1, d.log.joined(separator: "\n"))
        XCTAssertTrue(warnings().first?.contains("LimitNOFILE=") == true, "says what to change: \(warnings())")
        // A changed session_timeout rebuilds the listener on its socket: no second warning.
        try config("30s").replacingOccurrences(of: "127.0.0.1:0", with: "\(address)")
            .write(toFile: d.configPath, atomically: true, encoding: .utf8)
        let mark = d.log.count
        d.signal(SIGHUP)
        let reloaded = try XCTUnwrap(d.waitForLine(containing: "reloaded", after: mark, timeout: 10), d.log.joined(separator: "\n"))
        XCTAssertEqual(DaemonProcess.field("listeners.changed", in: reloaded), "fwd", reloaded)
        XCTAssertEqual(warnings().count, 1, "not again at the rebuild: \(d.log.joined(separator: "\n"))")
    }
}
