import Foundation
import TestSupport
import UDPRelayConfig
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// The log lines a remote peer can cause are bounded at every log level.
/// Debug logging under a flood wrote about 19,000 lines/s and a polite client lost 112 of 350.
final class LogFloodEndToEndTests: XCTestCase {
    func testAFloodAtDebugLevelWritesABoundedNumberOfLines() throws {
        let upstream = try UpstreamServer()
        addTeardownBlock { upstream.stop() }
        let d = try DaemonProcess(
            config: """
                [status]
                listen = off
                [listener echo]
                listen = 127.0.0.1:0
                deny = 127.0.0.2/32
                [listener fwd]
                listen = 127.0.0.1:0
                mode = forward
                upstream = \(upstream.address)
                session_timeout = 1s
                """, arguments: ["--log-level", "debug"])
        addTeardownBlock { d.stop() }
        let bound = try d.waitUntilReady()
        let echo = try XCTUnwrap(bound["echo"]?.first), fwd = try XCTUnwrap(bound["fwd"]?.first)
        let denied = try UDPClient(bind: SocketAddress(ip: IPAddress(literal: "127.0.0.2")!, port: 0))
        let polite = try UDPClient()
        let before = d.log.count
        let start = Date()
        var politeAnswered = 0
        var sessions = 0
        let rounds = 2000
        for round in 0..<rounds {
            // 60 refused datagrams and 4 new client sessions (a new source port each) per round.
            for i in 0..<60 { denied.send(payload(32, seed: UInt64(round * 60 + i)), to: echo) }
            for _ in 0..<4 {
                let churn = try UDPClient()
                churn.send([1], to: fwd)
                if churn.receive(timeout: 2) != nil { sessions += 1 }
            }
            polite.send([UInt8(round & 0xFF)], to: echo)
            if polite.receive(timeout: 2)?.bytes == [UInt8(round & 0xFF)] { politeAnswered += 1 }
        }
        let elapsed = Date().timeIntervalSince(start)
        let lines = d.log.count - before
        let perSecond = Double(lines) / elapsed
        print(
            "log flood: \(rounds * 60) refused datagrams and \(rounds * 4) sessions in \(String(format: "%.2f", elapsed)) s at debug: "
                + "\(lines) log lines, \(String(format: "%.0f", perSecond)) lines/s; polite client answered \(politeAnswered) of \(rounds)")
        XCTAssertEqual(politeAnswered, rounds, "the polite client loses nothing")
        XCTAssertEqual(sessions, rounds * 4)
        // Per second and kind at most 20 session lines (opened, closed; one worker), one refusal
        // line a minute, and whatever names no peer (nothing here).
        let lineBound = Int(2 * 20 * (elapsed.rounded(.up) + 1)) + 2
        XCTAssertLessThanOrEqual(lines, lineBound, "\(lines) lines in \(elapsed) s")
        XCTAssertEqual(d.log[before...].filter { $0.contains("datagram refused") }.count, 1)
        // The lines left out are counted: the next line written says how many. Once this
        // second's allowance of "session opened" lines is spent, the next new session's line
        // carries the count; new clients, each from an address no flood client used (a reused
        // port of 127.0.0.1 could find a flood client's session and log nothing), until one is
        // written. Bounded: 60 clients, 0.1 s apart at most.
        var lastLine: String?
        for host in 3..<63 where lastLine == nil {
            let last = try UDPClient(bind: SocketAddress(ip: IPAddress(literal: "127.0.0.\(host)")!, port: 0))
            last.send([2], to: fwd)
            XCTAssertEqual(last.receive()?.bytes, [2])
            lastLine = d.waitForLine(after: before + lines, timeout: 0.1) {
                $0.contains("session opened") && $0.contains("peer.address=127.0.0.\(host):")
            }
        }
        XCTAssertNotNil(lastLine, "a session opened after the flood is written")
        let opened = d.log.filter { $0.contains("session opened") }
        XCTAssertEqual(d.stop(), 0)
        let written = d.log.filter { $0.contains("session opened") }
        let suppressed = written.compactMap { DaemonProcess.field("log.suppressed", in: $0) }.compactMap { Int($0) }.reduce(0, +)
        // (A client port the kernel hands out again within session_timeout finds its session.)
        let totals = try XCTUnwrap(d.log.first { $0.contains(" totals ") && DaemonProcess.field("listener.name", in: $0) == "fwd" })
        let created = Int(DaemonProcess.field("sessions_created", in: totals) ?? "") ?? -1
        XCTAssertGreaterThan(created, lineBound, totals)
        XCTAssertEqual(written.count + suppressed, created, "every session opened is written or counted (\(opened.count) before the last)")
    }
}
