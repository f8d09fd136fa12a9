import Foundation
import TestSupport
import UDPRelayConfig
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// Abuse protection against the real binary: reflector source ports, loops, access lists, rates.
final class ProtectionEndToEndTests: XCTestCase {
    func requireRoot() throws {
        try requireRoot("to bind source ports below 1024 and open raw sockets")
    }

    func testDatagramsFromReflectorSourcePortsAreNotAnswered() throws {
        try requireRoot()
        let (d, bound) = try startDaemon("[listener e]\nlisten = 127.0.0.1:0\n")
        let target = try XCTUnwrap(bound["e"]?.first)
        // A random loopback address of 127/8, so a concurrent run (or another test) holding
        // 127.0.0.1:7 cannot make this bind fail.
        let source = IPAddress.v4(0x7F00_0000 | UInt32.random(in: 0x01_0000...0xFF_FFFE))
        for port: UInt16 in [7, 19] {
            let reflector = try UDPClient(bind: SocketAddress(ip: source, port: port))
            reflector.send(Array("loop?".utf8), to: target)
            XCTAssertNil(reflector.receive(timeout: 0.3), "a datagram from source port \(port) must not be answered")
        }
        let client = try UDPClient()
        client.send(Array("fine".utf8), to: target)
        XCTAssertEqual(client.receive()?.bytes, Array("fine".utf8))
        let line = try stopAndTotals(d, "e")
        XCTAssertEqual(DaemonProcess.field("drop.source_port", in: line), "2", line)
        XCTAssertEqual(DaemonProcess.field("sent", in: line), "1", line)
    }

    func testDeniedNetworkGetsNothingAndOthersAreServed() throws {
        let (d, bound) = try startDaemon("[listener e]\nlisten = 0.0.0.0:0\ndeny = 127.0.0.2/32\n")
        let port = try XCTUnwrap(bound["e"]?.first?.port)
        let denied = try UDPClient(bind: SocketAddress(ip: IPAddress(literal: "127.0.0.2")!, port: 0))
        let allowed = try UDPClient(bind: SocketAddress(ip: IPAddress(literal: "127.0.0.3")!, port: 0))
        for _ in 0..<5 { denied.send(Array("x".utf8), to: SocketAddress(ip: .v4(0x7F00_0001), port: port)) }
        allowed.send(Array("y".utf8), to: SocketAddress(ip: .v4(0x7F00_0001), port: port))
        XCTAssertEqual(allowed.receive()?.bytes, Array("y".utf8))
        XCTAssertNil(denied.receive(timeout: 0.3))
        let line = try stopAndTotals(d, "e")
        XCTAssertEqual(DaemonProcess.field("drop.denied", in: line), "5", line)
    }

    func testAllowListDeniesEveryoneElse() throws {
        let (_, bound) = try startDaemon("[listener e]\nlisten = 0.0.0.0:0\nallow = 127.0.0.3\n")
        let port = try XCTUnwrap(bound["e"]?.first?.port)
        let outsider = try UDPClient(bind: SocketAddress(ip: IPAddress(literal: "127.0.0.2")!, port: 0))
        let insider = try UDPClient(bind: SocketAddress(ip: IPAddress(literal: "127.0.0.3")!, port: 0))
        outsider.send([1], to: SocketAddress(ip: .v4(0x7F00_0001), port: port))
        insider.send([2], to: SocketAddress(ip: .v4(0x7F00_0001), port: port))
        XCTAssertEqual(insider.receive()?.bytes, [2])
        XCTAssertNil(outsider.receive(timeout: 0.3))
    }

    func testFloodFromOneSourceIsCutToItsRateWhileAnotherIsServedInFull() throws {
        let (d, bound) = try startDaemon("[listener e]\nlisten = 0.0.0.0:0\nrate_limit = 200/s\nrate_burst = 20\n")
        let port = try XCTUnwrap(bound["e"]?.first?.port)
        let target = SocketAddress(ip: .v4(0x7F00_0001), port: port)
        let flooder = try UDPClient(bind: SocketAddress(ip: IPAddress(literal: "127.0.0.2")!, port: 0))
        let polite = try UDPClient(bind: SocketAddress(ip: IPAddress(literal: "127.0.0.3")!, port: 0))
        let flood = 2000
        let start = Date()
        var politeAnswered = 0
        for i in 0..<flood {
            flooder.send(payload(32, seed: UInt64(i)), to: target)
            if i % 200 == 0 {  // the polite source sends 10 datagrams, well within its own rate
                polite.send([UInt8(i / 200)], to: target)
                if polite.receive(timeout: 2) != nil { politeAnswered += 1 }
            }
        }
        // One more polite datagram: the single worker reads its socket in order, so once this
        // is answered every flood datagram has been judged and its reply (if any) sent.
        polite.send([0xFF], to: target)
        var markerAnswered = false
        while let r = polite.receive(timeout: 10) {
            if r.bytes == [0xFF] {
                markerAnswered = true
                break
            }
        }
        XCTAssertTrue(markerAnswered, "the polite marker after the flood is answered")
        let elapsed = Date().timeIntervalSince(start)
        let floodReplies = flooder.receiveMany(flood, idle: 0.5).count
        XCTAssertEqual(politeAnswered, 10, "a source within its rate is served in full during another's flood")
        let allowance = 20 + Int(200 * (elapsed + 0.6)) + 5
        XCTAssertLessThanOrEqual(floodReplies, allowance, "flood replies must be cut to burst + rate x time (\(elapsed)s)")
        XCTAssertGreaterThanOrEqual(floodReplies, 20, "the burst is served")
        let line = try stopAndTotals(d, "e")
        let limited = Int(DaemonProcess.field("drop.rate_limited", in: line) ?? "") ?? -1
        XCTAssertEqual(limited, flood - floodReplies, line)
    }

    func testSpoofedDatagramFromOwnListenerAddressIsDroppedNotLooped() throws {
        try requireRoot()
        let (d, bound) = try startDaemon("[listener a]\nlisten = 127.0.0.1:0\n[listener b]\nlisten = 127.0.0.1:0\n")
        let a = try XCTUnwrap(bound["a"]?.first), b = try XCTUnwrap(bound["b"]?.first)
        // A datagram to a that claims to come from b: answering it would start an endless
        // echo loop between a and b (CVE-2024-2169).
        try RawUDP.sendSpoofed(from: b, to: a, payload: Array("ping-pong".utf8))
        let client = try UDPClient()
        client.send([9], to: a)  // the listener is still alive and serving
        XCTAssertEqual(client.receive()?.bytes, [9])
        XCTAssertEqual(d.stop(), 0)
        let la = try XCTUnwrap(d.log.first { $0.contains(" totals ") && DaemonProcess.field("listener.name", in: $0) == "a" })
        let lb = try XCTUnwrap(d.log.first { $0.contains(" totals ") && DaemonProcess.field("listener.name", in: $0) == "b" })
        XCTAssertEqual(DaemonProcess.field("drop.loop", in: la), "1", la)
        XCTAssertEqual(DaemonProcess.field("received", in: lb), "0", "nothing may reach b: \(lb)")
    }
}
