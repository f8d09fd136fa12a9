import Foundation
import TestSupport
import UDPRelayConfig
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// `spoof = yes` end to end, in four network namespaces the test makes: clients, the relay and
/// two collectors, joined by three veth pairs through the relay, with addresses from
/// 198.18.0.0/15 and 2001:db8::/32 only and no route anywhere else. The collectors route the
/// clients' networks back through the relay (as a real network would, so a strict `rp_filter`
/// there would pass them). Sockets are made in their namespace by a thread that enters it, and
/// the daemon is started from a thread in the relay's (TransparentEndToEndTests' helpers).
final class SpoofEndToEndTests: XCTestCase {
    typealias T = TransparentEndToEndTests
    static let clientV4 = "198.18.1.2", relayClientSideV4 = "198.18.1.1"
    static let clientV6 = "2001:db8:1::2", relayClientSideV6 = "2001:db8:1::1"
    /// Collector `n` (1 or 2) is .2 on network 198.18.(2+n).0/24 and 2001:db8:(2+n)::/64, the
    /// relay .1 on it.
    static func collectorV4(_ n: Int) -> String { "198.18.\(2 + n).2" }
    static func collectorV6(_ n: Int) -> String { "2001:db8:\(2 + n)::2" }
    /// On collector 1's network but nobody's: neighbour discovery for it never completes.
    static let unreachableV4 = "198.18.3.99"

    struct Topology {
        let client: String, relay: String, collectors: [String]

        init() throws {
            let tag = "\(getpid())-\(UInt32.random(in: 0...UInt32.max) % 100_000)"
            client = "udprelayd-sc-\(tag)"
            relay = "udprelayd-sr-\(tag)"
            collectors = ["udprelayd-s1-\(tag)", "udprelayd-s2-\(tag)"]
            let (c, r) = (client, relay)
            var commands: [[String]] = []
            for ns in [c, r] + collectors { commands.append(["netns", "add", ns]) }
            // No duplicate address detection anywhere (link-local addresses included): the
            // addresses are usable at once.
            for ns in [c, r] + collectors {
                commands.append(["netns", "exec", ns, "sysctl", "-q", "-w", "net.ipv6.conf.default.accept_dad=0", "net.ipv6.conf.all.accept_dad=0"])
            }
            commands += [
                ["link", "add", "sc0", "netns", c, "type", "veth", "peer", "name", "sr0", "netns", r],
                ["-n", c, "addr", "add", "\(SpoofEndToEndTests.clientV4)/24", "dev", "sc0"],
                ["-n", c, "addr", "add", "\(SpoofEndToEndTests.clientV6)/64", "dev", "sc0", "nodad"],
                ["-n", r, "addr", "add", "\(SpoofEndToEndTests.relayClientSideV4)/24", "dev", "sr0"],
                ["-n", r, "addr", "add", "\(SpoofEndToEndTests.relayClientSideV6)/64", "dev", "sr0", "nodad"],
                ["-n", c, "link", "set", "lo", "up"], ["-n", c, "link", "set", "sc0", "up"],
                ["-n", r, "link", "set", "lo", "up"], ["-n", r, "link", "set", "sr0", "up"],
            ]
            for (i, ns) in collectors.enumerated() {
                let n = i + 1
                commands += [
                    ["link", "add", "sr\(n)", "netns", r, "type", "veth", "peer", "name", "sk0", "netns", ns],
                    ["-n", r, "addr", "add", "198.18.\(2 + n).1/24", "dev", "sr\(n)"],
                    ["-n", r, "addr", "add", "2001:db8:\(2 + n)::1/64", "dev", "sr\(n)", "nodad"],
                    ["-n", ns, "addr", "add", "\(SpoofEndToEndTests.collectorV4(n))/24", "dev", "sk0"],
                    ["-n", ns, "addr", "add", "\(SpoofEndToEndTests.collectorV6(n))/64", "dev", "sk0", "nodad"],
                    ["-n", r, "link", "set", "sr\(n)", "up"],
                    ["-n", ns, "link", "set", "lo", "up"], ["-n", ns, "link", "set", "sk0", "up"],
                    ["-n", ns, "route", "add", "198.18.1.0/24", "via", "198.18.\(2 + n).1"],
                    ["-n", ns, "-6", "route", "add", "2001:db8:1::/64", "via", "2001:db8:\(2 + n)::1"],
                ]
            }
            do {
                for command in commands { try T.Topology.ip(command) }
            } catch {
                remove()
                throw error
            }
        }

        func remove() {
            for ns in [client, relay] + collectors { try? T.Topology.ip(["netns", "del", ns]) }
        }
    }

    /// IPv4 and IPv6 clients, five of each on their own ports, through one spoofing mirror with
    /// a collector of each family in each collector namespace and one IPv4 collector nobody
    /// answers for: each collector receives every copy of its family, with the exact address
    /// and port of the client that sent it and its payload intact (a UDP socket, so the kernel
    /// checked the UDP checksum). Copies towards the other family are not sent and are counted
    /// on that collector. The unreachable collector's copies wait for a neighbour that never
    /// answers until its socket's small send buffer is full, and still none of the others' is
    /// lost. `/status` and `/metrics` say the listener spoofs.
    func testEachCollectorGetsEveryCopyFromTheClientsOwnAddressAndPort() throws {
        guard getuid() == 0 else { throw XCTSkip("needs root to make network namespaces and raw sockets (CI runs as root)") }
        let topology = try Topology()
        defer { topology.remove() }
        try T.onOwnThread {
            var collectors: [UpstreamServer] = []  // v4 then v6 of collector 1, then of 2
            defer { for c in collectors { c.stop() } }
            for (i, ns) in topology.collectors.enumerated() {
                try T.enter(ns)
                collectors.append(try UpstreamServer(bind: SocketAddress(parsing: "\(Self.collectorV4(i + 1)):0"), reply: nil))
                collectors.append(try UpstreamServer(bind: SocketAddress(parsing: "[\(Self.collectorV6(i + 1))]:0"), reply: nil))
            }
            let collectors4 = [collectors[0], collectors[2]], collectors6 = [collectors[1], collectors[3]]
            try T.enter(topology.client)
            let clients4 = try (0..<5).map { _ in try UDPClient(bind: SocketAddress(parsing: "\(Self.clientV4):0")) }
            let clients6 = try (0..<5).map { _ in try UDPClient(bind: SocketAddress(parsing: "[\(Self.clientV6)]:0")) }
            try T.enter(topology.relay)
            let upstreams = (collectors.map { "\($0.address)" } + ["\(Self.unreachableV4):2055"]).joined(separator: ", ")
            let d = try DaemonProcess(
                config: "[status]\nlisten = 127.0.0.1:0\n"
                    + """
                    [listener copies]
                    listen = \(Self.relayClientSideV4):0, [\(Self.relayClientSideV6)]:0
                    mode = mirror
                    upstream = \(upstreams)
                    spoof = yes
                    sndbuf = 4096
                    workers = 1
                    """)
            defer { d.stop() }
            let bound = try XCTUnwrap(try d.waitUntilReady()["copies"])
            let relay4 = try XCTUnwrap(bound.first { !$0.ip.isIPv6 })
            let relay6 = try XCTUnwrap(bound.first { $0.ip.isIPv6 })
            let statusLine = try XCTUnwrap(d.log.first { $0.contains(" status listening ") })
            let status = try SocketAddress(parsing: try XCTUnwrap(DaemonProcess.field("address", in: statusLine)))

            // Rounds of one datagram per client, each round waited for: 20 rounds, 100
            // datagrams of each family.
            var expected4: [(bytes: [UInt8], from: SocketAddress)] = []
            var expected6: [(bytes: [UInt8], from: SocketAddress)] = []
            let deadline = Date().addingTimeInterval(60)
            for round in 0..<20 where Date() < deadline {
                for (i, c) in clients4.enumerated() {
                    let bytes = Array("v4 client \(i) round \(round)".utf8)
                    c.send(bytes, to: relay4)
                    expected4.append((bytes, c.localAddress))
                }
                for (i, c) in clients6.enumerated() {
                    let bytes = Array("v6 client \(i) round \(round) \(String(repeating: "x", count: i * 100))".utf8)
                    c.send(bytes, to: relay6)
                    expected6.append((bytes, c.localAddress))
                }
                for c in collectors4 { c.waitForCount(expected4.count, timeout: 5) }
                for c in collectors6 { c.waitForCount(expected6.count, timeout: 5) }
            }
            XCTAssertEqual(expected4.count, 100)
            func key(_ d: (bytes: [UInt8], from: SocketAddress)) -> String { "\(d.from) \(d.bytes)" }
            for c in collectors4 {
                XCTAssertEqual(c.datagrams.map(key).sorted(), expected4.map(key).sorted(), "collector \(c.address)")
            }
            for c in collectors6 {
                XCTAssertEqual(c.datagrams.map(key).sorted(), expected6.map(key).sorted(), "collector \(c.address)")
            }
            XCTAssertEqual(Set(collectors4[0].datagrams.map(\.from)), Set(clients4.map(\.localAddress)), "each IPv4 client's own address and port")
            XCTAssertEqual(Set(collectors6[0].datagrams.map(\.from)), Set(clients6.map(\.localAddress)), "each IPv6 client's own address and port")

            let listener = try Self.listenerStatus(status, "copies")
            XCTAssertEqual(listener["spoof"] as? Bool, true)
            XCTAssertTrue(try Self.httpBody("/metrics", from: status).contains("\nudprelayd_listener_spoof{listener=\"copies\"} 1\n"))
            let ups = try XCTUnwrap(listener["upstreams"] as? [[String: Any]])
            func drops(_ address: String) throws -> UInt64? {
                let u = try XCTUnwrap(ups.first { $0["address"] as? String == address }, "\(ups)")
                return (u["counters"] as? [String: Any])?["send_drops"] as? UInt64
            }
            for c in collectors4 { XCTAssertEqual(try drops("\(c.address)"), 100, "the IPv6 clients' copies to \(c.address)") }
            for c in collectors6 { XCTAssertEqual(try drops("\(c.address)"), 100, "the IPv4 clients' copies to \(c.address)") }
            // The IPv6 clients' copies, and the IPv4 ones its full send buffer refused: the
            // buffer did fill, and no other collector lost a copy for it.
            XCTAssertGreaterThan(try drops("\(Self.unreachableV4):2055") ?? 0, 100, "the unreachable collector's buffer filled")
            XCTAssertNotNil(d.waitForLine(containing: "copies from clients of the other address family than the upstream are dropped"))
            XCTAssertEqual(d.stop(), 0)
        }
    }

    /// Raw sockets do not fragment: a copy larger than the MTU of the route to a collector
    /// (1280 towards collector 2 here) is dropped and counted on that collector only; the other
    /// collector gets it, and the next copies that fit reach both. IPv4 and IPv6.
    func testACopyOverTheRoutesMTUIsDroppedAndCountedForThatCollectorOnly() throws {
        guard getuid() == 0 else { throw XCTSkip("needs root to make network namespaces and raw sockets (CI runs as root)") }
        let topology = try Topology()
        defer { topology.remove() }
        try T.Topology.ip(["-n", topology.relay, "link", "set", "sr2", "mtu", "1280"])
        try T.onOwnThread {
            var collectors: [UpstreamServer] = []  // v4 then v6 of collector 1, then of 2
            defer { for c in collectors { c.stop() } }
            for (i, ns) in topology.collectors.enumerated() {
                try T.enter(ns)
                collectors.append(try UpstreamServer(bind: SocketAddress(parsing: "\(Self.collectorV4(i + 1)):0"), reply: nil))
                collectors.append(try UpstreamServer(bind: SocketAddress(parsing: "[\(Self.collectorV6(i + 1))]:0"), reply: nil))
            }
            try T.enter(topology.client)
            let client4 = try UDPClient(bind: SocketAddress(parsing: "\(Self.clientV4):0"))
            let client6 = try UDPClient(bind: SocketAddress(parsing: "[\(Self.clientV6)]:0"))
            try T.enter(topology.relay)
            let d = try DaemonProcess(
                config: "[status]\nlisten = 127.0.0.1:0\n"
                    + """
                    [listener m4]
                    listen = \(Self.relayClientSideV4):0
                    mode = mirror
                    upstream = \(collectors[0].address), \(collectors[2].address)
                    spoof = yes
                    [listener m6]
                    listen = [\(Self.relayClientSideV6)]:0
                    mode = mirror
                    upstream = \(collectors[1].address), \(collectors[3].address)
                    spoof = yes
                    """)
            defer { d.stop() }
            let bound = try d.waitUntilReady()
            let statusLine = try XCTUnwrap(d.log.first { $0.contains(" status listening ") })
            let status = try SocketAddress(parsing: try XCTUnwrap(DaemonProcess.field("address", in: statusLine)))
            for (name, client, first, second) in [
                ("m4", client4, collectors[0], collectors[2]), ("m6", client6, collectors[1], collectors[3]),
            ] {
                let relay = try XCTUnwrap(bound[name]?.first)
                let big = [UInt8](repeating: 0x5A, count: 1300)
                client.send(big, to: relay)
                XCTAssertEqual(first.waitForCount(1, timeout: 5), 1, "\(name): the collector behind MTU 1500 gets the large copy")
                client.send(Array("small".utf8), to: relay)
                XCTAssertEqual(first.waitForCount(2, timeout: 5), 2)
                XCTAssertEqual(second.waitForCount(1, timeout: 5), 1)
                XCTAssertEqual(first.datagrams.map(\.bytes), [big, Array("small".utf8)], name)
                XCTAssertEqual(second.datagrams.map(\.bytes), [Array("small".utf8)], "\(name): the large copy is not sent behind MTU 1280")
                XCTAssertEqual(second.datagrams.map(\.from), [client.localAddress], name)
                let ups = try XCTUnwrap(try Self.listenerStatus(status, name)["upstreams"] as? [[String: Any]])
                let drops = ups.map { ($0["counters"] as? [String: Any])?["send_drops"] as? UInt64 }
                XCTAssertEqual(drops, [0, 1], "\(name): counted on the collector behind the small MTU only")
            }
            XCTAssertEqual(d.stop(), 0)
        }
    }

    /// Without CAP_NET_RAW (all capabilities dropped with setpriv when the runner is root; as
    /// it is otherwise) the daemon refuses a spoofing mirror, naming the file, line, listener
    /// and what is missing: exit 78 at --check-config and at start. Needs no namespace.
    func testWithoutCapNetRawTheDaemonRefusesWithTheDocumentedMessage() throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("udprelayd-spoof-\(UUID().uuidString).ini").path
        try T.config(
            """
            [listener copies]
            listen = 127.0.0.1:0
            mode = mirror
            upstream = 127.0.0.1:2055, [::1]:2055
            spoof = yes
            """
        ).write(toFile: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: file) }
        let expected = "\(file):7: [listener copies] spoof: spoof = yes needs CAP_NET_RAW"
        for arguments in [["--check-config"], []] {
            let run = try T.runWithoutCapabilities(["--config", file] + arguments)
            XCTAssertEqual(run.status, 78, "\(arguments): \(run.stderr)")
            XCTAssertTrue(run.stderr.contains(expected), "\(arguments): \(run.stderr)")
            XCTAssertTrue(run.stderr.contains("systemd/spoof.conf"), run.stderr)
        }
    }
}
