import Foundation
import TestSupport
import UDPRelayConfig
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// One spoofed datagram must not start an endless loop between echo servers
/// on this host, whatever their addresses and ports.
final class LoopEndToEndTests: XCTestCase {
    func requireRoot() throws {
        try requireRoot("to send spoofed datagrams through a raw socket")
    }

    /// The first "datagram refused ... drop.reason=loop" line, which the daemon logs at once.
    func waitForLoopDrop(_ d: DaemonProcess, timeout: Double = 10) -> String? {
        d.waitForLine(timeout: timeout) { $0.contains("datagram refused") && DaemonProcess.field("drop.reason", in: $0) == "loop" }
    }

    /// A port below the ephemeral range that is free on every address now, the way servers
    /// are configured (the loop breaker tells servers from clients by it).
    static func serverPort() throws -> UInt16 {
        for _ in 0..<500 {
            let p = UInt16.random(in: 20000...32000)
            if (try? UDPClient(bind: SocketAddress(ip: .v4(0), port: p))) != nil { return p }
        }
        throw XCTSkip("no free UDP port found in 20000-32000")
    }

    func testSpoofedDatagramBetweenTwoWildcardEchoListenersIsDroppedAtOnce() throws {
        try requireRoot()
        let (d, bound) = try startDaemon("[listener a]\nlisten = 0.0.0.0:0\n[listener b]\nlisten = 0.0.0.0:0\n")
        let a = try XCTUnwrap(bound["a"]?.first?.port), b = try XCTUnwrap(bound["b"]?.first?.port)
        // To a on 127.0.0.5, "from" b on 127.0.0.5: a's answer would leave from 127.0.0.5 to b,
        // b's back to a, forever (a core each), since only 127.0.0.1 was known to be local.
        let local = IPAddress(literal: "127.0.0.5")!
        try RawUDP.sendSpoofed(from: SocketAddress(ip: local, port: b), to: SocketAddress(ip: local, port: a), payload: Array("loop".utf8))
        XCTAssertNotNil(waitForLoopDrop(d), "the spoofed datagram is refused as a loop")
        let client = try UDPClient()
        client.send([9], to: SocketAddress(ip: .v4(0x7F00_0001), port: a))
        XCTAssertEqual(client.receive()?.bytes, [9], "a still serves")
        XCTAssertEqual(d.stop(), 0)
        let la = d.totals("a"), lb = d.totals("b")
        XCTAssertEqual(DaemonProcess.count("drop.loop", in: la), 1, la ?? "")
        XCTAssertEqual(DaemonProcess.count("received", in: la), 2, la ?? "")
        XCTAssertEqual(DaemonProcess.count("received", in: lb), 0, "nothing reaches b: \(lb ?? "")")
    }

    func testTwoDaemonsOnTheSamePortDoNotAnswerEachOther() throws {
        try requireRoot()
        let (x, bx) = try startDaemon("[listener e]\nlisten = 127.0.0.2:0\n")
        let port = try XCTUnwrap(bx["e"]?.first?.port)
        let (y, _) = try startDaemon("[listener e]\nlisten = 127.0.0.3:\(port)\n")
        try RawUDP.sendSpoofed(
            from: SocketAddress(ip: IPAddress(literal: "127.0.0.3")!, port: port),
            to: SocketAddress(ip: IPAddress(literal: "127.0.0.2")!, port: port), payload: Array("loop".utf8))
        XCTAssertNotNil(waitForLoopDrop(x), "x refuses a datagram from its own port on another local address")
        XCTAssertEqual(x.stop(), 0)
        XCTAssertEqual(y.stop(), 0)
        let lx = x.totals("e"), ly = y.totals("e")
        XCTAssertEqual(DaemonProcess.count("received", in: lx), 1, lx ?? "")
        XCTAssertEqual(DaemonProcess.count("drop.loop", in: lx), 1, lx ?? "")
        XCTAssertEqual(DaemonProcess.count("received", in: ly), 0, ly ?? "")
    }

    /// Two echo daemons on different ports: neither knows the other's port, so the loop guard
    /// cannot see it; the loop breaker (a cap per local server-port flow) ends it.
    func testTwoEchoDaemonsOnDifferentPortsStopWithinTheBreakersBurst() throws {
        try requireRoot()
        let px = try Self.serverPort()
        let (x, _) = try startDaemon("[listener e]\nlisten = 127.0.0.2:\(px)\nloop_guard = no\n")
        let py = try Self.serverPort()
        let (y, _) = try startDaemon("[listener e]\nlisten = 127.0.0.3:\(py)\n")
        let started = Date()
        try RawUDP.sendSpoofed(
            from: SocketAddress(ip: IPAddress(literal: "127.0.0.3")!, port: py),
            to: SocketAddress(ip: IPAddress(literal: "127.0.0.2")!, port: px), payload: Array("loop".utf8))
        var ended = false
        let deadline = Date().addingTimeInterval(15)
        while !ended && Date() < deadline {
            ended = waitForLoopDrop(x, timeout: 0.2) != nil || waitForLoopDrop(y, timeout: 0.2) != nil
        }
        // An upper bound on how long the ping-pong ran (the drop is logged at once).
        let loopSeconds = Date().timeIntervalSince(started)
        XCTAssertTrue(ended, "one of the two refuses the ping-pong as a loop")
        XCTAssertEqual(x.stop(), 0)
        XCTAssertEqual(y.stop(), 0)
        let lx = x.totals("e"), ly = y.totals("e")
        let received = DaemonProcess.count("received", in: lx) + DaemonProcess.count("received", in: ly)
        XCTAssertGreaterThan(received, 1, "the loop did start: \(lx ?? "") \(ly ?? "")")
        // The breaker (config/README.md, loop_guard): 100/s per flow after a burst of 32. A fast
        // loop ends within about 32 round trips; on a loaded machine a slower one takes more,
        // but never more than the cap lets through while it ran (each daemon sees its flow).
        let allowed = 2 * (32 + Int((100 * loopSeconds).rounded(.up)) + 2)
        XCTAssertLessThanOrEqual(received, allowed, "and was held to the breaker's cap over \(loopSeconds) s: \(lx ?? "") \(ly ?? "")")
        XCTAssertEqual(DaemonProcess.count("drop.loop", in: lx) + DaemonProcess.count("drop.loop", in: ly), 1)
    }

    /// The kernel's ephemeral port range (`net.ipv4.ip_local_port_range`).
    static func ephemeralPorts() throws -> ClosedRange<UInt16> {
        let text = try String(contentsOfFile: "/proc/sys/net/ipv4/ip_local_port_range", encoding: .utf8)
        let parts = text.split(whereSeparator: \.isWhitespace).compactMap { UInt16($0) }
        guard parts.count == 2, parts[0] <= parts[1] else { throw XCTSkip("cannot read ip_local_port_range: \(text)") }
        return parts[0]...parts[1]
    }

    /// Two echo daemons on ports inside the ephemeral range look like clients to each other
    /// (and neither's loop guard knows the other's port); one spoofed datagram made them answer
    /// each other forever (about 250/s here). The loop breaker sees the ping-pong's signature,
    /// each datagram repeating the flow's previous payload, and caps it like a server port's.
    func testTwoEchoDaemonsOnEphemeralPortsStopWithinTheBreakersBurst() throws {
        try requireRoot()
        let ephemeral = try Self.ephemeralPorts()
        // Port 0: the kernel picks a free port in the ephemeral range, as a client's.
        let (x, bx) = try startDaemon("[listener e]\nlisten = 127.0.0.2:0\nloop_guard = no\n")
        let (y, by) = try startDaemon("[listener e]\nlisten = 127.0.0.3:0\n")
        let px = try XCTUnwrap(bx["e"]?.first?.port), py = try XCTUnwrap(by["e"]?.first?.port)
        XCTAssertTrue(ephemeral.contains(px) && ephemeral.contains(py), "\(px), \(py) in \(ephemeral)")
        let started = Date()
        try RawUDP.sendSpoofed(
            from: SocketAddress(ip: IPAddress(literal: "127.0.0.3")!, port: py),
            to: SocketAddress(ip: IPAddress(literal: "127.0.0.2")!, port: px), payload: Array("loop".utf8))
        var ended = false
        let deadline = Date().addingTimeInterval(5)
        while !ended && Date() < deadline {
            ended = waitForLoopDrop(x, timeout: 0.2) != nil || waitForLoopDrop(y, timeout: 0.2) != nil
        }
        let loopSeconds = Date().timeIntervalSince(started)
        XCTAssertTrue(ended, "one of the two refuses the ping-pong as a loop within 5 s")
        // A client of x on the same host, sending changing payloads fast, is not capped.
        let client = try UDPClient()
        let xAddress = SocketAddress(ip: IPAddress(literal: "127.0.0.2")!, port: px)
        var answered = 0
        for i in 0..<500 {
            let payload = Array("ping \(i)".utf8)
            client.send(payload, to: xAddress)
            if client.receive()?.bytes == payload { answered += 1 }
        }
        XCTAssertEqual(answered, 500, "a local client with changing payloads is served in full")
        XCTAssertEqual(x.stop(), 0)
        XCTAssertEqual(y.stop(), 0)
        let lx = x.totals("e"), ly = y.totals("e")
        let received = DaemonProcess.count("received", in: lx) + DaemonProcess.count("received", in: ly) - 500
        XCTAssertGreaterThan(received, 1, "the loop did start: \(lx ?? "") \(ly ?? "")")
        // The cap (config/README.md, loop_guard): each daemon's flow passes its first datagram
        // (not yet a repeat), then 32, then 100/s while the loop ran.
        let allowed = 2 * (1 + 32 + Int((100 * loopSeconds).rounded(.up)) + 2)
        XCTAssertLessThanOrEqual(received, allowed, "and was held to the breaker's cap over \(loopSeconds) s: \(lx ?? "") \(ly ?? "")")
        XCTAssertEqual(DaemonProcess.count("drop.loop", in: lx) + DaemonProcess.count("drop.loop", in: ly), 1)
    }

    /// Several spoofed datagrams with different payloads into the same pair of client ports
    /// loop at once and cycle, so none repeats its immediate predecessor: the breaker's anchor
    /// (one fingerprint in 64) sees the cycle, and each loop ends with one drop.
    func testSeveralLoopsThroughTheSameEphemeralPortsAllEnd() throws {
        try requireRoot()
        let (x, bx, sx) = try startDaemonWithStatus("[listener e]\nlisten = 127.0.0.2:0\nloop_guard = no\n")
        let (y, by, sy) = try startDaemonWithStatus("[listener e]\nlisten = 127.0.0.3:0\n")
        let px = try XCTUnwrap(bx["e"]?.first?.port), py = try XCTUnwrap(by["e"]?.first?.port)
        XCTAssertTrue(try Self.ephemeralPorts().contains(px))
        let loops = 4
        for i in 0..<loops {
            try RawUDP.sendSpoofed(
                from: SocketAddress(ip: IPAddress(literal: "127.0.0.3")!, port: py),
                to: SocketAddress(ip: IPAddress(literal: "127.0.0.2")!, port: px), payload: Array("loop \(i)".utf8))
        }
        func loopDrops() throws -> Int {
            try [sx, sy].map { try XCTUnwrap((try listenerStatus($0, "e")["drops"] as? [String: Any])?["loop"] as? Int) }.reduce(0, +)
        }
        let deadline = Date().addingTimeInterval(5)
        var drops = try loopDrops()
        while drops < loops && Date() < deadline {
            usleep(20_000)
            drops = try loopDrops()
        }
        XCTAssertEqual(drops, loops, "each of the \(loops) loops ends with one drop within 5 s")
        XCTAssertEqual(x.stop(), 0)
        XCTAssertEqual(y.stop(), 0)
        let lx = x.totals("e"), ly = y.totals("e")
        XCTAssertEqual(DaemonProcess.count("drop.loop", in: lx) + DaemonProcess.count("drop.loop", in: ly), loops, "\(lx ?? "") \(ly ?? "")")
    }
}
