import Foundation
import TestSupport
import UDPRelayConfig
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// `proxy_protocol = v2` with the real binary: upstreams get a PROXY v2 header naming the
/// client in front of every datagram, read here by a parser of the test's own (written from
/// HAProxy's specification, not from the daemon's code) and by dnsdist, a real implementation.
final class ProxyProtocolEndToEndTests: XCTestCase {
    /// A parsed PROXY v2 header (command PROXY, DGRAM) and the payload after it.
    struct Parsed: Equatable {
        var source: SocketAddress
        var destination: SocketAddress
        var payload: [UInt8]
    }

    /// Parses a datagram that must start with a PROXY v2 header of command PROXY over
    /// INET/INET6 DGRAM; nil when anything differs from the specification.
    static func parse(_ d: [UInt8]) -> Parsed? {
        let signature: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]
        guard d.count >= 16, Array(d[0..<12]) == signature, d[12] == 0x21 else { return nil }
        let length = Int(d[14]) << 8 | Int(d[15])
        guard d.count >= 16 + length else { return nil }
        func port(_ at: Int) -> UInt16 { UInt16(d[at]) << 8 | UInt16(d[at + 1]) }
        func be64(_ at: Int) -> UInt64 { (0..<8).reduce(0) { $0 << 8 | UInt64(d[at + $1]) } }
        switch d[13] {
        case 0x12 where length == 12:
            func v4(_ at: Int) -> IPAddress { .v4((0..<4).reduce(0) { $0 << 8 | UInt32(d[at + $1]) }) }
            return Parsed(
                source: SocketAddress(ip: v4(16), port: port(24)), destination: SocketAddress(ip: v4(20), port: port(26)),
                payload: Array(d[28...]))
        case 0x22 where length == 36:
            func v6(_ at: Int) -> IPAddress { .v6(high: be64(at), low: be64(at + 8)) }
            return Parsed(
                source: SocketAddress(ip: v6(16), port: port(48)), destination: SocketAddress(ip: v6(32), port: port(50)),
                payload: Array(d[52...]))
        default:
            return nil
        }
    }

    /// An upstream that reads the header and answers with the payload alone, so the client's
    /// reply shows the header was there and that replies come back as the upstream sent them.
    func proxyReadingUpstream(ipv6: Bool = false) throws -> UpstreamServer {
        let server = try UpstreamServer(ipv6: ipv6, reply: { Self.parse($0).map { Array("plain:".utf8) + $0.payload } })
        addTeardownBlock { server.stop() }
        return server
    }

    func testForwardSendsTheClientsAddressAndPortOverIPv4AndIPv6AndRepliesArePlain() throws {
        let upstream = try proxyReadingUpstream()
        let (daemon, bound, status) = try startDaemonWithStatus(
            """
            [listener fwd]
            listen = 127.0.0.1:0, [::1]:0
            mode = forward
            upstream = \(upstream.address)
            proxy_protocol = v2
            """)
        let addresses = try XCTUnwrap(bound["fwd"])
        XCTAssertEqual(addresses.count, 2)
        for (i, address) in addresses.enumerated() {
            let client = try UDPClient(ipv6: address.ip.isIPv6)
            let p = payload(100 + i, seed: UInt64(i + 1))
            client.send(p, to: address)
            let reply = try XCTUnwrap(client.receive(), "no reply through \(address)")
            XCTAssertEqual(reply.bytes, Array("plain:".utf8) + p, "the reply reaches the client as the upstream sent it")
            XCTAssertEqual(reply.from, address)
            XCTAssertEqual(upstream.waitForCount(i + 1), i + 1)
            let got = try XCTUnwrap(Self.parse(upstream.datagrams[i].bytes), "no PROXY v2 header in \(upstream.datagrams[i].bytes.prefix(16))")
            XCTAssertEqual(got, Parsed(source: client.localAddress, destination: address, payload: p))
        }
        let l = try listenerStatus(status, "fwd")
        XCTAssertEqual(l["proxy_protocol"] as? String, "v2")
        let metrics = try httpBody("/metrics", from: status)
        XCTAssertTrue(metrics.contains("\nudprelayd_listener_proxy_protocol{listener=\"fwd\"} 2\n"), metrics)
        XCTAssertTrue(try httpBody("/", from: status).contains("PROXY v2"))
        XCTAssertEqual(daemon.stop(), 0)
    }

    func testBalanceSendsEachSessionsClientToTheUpstreamItPicked() throws {
        let first = try proxyReadingUpstream(), second = try proxyReadingUpstream()
        let (_, bound) = try startDaemon(
            """
            [listener spread]
            listen = 127.0.0.1:0
            mode = balance
            upstream = \(first.address), \(second.address)
            proxy_protocol = v2
            """)
        let address = try XCTUnwrap(bound["spread"]?.first)
        let clients = try (0..<4).map { _ in try UDPClient() }
        for (i, client) in clients.enumerated() {
            XCTAssertEqual(echo(client, address, "q\(i)"), "plain:q\(i)")
        }
        // Round robin: two sessions on each upstream, each datagram naming its own client.
        let seen = (first.datagrams + second.datagrams).compactMap { Self.parse($0.bytes) }
        XCTAssertEqual(first.datagrams.count, 2)
        XCTAssertEqual(second.datagrams.count, 2)
        XCTAssertEqual(
            Set(seen.map { "\($0.source) \($0.destination) \(String(decoding: $0.payload, as: UTF8.self))" }),
            Set(clients.enumerated().map { "\($1.localAddress) \(address) q\($0)" }))
    }

    /// A burst of equal-sized datagrams from one client, which `udp_gso` would send as one
    /// segmented send: each arrives with its own header and whole payload.
    func testABurstFromOneClientCarriesOneHeaderPerDatagram() throws {
        let upstream = try proxyReadingUpstream()
        let (_, bound) = try startDaemon(
            """
            [listener fwd]
            listen = 127.0.0.1:0
            mode = forward
            upstream = \(upstream.address)
            proxy_protocol = v2
            udp_gso = yes
            """)
        let address = try XCTUnwrap(bound["fwd"]?.first)
        let client = try UDPClient()
        let sent = (0..<32).map { payload(200, seed: UInt64($0 + 10)) }
        for p in sent { client.send(p, to: address) }
        XCTAssertEqual(client.receiveMany(sent.count).count, sent.count)
        XCTAssertEqual(upstream.waitForCount(sent.count), sent.count)
        let parsed = upstream.datagrams.map { Self.parse($0.bytes) }
        let wrong = zip(parsed, sent).filter { $0.0?.payload != $0.1 || $0.0?.source != client.localAddress }.count
        XCTAssertEqual(wrong, 0, "datagrams without their own header and payload, of \(sent.count): sizes \(upstream.datagrams.map(\.bytes.count))")
    }

    /// On a wildcard listener the destination is the address the client sent to (127.0.0.2
    /// here, from packet info), with the listener's port.
    func testWildcardListenerNamesTheAddressTheClientSentTo() throws {
        let upstream = try proxyReadingUpstream()
        let (_, bound) = try startDaemon(
            """
            [listener fwd]
            listen = 0.0.0.0:0
            mode = forward
            upstream = \(upstream.address)
            proxy_protocol = v2
            """)
        let port = try XCTUnwrap(bound["fwd"]?.first).port
        let target = SocketAddress(ip: .v4(0x7F00_0002), port: port)
        let client = try UDPClient()
        client.send(Array("hello".utf8), to: target)
        XCTAssertEqual(client.receive()?.bytes, Array("plain:hello".utf8))
        XCTAssertEqual(upstream.waitForCount(1), 1)
        XCTAssertEqual(Self.parse(upstream.datagrams[0].bytes), Parsed(source: client.localAddress, destination: target, payload: Array("hello".utf8)))
    }

    func testMirrorCopiesCarryTheClientToEveryUpstream() throws {
        let first = try proxyReadingUpstream(), second = try proxyReadingUpstream()
        let (_, bound, status) = try startDaemonWithStatus(
            """
            [listener copy]
            listen = 0.0.0.0:0, [::1]:0
            mode = mirror
            upstream = \(first.address), \(second.address)
            proxy_protocol = v2
            """)
        let addresses = try XCTUnwrap(bound["copy"])
        let targets = [SocketAddress(ip: .v4(0x7F00_0003), port: addresses[0].port), addresses[1]]
        var expected: [Parsed] = []
        for (i, target) in targets.enumerated() {
            let client = try UDPClient(ipv6: target.ip.isIPv6)
            for k in 0..<3 {
                let p = payload(64 + k, seed: UInt64(100 * i + k))
                client.send(p, to: target)
                expected.append(Parsed(source: client.localAddress, destination: target, payload: p))
            }
            // Copies of one client's datagrams arrive in order; the second client sends after.
            XCTAssertEqual(first.waitForCount(expected.count), expected.count)
            XCTAssertEqual(second.waitForCount(expected.count), expected.count)
        }
        for upstream in [first, second] {
            XCTAssertEqual(upstream.datagrams.map { Self.parse($0.bytes) }, expected.map { Optional($0) })
        }
        XCTAssertEqual(try listenerStatus(status, "copy")["proxy_protocol"] as? String, "v2")
    }

    func testListenersWithoutTheKeySendPlainDatagramsAndSayOff() throws {
        let upstream = try UpstreamServer()
        addTeardownBlock { upstream.stop() }
        let (_, bound, status) = try startDaemonWithStatus(
            """
            [listener fwd]
            listen = 127.0.0.1:0
            mode = forward
            upstream = \(upstream.address)
            """)
        let client = try UDPClient()
        XCTAssertEqual(echo(client, try XCTUnwrap(bound["fwd"]?.first), "as sent"), "as sent")
        XCTAssertEqual(upstream.datagrams.map(\.bytes), [Array("as sent".utf8)])
        XCTAssertEqual(try listenerStatus(status, "fwd")["proxy_protocol"] as? String, "off")
        XCTAssertTrue(try httpBody("/metrics", from: status).contains("\nudprelayd_listener_proxy_protocol{listener=\"fwd\"} 0\n"))
    }

    // MARK: dnsdist

    /// A DNS query for example.test. A with id `id`.
    static func query(id: UInt16) -> [UInt8] {
        [UInt8(id >> 8), UInt8(id & 0xFF), 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]
            + [7] + Array("example".utf8) + [4] + Array("test".utf8) + [0, 0, 1, 0, 1]
    }

    /// The IPv4 address of the one A record of an answer to `query(id:)`, nil otherwise.
    static func answer(_ r: [UInt8], id: UInt16) -> [UInt8]? {
        guard r.count >= 12 + 4, r[0] == UInt8(id >> 8), r[1] == UInt8(id & 0xFF), r[2] & 0x80 != 0, r[3] & 0x0F == 0,
            r[6] == 0, r[7] == 1
        else { return nil }
        return Array(r.suffix(4))
    }

    /// dnsdist accepts PROXY v2 over UDP from 127.0.0.0/8 (`setProxyProtocolACL`) and drops
    /// queries from there without a valid header. It answers 192.0.2.1 only when the header
    /// names the test's client (address and port), 192.0.2.2 for any other, and logs the source
    /// and destination it read. A query through udprelayd must get 192.0.2.1, and dnsdist must
    /// have seen the relay's listen address as the destination.
    func testDnsdistSeesTheOriginalClient() throws {
        for ipv6 in [false, true] {
            let client = try UDPClient(ipv6: ipv6)
            let dnsdist = try Dnsdist(
                """
                setProxyProtocolACL({'127.0.0.0/8'})
                addAction(LuaRule(function(dq) io.stderr:write('query from ' .. dq.remoteaddr:toStringWithPort() .. ' to ' .. dq.localaddr:toStringWithPort() .. '\\n'); return false end), NoneAction())
                addAction(LuaRule(function(dq) return dq.remoteaddr:toStringWithPort() == '\(client.localAddress)' end), SpoofAction('192.0.2.1'))
                addAction(AllRule(), SpoofAction('192.0.2.2'))
                """, test: self)
            let port = dnsdist.port
            func logText() -> String { dnsdist.log }

            // The header is required: a plain query from loopback is dropped.
            let direct = try UDPClient()
            direct.send(Self.query(id: 7), to: SocketAddress(ip: .v4(0x7F00_0001), port: port))

            let (daemon, bound) = try startDaemon(
                """
                [listener dns]
                listen = \(ipv6 ? "[::1]:0" : "127.0.0.1:0")
                mode = forward
                upstream = 127.0.0.1:\(port)
                proxy_protocol = v2
                """)
            let address = try XCTUnwrap(bound["dns"]?.first)
            // dnsdist has bound its UDP socket once it logs "Listening on"; one retry covers a
            // query that arrives before its receive thread runs.
            var reply: [UInt8]?
            for id in UInt16(1)...3 where reply == nil {
                client.send(Self.query(id: id), to: address)
                reply = client.receive(timeout: 3).flatMap { Self.answer($0.bytes, id: id) }
            }
            XCTAssertEqual(reply, [192, 0, 2, 1], "dnsdist answered as for another client, or not at all: \(logText())")
            XCTAssertTrue(
                waitUntil(5) { logText().contains("query from \(client.localAddress) to \(address)") },
                "dnsdist did not log the client and the relay's address: \(logText())")
            XCTAssertNil(direct.receive(timeout: 0.5), "a query without a header was answered: the ACL does not hold")
            XCTAssertEqual(daemon.stop(), 0)
        }
    }
}
