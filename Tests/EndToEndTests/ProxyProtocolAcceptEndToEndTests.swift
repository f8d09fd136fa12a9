import Foundation
import TestSupport
import UDPRelayConfig
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// `accept_proxy_protocol = v2` with the real binary: a proxy on 127.0.0.2 (the only address in
/// `proxy_protocol_from`) sends datagrams whose PROXY v2 headers name made-up clients
/// (198.18.0.1:1111, 198.18.0.2:2222, [2001:db8::1]:3333: only bytes in a header); the relay
/// treats each as its own client, and replies go back to the proxy without a header.
final class ProxyProtocolAcceptEndToEndTests: XCTestCase {
    static let proxyAddress = SocketAddress(ip: .v4(0x7F00_0002), port: 0)

    /// A PROXY v2 header (command PROXY, DGRAM) from `client` to `destination`, written by hand
    /// from HAProxy's proxy-protocol.txt, section 2.2 (not with the daemon's code).
    static func header(client: SocketAddress, to destination: SocketAddress) -> [UInt8] {
        let signature: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]
        func bytes(_ ip: IPAddress) -> [UInt8] {
            switch ip {
            case .v4(let a): return (0..<4).map { UInt8(truncatingIfNeeded: a >> (24 - 8 * UInt32($0))) }
            case .v6(let high, let low): return (0..<16).map { UInt8(truncatingIfNeeded: ($0 < 8 ? high : low) >> (56 - 8 * UInt64($0 % 8))) }
            }
        }
        func port(_ p: UInt16) -> [UInt8] { [UInt8(p >> 8), UInt8(p & 0xFF)] }
        if case .v4 = client.ip, case .v4 = destination.ip {
            return signature + [0x21, 0x12, 0, 12] + bytes(client.ip) + bytes(destination.ip) + port(client.port) + port(destination.port)
        }
        let mapped: (IPAddress) -> [UInt8] = {
            if case .v4 = $0 { return [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF] + bytes($0) }
            return bytes($0)
        }
        return signature + [0x21, 0x22, 0, 36] + mapped(client.ip) + mapped(destination.ip) + port(client.port) + port(destination.port)
    }

    static let first = SocketAddress(ip: .v4(0xC612_0001), port: 1111)
    static let second = SocketAddress(ip: .v4(0xC612_0002), port: 2222)
    static let third = SocketAddress(ip: .v6(high: 0x2001_0DB8_0000_0000, low: 1), port: 3333)

    /// An upstream that reads the relay's own PROXY header and answers with the payload alone.
    func proxyReadingUpstream() throws -> UpstreamServer {
        let server = try UpstreamServer(reply: { ProxyProtocolEndToEndTests.parse($0).map { Array("plain:".utf8) + $0.payload } })
        addTeardownBlock { server.stop() }
        return server
    }

    func drops(_ status: SocketAddress, _ listener: String) throws -> [String: Int] {
        try XCTUnwrap(try listenerStatus(status, listener)["drops"] as? [String: Int])
    }

    /// The drop counters, for failure messages.
    func dropsText(_ status: SocketAddress, _ listener: String) -> String {
        (try? drops(status, listener)).map { "\($0)" } ?? "no status"
    }

    /// Two (three) clients behind one proxy get their own sessions, each sent on with a PROXY
    /// header naming it; replies reach the proxy plain; a malformed or missing header from the
    /// proxy is dropped and counted; a header from a source that is not a listed proxy is payload.
    func testClientsBehindAProxyGetTheirOwnSessionsAndTheHeaderNamesThem() throws {
        let upstream = try proxyReadingUpstream()
        let (daemon, bound, status) = try startDaemonWithStatus(
            """
            [listener fwd]
            listen = 127.0.0.1:0
            mode = forward
            upstream = \(upstream.address)
            proxy_protocol = v2
            accept_proxy_protocol = v2
            proxy_protocol_from = 127.0.0.2/32, 2001:db8:ffff::/48
            """)
        let address = try XCTUnwrap(bound["fwd"]?.first)
        let proxy = try UDPClient(bind: Self.proxyAddress)
        let sent: [(SocketAddress, String)] = [(Self.first, "a1"), (Self.second, "b1"), (Self.first, "a2"), (Self.third, "c1")]
        for (k, (client, text)) in sent.enumerated() {
            proxy.send(Self.header(client: client, to: address) + Array(text.utf8), to: address)
            let reply = try XCTUnwrap(proxy.receive(timeout: 5), "no reply to \(text)")
            XCTAssertEqual(String(decoding: reply.bytes, as: UTF8.self), "plain:\(text)", "the reply reaches the proxy without a header")
            XCTAssertEqual(reply.from, address)
            XCTAssertEqual(upstream.waitForCount(k + 1), k + 1)
        }
        let got = upstream.datagrams
        let parsed = got.map { ProxyProtocolEndToEndTests.parse($0.bytes) }
        XCTAssertEqual(parsed.map { $0?.source }, sent.map { $0.0 }, "the relay's header names the client the proxy's header named")
        XCTAssertEqual(parsed.map { $0.map { String(decoding: $0.payload, as: UTF8.self) } }, sent.map { $0.1 })
        // An IPv6 client makes an INET6 header, with the IPv4 destination mapped (::ffff:127.0.0.1).
        let mapped = SocketAddress(ip: .v6(high: 0, low: 0xFFFF_7F00_0001), port: address.port)
        XCTAssertEqual(parsed.map { $0?.destination }, sent.map { $0.0.ip.isIPv6 ? mapped : address })
        // One session (one upstream source port) per client, not one for the proxy.
        XCTAssertEqual(got[0].from, got[2].from, "a client's datagrams share its session")
        XCTAssertEqual(Set([got[0].from, got[1].from, got[3].from]).count, 3, "three clients, three sessions: \(got.map(\.from))")
        let sessions = try XCTUnwrap(
            try JSONSerialization.jsonObject(with: Data(try httpBody("/sessions", from: status).utf8)) as? [String: Any])
        let clients = try XCTUnwrap(sessions["sessions"] as? [[String: Any]]).compactMap { $0["client"] as? String }
        XCTAssertEqual(Set(clients), Set(["\(Self.first)", "\(Self.second)", "\(Self.third)"]))

        // From the proxy: a header of version 1, then no header at all. Dropped and counted.
        var bad = Self.header(client: Self.first, to: address) + Array("v1".utf8)
        bad[12] = 0x11
        proxy.send(bad, to: address)
        proxy.send(Array("no header here, just a payload".utf8), to: address)
        XCTAssertNil(proxy.receive(timeout: 0.5), "a datagram without a valid header was relayed")
        XCTAssertTrue(waitUntil(5) { (try? self.drops(status, "fwd")["proxy_header_invalid"]) == 2 }, dropsText(status, "fwd"))
        XCTAssertEqual(upstream.datagrams.count, sent.count)

        // From 127.0.0.1, not a listed proxy: the header is payload, the sender is the client.
        let direct = try UDPClient()
        let carried = Self.header(client: Self.second, to: address) + Array("x".utf8)
        direct.send(carried, to: address)
        XCTAssertEqual(direct.receive(timeout: 5)?.bytes, Array("plain:".utf8) + carried)
        XCTAssertEqual(upstream.waitForCount(sent.count + 1), sent.count + 1)
        let passed = try XCTUnwrap(ProxyProtocolEndToEndTests.parse(upstream.datagrams[sent.count].bytes))
        XCTAssertEqual(passed.source, direct.localAddress)
        XCTAssertEqual(passed.payload, carried)

        let l = try listenerStatus(status, "fwd")
        XCTAssertEqual(l["accept_proxy_protocol"] as? String, "v2")
        XCTAssertEqual((l["sessions"] as? [String: Any])?["active"] as? Int, 4)
        XCTAssertTrue(try httpBody("/metrics", from: status).contains("\nudprelayd_listener_accept_proxy_protocol{listener=\"fwd\"} 2\n"))
        XCTAssertTrue(try httpBody("/", from: status).contains("accepts PROXY (v2)"))
        let totals = try stopAndTotals(daemon, "fwd")
        XCTAssertEqual(DaemonProcess.count("drop.proxy_header_invalid", in: totals), 2, totals)
    }

    /// `allow`/`deny` and `balance = hash` see the client the header names, not the proxy.
    func testDenyAndHashSeeTheClientTheHeaderNames() throws {
        let upstreams = try (0..<2).map { _ in try UpstreamServer() }
        for u in upstreams { addTeardownBlock { u.stop() } }
        let (_, bound, status) = try startDaemonWithStatus(
            """
            [listener lb]
            listen = 127.0.0.1:0
            mode = balance
            balance = hash
            upstream = \(upstreams[0].address), \(upstreams[1].address)
            deny = 198.18.0.2/32
            accept_proxy_protocol = v2
            proxy_protocol_from = 127.0.0.2/32
            """)
        let address = try XCTUnwrap(bound["lb"]?.first)
        let proxy = try UDPClient(bind: Self.proxyAddress)
        proxy.send(Self.header(client: Self.second, to: address) + Array("denied".utf8), to: address)
        XCTAssertNil(proxy.receive(timeout: 0.5), "a denied client was relayed")
        XCTAssertTrue(waitUntil(5) { (try? self.drops(status, "lb")["denied"]) == 1 }, dropsText(status, "lb"))
        // Clients 198.18.0.1:P for many P: hashed apart, so both upstreams get some (with
        // the proxy as the client, one upstream would get them all).
        for p in UInt16(1000)..<1016 {
            let client = SocketAddress(ip: Self.first.ip, port: p)
            proxy.send(Self.header(client: client, to: address) + Array("h\(p)".utf8), to: address)
            XCTAssertEqual(proxy.receive(timeout: 5).map { String(decoding: $0.bytes, as: UTF8.self) }, "h\(p)")
        }
        XCTAssertEqual(upstreams.map { $0.datagrams.count }.reduce(0, +), 16)
        XCTAssertTrue(upstreams.allSatisfy { !$0.datagrams.isEmpty }, "\(upstreams.map { $0.datagrams.count })")
        XCTAssertEqual(try drops(status, "lb")["proxy_header_invalid"], 0)
    }

    /// Echo answers the proxy with the payload alone; LOCAL (a proxy's health check) is served
    /// as from the proxy itself; the rate limit is per client named.
    func testEchoAnswersThePayloadWithoutTheHeader() throws {
        let (_, bound, status) = try startDaemonWithStatus(
            """
            [listener e]
            listen = 127.0.0.1:0
            accept_proxy_protocol = v2
            proxy_protocol_from = 127.0.0.2/32
            rate_limit = 1/h
            rate_burst = 1
            """)
        let address = try XCTUnwrap(bound["e"]?.first)
        let proxy = try UDPClient(bind: Self.proxyAddress)
        for client in [Self.first, Self.third] {
            proxy.send(Self.header(client: client, to: address) + Array("ping".utf8), to: address)
            let reply = try XCTUnwrap(proxy.receive(timeout: 5), "no echo for \(client)")
            XCTAssertEqual(reply.bytes, Array("ping".utf8))
            XCTAssertEqual(reply.from, address)
        }
        let local: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, 0x20, 0x00, 0x00, 0x00]
        proxy.send(local + Array("health".utf8), to: address)
        XCTAssertEqual(proxy.receive(timeout: 5)?.bytes, Array("health".utf8))
        // Each client (and the proxy itself, by LOCAL) had its one datagram an hour.
        proxy.send(Self.header(client: Self.first, to: address) + Array("again".utf8), to: address)
        XCTAssertNil(proxy.receive(timeout: 0.5))
        XCTAssertTrue(waitUntil(5) { (try? self.drops(status, "e")["rate_limited"]) == 1 }, dropsText(status, "e"))
        proxy.send(Self.header(client: Self.second, to: address) + Array("new".utf8), to: address)
        XCTAssertEqual(proxy.receive(timeout: 5)?.bytes, Array("new".utf8))
    }

    /// A proxy on IPv6 (`::1/128`), relaying an IPv4 and an IPv6 client to a forward listener
    /// on a wildcard address: replies reach the proxy from the address it sent to.
    func testAProxyOverIPv6() throws {
        let upstream = try proxyReadingUpstream()
        let (_, bound) = try startDaemon(
            """
            [listener six]
            listen = [::]:0
            mode = forward
            upstream = \(upstream.address)
            proxy_protocol = v2
            accept_proxy_protocol = v2
            proxy_protocol_from = ::1/128
            """)
        let address = SocketAddress(ip: .v6(high: 0, low: 1), port: try XCTUnwrap(bound["six"]?.first).port)
        let proxy = try UDPClient(ipv6: true)
        for (k, client) in [Self.first, Self.third].enumerated() {
            proxy.send(Self.header(client: client, to: address) + Array("six\(k)".utf8), to: address)
            let reply = try XCTUnwrap(proxy.receive(timeout: 5), "no reply for \(client)")
            XCTAssertEqual(String(decoding: reply.bytes, as: UTF8.self), "plain:six\(k)")
            XCTAssertEqual(reply.from, address)
        }
        XCTAssertEqual(upstream.waitForCount(2), 2)
        // The listener's address is IPv6, so both headers are INET6, the IPv4 client mapped.
        let mappedFirst = SocketAddress(ip: .v6(high: 0, low: 0xFFFF_C612_0001), port: Self.first.port)
        XCTAssertEqual(upstream.datagrams.map { ProxyProtocolEndToEndTests.parse($0.bytes)?.source }, [mappedFirst, Self.third])
    }

    /// Mirror: every copy's header names the client the proxy's header named.
    func testMirrorCopiesNameTheClientBehindTheProxy() throws {
        let upstreams = try (0..<2).map { _ in try proxyReadingUpstream() }
        let (_, bound) = try startDaemon(
            """
            [listener copy]
            listen = 127.0.0.1:0
            mode = mirror
            upstream = \(upstreams[0].address), \(upstreams[1].address)
            proxy_protocol = v2
            accept_proxy_protocol = v2
            proxy_protocol_from = 127.0.0.2/32
            """)
        let address = try XCTUnwrap(bound["copy"]?.first)
        let proxy = try UDPClient(bind: Self.proxyAddress)
        proxy.send(Self.header(client: Self.first, to: address) + Array("m1".utf8), to: address)
        proxy.send(Self.header(client: Self.second, to: address) + Array("m2".utf8), to: address)
        for u in upstreams {
            XCTAssertEqual(u.waitForCount(2), 2)
            let parsed = u.datagrams.map { ProxyProtocolEndToEndTests.parse($0.bytes) }
            XCTAssertEqual(parsed.map { $0?.source }, [Self.first, Self.second])
            XCTAssertEqual(parsed.map { $0.map { String(decoding: $0.payload, as: UTF8.self) } }, ["m1", "m2"])
        }
    }

    // MARK: dnsdist

    /// An answer to a DNS query: the query with QR set, one A record (192.0.2.7) after it.
    static func dnsAnswer(_ q: [UInt8]) -> [UInt8]? {
        guard q.count >= 12 else { return nil }
        var r = q
        r[2] |= 0x80
        r[3] = 0x80
        r[6] = 0
        r[7] = 1
        return r + [0xC0, 0x0C, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 7]
    }

    /// dnsdist, a PROXY v2 sender nobody here wrote (`newServer{useProxyProtocol=true}`), in
    /// front of a udprelayd listener that accepts its headers from 127.0.0.0/8 and relays with
    /// `proxy_protocol = v2` to a DNS responder. A query to dnsdist is answered; udprelayd's
    /// session (`/sessions`, `session_log`) and the header its upstream reads name the querier's
    /// own address and port, not dnsdist's.
    func testQueriesThroughDnsdistAreAttributedToTheirClient() throws {
        guard FileManager.default.isExecutableFile(atPath: Dnsdist.path) else {
            throw XCTSkip("dnsdist is not installed (scripts/install-deps.sh test installs it; apt-get install dnsdist)")
        }
        let responder = try UpstreamServer(reply: { d in
            ProxyProtocolEndToEndTests.parse(d).flatMap { Self.dnsAnswer($0.payload) }
        })
        addTeardownBlock { responder.stop() }
        let (daemon, bound, status) = try startDaemonWithStatus(
            """
            [listener dns]
            listen = 127.0.0.1:0
            mode = forward
            upstream = \(responder.address)
            proxy_protocol = v2
            accept_proxy_protocol = v2
            proxy_protocol_from = 127.0.0.0/8
            session_log = yes
            session_timeout = 1s
            """)
        let relay = try XCTUnwrap(bound["dns"]?.first)
        let dnsdist = try Dnsdist("newServer({address='\(relay)', useProxyProtocol=true})", test: self)
        func logText() -> String { dnsdist.log }

        let client = try UDPClient()
        var reply: [UInt8]?
        // dnsdist has bound its socket once it logs "Listening on"; retries cover a query that
        // arrives before its receive thread runs.
        for id in UInt16(1)...3 where reply == nil {
            client.send(ProxyProtocolEndToEndTests.query(id: id), to: dnsdist.address)
            reply = client.receive(timeout: 3).flatMap { ProxyProtocolEndToEndTests.answer($0.bytes, id: id) }
        }
        XCTAssertEqual(reply, [192, 0, 2, 7], "no answer through dnsdist and udprelayd: \(logText())")

        // The header udprelayd sent on names the querier (dnsdist's health checks, if any, come
        // from dnsdist itself and are left out).
        let queriers = responder.datagrams.compactMap { ProxyProtocolEndToEndTests.parse($0.bytes)?.source }
        XCTAssertTrue(queriers.contains(client.localAddress), "the relay's header did not name \(client.localAddress): \(queriers)")
        let sessions = try XCTUnwrap(
            try JSONSerialization.jsonObject(with: Data(try httpBody("/sessions", from: status).utf8)) as? [String: Any])
        let clients = try XCTUnwrap(sessions["sessions"] as? [[String: Any]]).compactMap { $0["client"] as? String }
        XCTAssertTrue(clients.contains("\(client.localAddress)"), "no session of \(client.localAddress) in \(clients)")
        XCTAssertEqual(try listenerStatus(status, "dns")["drops"].flatMap { ($0 as? [String: Int])?["proxy_header_invalid"] }, 0)
        // The session's record when it ends names the client too.
        XCTAssertTrue(
            waitUntil(10) { daemon.log.contains { $0.contains("session ended") && $0.contains("\(client.localAddress)") } },
            "no session record of \(client.localAddress): \(daemon.log.suffix(10).joined(separator: "\n"))")
    }
}
