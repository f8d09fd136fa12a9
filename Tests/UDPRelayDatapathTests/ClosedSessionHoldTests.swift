import Foundation
import Logging
import TestSupport
import UDPRelayConfig
import XCTest

@testable import UDPRelayDatapath

#if canImport(Glibc)
import Glibc
#endif

/// A closed relay session keeps its socket for a while, so a reply still on its way cannot
/// reach a newer session that the kernel gave the same ephemeral port (and so another client).
final class ClosedSessionHoldTests: XCTestCase, ConfigFileTests {
    /// Whether a socket can bind 127.0.0.1:`port` right now (false while a session holds it).
    func portIsFree(_ port: UInt16) -> Bool {
        guard let fd = try? UDPSocket.bound(to: SocketAddress(ip: .v4(0x7F00_0001), port: port)) else { return false }
        close(fd)
        return true
    }

    /// Forward listener with one session at most, to a silent upstream the test answers by hand.
    func startRelay(hold: UInt64? = nil, extra: String = "") throws -> (Datapath, Listener, UDPClient) {
        let upstream = try UDPClient()
        var tuning = DatapathTuning()
        if let hold { tuning.closedSessionHold = hold }
        let text = "[listener fwd]\nlisten = 127.0.0.1:0\nmode = forward\nmax_sessions = 1\nupstream = \(upstream.localAddress)\n" + extra
        let datapath = try Datapath(configuration: try configuration(text), logger: Logger(label: "test"), tuning: tuning)
        datapath.startBlocking()
        return (datapath, try XCTUnwrap(datapath.listener(named: "fwd")), upstream)
    }

    func testLateReplyToAnEvictedSessionIsCountedAndReachesNobody() throws {
        let (datapath, fwd, upstream) = try startRelay()
        defer { datapath.stopBlocking() }
        let address = fwd.boundAddresses[0]
        let (a, b) = (try UDPClient(), try UDPClient())
        a.send(Array("a".utf8), to: address)
        let fromA = try XCTUnwrap(upstream.receive(), "a's datagram reaches the upstream").from
        b.send(Array("b".utf8), to: address)  // max_sessions = 1: b evicts a's session
        let fromB = try XCTUnwrap(upstream.receive(), "b's datagram reaches the upstream").from
        XCTAssertNotEqual(fromA.port, fromB.port)
        XCTAssertEqual(fwd.counters()[.sessionsEvicted], 1)
        XCTAssertFalse(portIsFree(fromA.port), "the evicted session's port is still held")

        // The upstream answers a's datagram only now.
        upstream.send(Array("late for a".utf8), to: fromA)
        XCTAssertTrue(waitUntil(5) { fwd.counters()[.repliesIgnored] == 1 }, "the late reply is read and counted")
        upstream.send(Array("for b".utf8), to: fromB)
        XCTAssertEqual(b.receive().map { String(decoding: $0.bytes, as: UTF8.self) }, "for b", "b gets its own reply only")
        XCTAssertNil(a.receive(timeout: 0.1), "a's session is gone: its late reply is dropped")
        XCTAssertEqual(fwd.counters()[.repliesIgnored], 1)

        datapath.stopBlocking()
        XCTAssertTrue(portIsFree(fromA.port), "stopping closes held sockets too")
        XCTAssertTrue(portIsFree(fromB.port))
    }

    func testAnExpiredSessionHoldsItsPortToo() throws {
        let (datapath, fwd, upstream) = try startRelay(extra: "session_timeout = 100ms\n")
        defer { datapath.stopBlocking() }
        let a = try UDPClient()
        a.send([1], to: fwd.boundAddresses[0])
        let fromA = try XCTUnwrap(upstream.receive()).from
        XCTAssertTrue(waitUntil(10) { fwd.counters()[.sessionsExpired] == 1 }, "the idle session expires")
        XCTAssertFalse(portIsFree(fromA.port), "the expired session's port is held, not freed in the same tick")
        upstream.send(Array("late".utf8), to: fromA)
        XCTAssertTrue(waitUntil(5) { fwd.counters()[.repliesIgnored] == 1 }, "a reply after expiry is counted and dropped")
        XCTAssertNil(a.receive(timeout: 0.1))
    }

    func testHeldSocketIsClosedOnceTheHoldIsOver() throws {
        // A short hold and a short session_timeout, so the expiry timer runs often.
        let (datapath, fwd, upstream) = try startRelay(hold: 50_000_000, extra: "session_timeout = 1s\n")
        defer { datapath.stopBlocking() }
        let address = fwd.boundAddresses[0]
        let (a, b) = (try UDPClient(), try UDPClient())
        a.send([1], to: address)
        let fromA = try XCTUnwrap(upstream.receive()).from
        b.send([2], to: address)
        XCTAssertNotNil(upstream.receive())
        XCTAssertTrue(waitUntil(5) { portIsFree(fromA.port) }, "the port is given back after the hold")
        XCTAssertEqual(fwd.counters()[.sessionsActive], 1, "b's session is untouched")
    }

    func testAFailedUpstreamClosesItsSessionAtOnce() throws {
        // No reply will ever come from a refusing upstream: nothing to hold.
        var upstream: UDPClient? = try UDPClient()
        let text = "[listener fwd]\nlisten = 127.0.0.1:0\nmode = forward\nupstream = \(upstream!.localAddress)\n"
        let datapath = try Datapath(configuration: try configuration(text), logger: Logger(label: "test"))
        datapath.startBlocking()
        defer { datapath.stopBlocking() }
        let fwd = try XCTUnwrap(datapath.listener(named: "fwd"))
        let a = try UDPClient()
        a.send([1], to: fwd.boundAddresses[0])
        let fromA = try XCTUnwrap(upstream?.receive()).from
        upstream = nil  // closes its socket: the session's next send is refused (ICMP port unreachable)
        a.send([2], to: fwd.boundAddresses[0])
        XCTAssertTrue(waitUntil(5) { fwd.counters()[.sessionsFailed] == 1 }, "the refusal closes the session")
        XCTAssertTrue(portIsFree(fromA.port), "a failed session's socket is closed, not held")
    }

    func testTheHoldFlagCostsNoMemoryPerSession() {
        // 100,000 sessions must fit in 64 MiB (BENCHMARKS.md): the session record stays 144
        // bytes (112 before the session log's bytes each way, start and source port: 14.4 MB
        // for 100,000 sessions, 3.2 MB more).
        XCTAssertLessThanOrEqual(MemoryLayout<Session>.stride, 144)
    }
}
