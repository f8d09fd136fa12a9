import Foundation
import TestSupport
import UDPRelayConfig
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// Ingress checks of the real binary: IPv4-mapped sources, rotating sources against the
/// per-source limit, source ports per mode and how refusals are logged.
final class IngressEndToEndTests: XCTestCase {
    /// A dual-stack `[::]` socket (as systemd passes with BindIPv6Only=both)
    /// reports IPv4 clients as `::ffff:a.b.c.d`; `deny = 127.0.0.0/8` must still stop them.
    func testIPv4RulesApplyToIPv4MappedSourcesOnADualStackSocket() throws {
        let upstream = try UpstreamServer()
        addTeardownBlock { upstream.stop() }
        let fd = socket(AF_INET6, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        XCTAssertGreaterThanOrEqual(fd, 0)
        defer { close(fd) }
        var off: Int32 = 0
        setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, &off, 4)
        var (storage, len) = TestAddress.storage(SocketAddress(ip: .v6(high: 0, low: 0), port: 0))
        let rc = withUnsafePointer(to: &storage) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } }
        XCTAssertEqual(rc, 0)
        var bound = sockaddr_in6()
        var boundLength = socklen_t(MemoryLayout<sockaddr_in6>.size)
        _ = withUnsafeMutablePointer(to: &bound) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &boundLength) } }
        let port = UInt16(bigEndian: bound.sin6_port)
        let (d, _) = try startDaemon(
            """
            [listener dual]
            listen = [::]:9
            mode = forward
            upstream = \(upstream.address)
            deny = 127.0.0.0/8
            """, inheritedSocket: (fd, "dual"))
        let v4 = try UDPClient()
        for i in 0..<5 { v4.send([UInt8(i)], to: SocketAddress(ip: .v4(0x7F00_0001), port: port)) }
        // Then a client that is allowed: its answer means the five were judged before it.
        let v6 = try UDPClient(ipv6: true)
        v6.send(Array("v6".utf8), to: SocketAddress(ip: .v6(high: 0, low: 1), port: port))
        XCTAssertEqual(v6.receive()?.bytes, Array("v6".utf8))
        XCTAssertNil(v4.receive(timeout: 0.2), "::ffff:127.0.0.1 is 127.0.0.1: denied")
        XCTAssertEqual(d.stop(), 0)
        let line = d.totals("dual")
        XCTAssertEqual(DaemonProcess.count("drop.denied", in: line), 5, line ?? "")
        XCTAssertEqual(upstream.datagrams.map(\.bytes), [Array("v6".utf8)], "only the IPv6 client reached the upstream")
    }

    /// With `rate_limit_sources = 16`, 17 sources sending in turn each evicted
    /// another and started with a full bucket: every datagram was answered.
    func testRotatingSourcesBeyondTheTableAreHeldToTheRate() throws {
        let (d, bound) = try startDaemon(
            """
            [listener e]
            listen = 0.0.0.0:0
            rate_limit = 10/s
            rate_limit_sources = 16
            """, status: true)
        let port = try XCTUnwrap(bound["e"]?.first?.port)
        let target = SocketAddress(ip: .v4(0x7F00_0001), port: port)
        let sources = try (1...17).map { try UDPClient(bind: SocketAddress(ip: .v4(0x7F00_0100 | UInt32($0)), port: 0)) }
        let rounds = 100
        let start = Date()
        for r in 0..<rounds {
            for s in sources { s.send([UInt8(r)], to: target) }
        }
        // A marker from a source of its own: once it is answered, every datagram before it has
        // been judged (one worker reads its socket in order). It arrives while the table is
        // full, so it waits for a token like any newcomer: asked again until answered.
        let marker = try UDPClient(bind: SocketAddress(ip: .v4(0x7F00_0201), port: 0))
        var markers = 0
        var markerAnswered = false
        while !markerAnswered && markers < 40 {
            marker.send([0xFF], to: target)
            markers += 1
            markerAnswered = marker.receive(timeout: 0.25)?.bytes == [0xFF]
        }
        XCTAssertTrue(markerAnswered)
        let elapsed = Date().timeIntervalSince(start)
        var answered = 0
        for s in sources { while s.receive(timeout: 0) != nil { answered += 1 } }
        let sent = rounds * sources.count
        // 16 full buckets at first, then one overflow bucket of 10/s, burst 10, for all.
        let allowance = 16 * 10 + 10 + Int(10 * (elapsed + 1)) + 5
        XCTAssertLessThanOrEqual(answered, allowance, "\(answered) of \(sent) answered in \(elapsed) s")
        // Counted, and shown for an echo listener in /status and /metrics.
        let statusLine = try XCTUnwrap(d.log.first { $0.contains(" status listening ") })
        let status = try SocketAddress(parsing: try XCTUnwrap(DaemonProcess.field("address", in: statusLine)))
        let json = try XCTUnwrap(get(status, "/status"))
        let evictions = try XCTUnwrap(json.range(of: #""rate_limit_evictions":\s*[0-9]+"#, options: .regularExpression), json)
        let value = Int(json[evictions].split(separator: ":").last!.trimmingCharacters(in: .whitespaces)) ?? 0
        XCTAssertGreaterThan(value, sent / 2, String(json[evictions]))
        let metrics = try XCTUnwrap(get(status, "/metrics"))
        XCTAssertNotNil(
            metrics.split(separator: "\n").first {
                $0.hasPrefix("udprelayd_events_total{") && $0.contains(#"listener="e""#) && $0.contains(#"event="rate_limit_evictions""#)
            }, metrics)
        XCTAssertEqual(d.stop(), 0)
        let line = d.totals("e")
        XCTAssertEqual(DaemonProcess.count("drop.rate_limited", in: line), sent + markers - answered - 1, line ?? "")
    }

    func get(_ status: SocketAddress, _ path: String) throws -> String? {
        let c = try TCPClient(to: status)
        c.send("GET \(path) HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        return c.readResponse()
    }

    /// An NTP client with source port 123 passes a forward listener; echo still
    /// refuses it, and says so once in the log.
    func testSourcePort123PassesARelayAndIsRefusedByEchoWithOneLogLine() throws {
        if getuid() != 0 { throw XCTSkip("needs root to bind source port 123 (CI runs as root)") }
        let upstream = try UpstreamServer()
        addTeardownBlock { upstream.stop() }
        let (d, bound) = try startDaemon(
            """
            [listener fwd]
            listen = 127.0.0.1:0
            mode = forward
            upstream = \(upstream.address)
            [listener echo]
            listen = 127.0.0.1:0
            """)
        let fwd = try XCTUnwrap(bound["fwd"]?.first), echo = try XCTUnwrap(bound["echo"]?.first)
        // A random address of 127/8, so that nothing else holding 127.0.0.1:123 gets in the way.
        let ntp = try UDPClient(bind: SocketAddress(ip: .v4(0x7F00_0000 | UInt32.random(in: 0x01_0000...0xFF_FFFE)), port: 123))
        ntp.send(Array("ntp query".utf8), to: fwd)
        XCTAssertEqual(ntp.receive()?.bytes, Array("ntp query".utf8), "forward passes source port 123")
        for _ in 0..<3 { ntp.send(Array("echo?".utf8), to: echo) }
        let client = try UDPClient()
        client.send([1], to: echo)
        XCTAssertEqual(client.receive()?.bytes, [1])
        XCTAssertNil(ntp.receive(timeout: 0.2), "echo refuses source port 123")
        XCTAssertEqual(d.stop(), 0)
        let refused = d.log.filter { $0.contains("datagram refused") }
        XCTAssertEqual(refused.count, 1, refused.joined(separator: "\n"))
        let line = try XCTUnwrap(refused.first)
        XCTAssertEqual(DaemonProcess.field("listener.name", in: line), "echo")
        XCTAssertEqual(DaemonProcess.field("drop.reason", in: line), "source_port")
        XCTAssertTrue(line.contains("deny_source_ports"), line)
        XCTAssertEqual(DaemonProcess.count("drop.source_port", in: d.totals("echo")), 3)
        XCTAssertEqual(DaemonProcess.count("drop.source_port", in: d.totals("fwd")), 0)
    }
}
