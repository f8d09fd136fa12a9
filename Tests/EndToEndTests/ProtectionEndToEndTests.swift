import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif
import TestSupport
import UDPRelayConfig

/// Abuse protection against the real binary: reflector source ports, loops, access lists, rates.
final class ProtectionEndToEndTests: XCTestCase {
    func startDaemon(_ config: String) throws -> (DaemonProcess, [String: [SocketAddress]]) {
        let d = try DaemonProcess(config: "[status]\nlisten = off\n" + config)
        addTeardownBlock { d.stop() }
        return (d, try d.waitUntilReady())
    }

    func totals(_ d: DaemonProcess, _ listener: String) throws -> String {
        XCTAssertEqual(d.stop(), 0)
        return try XCTUnwrap(d.log.first { $0.contains(" totals ") && DaemonProcess.field("listener.name", in: $0) == listener })
    }

    func requireRoot() throws {
        if getuid() != 0 { throw XCTSkip("needs root to bind source ports below 1024 and open raw sockets (CI runs as root)") }
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
        let line = try totals(d, "e")
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
        let line = try totals(d, "e")
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
            if r.bytes == [0xFF] { markerAnswered = true; break }
        }
        XCTAssertTrue(markerAnswered, "the polite marker after the flood is answered")
        let elapsed = Date().timeIntervalSince(start)
        let floodReplies = flooder.receiveMany(flood, idle: 0.5).count
        XCTAssertEqual(politeAnswered, 10, "a source within its rate is served in full during another's flood")
        let allowance = 20 + Int(200 * (elapsed + 0.6)) + 5
        XCTAssertLessThanOrEqual(floodReplies, allowance, "flood replies must be cut to burst + rate x time (\(elapsed)s)")
        XCTAssertGreaterThanOrEqual(floodReplies, 20, "the burst is served")
        let line = try totals(d, "e")
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
        client.send([9], to: a)   // the listener is still alive and serving
        XCTAssertEqual(client.receive()?.bytes, [9])
        XCTAssertEqual(d.stop(), 0)
        let la = try XCTUnwrap(d.log.first { $0.contains(" totals ") && DaemonProcess.field("listener.name", in: $0) == "a" })
        let lb = try XCTUnwrap(d.log.first { $0.contains(" totals ") && DaemonProcess.field("listener.name", in: $0) == "b" })
        XCTAssertEqual(DaemonProcess.field("drop.loop", in: la), "1", la)
        XCTAssertEqual(DaemonProcess.field("received", in: lb), "0", "nothing may reach b: \(lb)")
    }
}

/// Sends an IPv4 UDP datagram with a chosen source address and port through a raw socket.
enum RawUDP {
    static func sendSpoofed(from: SocketAddress, to: SocketAddress, payload: [UInt8]) throws {
        let fd = socket(AF_INET, Int32(SOCK_RAW.rawValue) | Int32(SOCK_CLOEXEC.rawValue), Int32(IPPROTO_UDP))
        guard fd >= 0 else { throw POSIXError(.init(rawValue: errno)!) }
        defer { close(fd) }
        var on: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_IP), IP_HDRINCL, &on, 4)
        let total = 20 + 8 + payload.count
        var packet = [UInt8](repeating: 0, count: total)
        let src = from.ip.bytes, dst = to.ip.bytes
        packet[0] = 0x45
        packet[2] = UInt8(total >> 8); packet[3] = UInt8(total & 0xff)
        packet[8] = 64
        packet[9] = UInt8(IPPROTO_UDP)
        packet.replaceSubrange(12..<16, with: src)
        packet.replaceSubrange(16..<20, with: dst)
        var sum: UInt32 = 0
        for i in stride(from: 0, to: 20, by: 2) { sum += UInt32(packet[i]) << 8 | UInt32(packet[i + 1]) }
        while sum >> 16 != 0 { sum = (sum & 0xffff) + (sum >> 16) }
        let check = ~UInt16(sum)
        packet[10] = UInt8(check >> 8); packet[11] = UInt8(check & 0xff)
        packet[20] = UInt8(from.port >> 8); packet[21] = UInt8(from.port & 0xff)
        packet[22] = UInt8(to.port >> 8); packet[23] = UInt8(to.port & 0xff)
        let udpLength = 8 + payload.count
        packet[24] = UInt8(udpLength >> 8); packet[25] = UInt8(udpLength & 0xff)
        // UDP checksum 0: "no checksum", valid over IPv4.
        packet.replaceSubrange(28..<total, with: payload)
        var (storage, len) = TestAddress.storage(to)
        let n = packet.withUnsafeBytes { buf in
            withUnsafePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(fd, buf.baseAddress, buf.count, 0, $0, len) }
            }
        }
        guard n == total else { throw POSIXError(.init(rawValue: errno)!) }
    }
}

/// Resource exhaustion: the daemon refuses what it cannot hold and keeps serving the rest.
final class ExhaustionEndToEndTests: XCTestCase {
    func testOutOfDescriptorsRefusesNewSessionsAndKeepsExistingOnes() throws {
        let upstream = try UpstreamServer()
        addTeardownBlock { upstream.stop() }
        // 48 descriptors in all: the daemon's own (stdio, sockets, epoll, ...) leave room for a
        // few dozen sessions, fewer than the 100 clients below.
        let d = try DaemonProcess(config: """
        [status]
        listen = off
        [listener fwd]
        listen = 127.0.0.1:0
        mode = forward
        upstream = \(upstream.address)
        max_sessions = 10000
        """, fileLimit: 48)
        addTeardownBlock { d.stop() }
        let bound = try d.waitUntilReady()
        let relay = try XCTUnwrap(bound["fwd"]?.first)
        let clients = try (0..<100).map { _ in try UDPClient() }
        for (i, c) in clients.enumerated() { c.send(Array("hello \(i)".utf8), to: relay) }
        // Collect replies on all clients at once until none has come for half a second.
        var served: [Int] = []
        var fds = clients.map { pollfd(fd: $0.fd, events: Int16(POLLIN), revents: 0) }
        while poll(&fds, nfds_t(fds.count), 500) > 0 {
            for k in fds.indices where fds[k].revents != 0 {
                fds[k].revents = 0
                fds[k].fd = -1  // one reply per client
                let reply = clients[k].receive(timeout: 0)
                XCTAssertEqual(reply?.bytes, Array("hello \(k)".utf8))
                served.append(k)
            }
        }
        XCTAssertGreaterThan(served.count, 5, "some sessions fit under the limit")
        XCTAssertLessThan(served.count, 100, "not all 100 sessions can fit in 48 descriptors")
        // Sessions that exist keep working while new ones are refused.
        for i in served.prefix(5) {
            clients[i].send(Array("again \(i)".utf8), to: relay)
            XCTAssertEqual(clients[i].receive(timeout: 2)?.bytes, Array("again \(i)".utf8), "existing session \(i)")
        }
        XCTAssertEqual(d.stop(), 0, "the daemon survives descriptor exhaustion and exits cleanly")
        // A reply that came after the half-second lull above is in its client's socket now
        // that the daemon has exited: it was served too.
        for k in clients.indices where !served.contains(k) {
            if let reply = clients[k].receive(timeout: 0) {
                XCTAssertEqual(reply.bytes, Array("hello \(k)".utf8))
                served.append(k)
            }
        }
        let line = try XCTUnwrap(d.log.first { $0.contains(" totals ") && DaemonProcess.field("listener.name", in: $0) == "fwd" })
        let refused = Int(DaemonProcess.field("drop.no_session", in: line) ?? "") ?? -1
        XCTAssertEqual(refused, 100 - served.count, line)
    }
}
