import Foundation
import TestSupport
import UDPRelayConfig
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// `balance = hash` between real processes: two instances with the same upstreams, listed in
/// opposite orders, send every client to the same upstream; `hash_key = address` keeps every
/// port of one client address on one upstream.
final class FleetHashEndToEndTests: XCTestCase {
    /// Four upstreams, each prefixing its replies with its own tag.
    func taggedUpstreams() throws -> [(tag: String, server: UpstreamServer)] {
        try (0..<4).map { i in
            let tag = "u\(i)"
            let server = try UpstreamServer(reply: { Array("\(tag):".utf8) + $0 })
            addTeardownBlock { server.stop() }
            return (tag, server)
        }
    }

    func balancer(_ upstreams: [UpstreamServer], extra: String = "") -> String {
        "[listener lb]\nlisten = 127.0.0.1:0\nmode = balance\nbalance = hash\n\(extra)upstream = "
            + upstreams.map { "\($0.address)" }.joined(separator: ", ") + "\n"
    }

    /// The tag of the upstream that answered `client`'s datagram through `relay`.
    func upstreamTag(_ client: UDPClient, _ relay: SocketAddress, _ text: String) throws -> String {
        let reply = try XCTUnwrap(echo(client, relay, text), "no reply to \(text) through \(relay)")
        XCTAssertTrue(reply.hasSuffix(":" + text), reply)
        return String(reply.prefix { $0 != ":" })
    }

    func testTwoInstancesWithTheListInOppositeOrdersAgreeOnEveryClient() throws {
        let upstreams = try taggedUpstreams()
        let servers = upstreams.map(\.server)
        let (_, a) = try startDaemon(balancer(servers))
        let (_, b) = try startDaemon(balancer(servers.reversed()))
        let relayA = try XCTUnwrap(a["lb"]?.first)
        let relayB = try XCTUnwrap(b["lb"]?.first)
        var used: Set<String> = []
        for i in 0..<24 {
            // One socket, so both instances see the same client address and port.
            let client = try UDPClient()
            let viaA = try upstreamTag(client, relayA, "c\(i)")
            let viaB = try upstreamTag(client, relayB, "c\(i)")
            XCTAssertEqual(viaA, viaB, "client \(client.localAddress): instance A chose \(viaA), instance B \(viaB)")
            used.insert(viaA)
        }
        XCTAssertGreaterThan(used.count, 1, "24 clients all on one upstream: the hash does not spread")
    }

    func testAddressKeyKeepsEveryPortOfAClientAddressOnOneUpstream() throws {
        let upstreams = try taggedUpstreams()
        let (_, bound) = try startDaemon(balancer(upstreams.map(\.server), extra: "hash_key = address\n"))
        let relay = try XCTUnwrap(bound["lb"]?.first)
        // A NAT that rebinds: one address, a new source port each time.
        var tags: Set<String> = []
        for i in 0..<12 {
            tags.insert(try upstreamTag(try UDPClient(bind: SocketAddress(ip: .v4(0x7F00_0001), port: 0)), relay, "p\(i)"))
        }
        XCTAssertEqual(tags.count, 1, "12 ports of 127.0.0.1 reached \(tags.sorted()); hash_key = address keeps them on one")
        // Different addresses (127.0.0.2 to 127.0.0.17, all loopback) still spread.
        var byAddress: Set<String> = []
        for host in 2...17 {
            let client = try UDPClient(bind: SocketAddress(ip: .v4(0x7F00_0000 + UInt32(host)), port: 0))
            let first = try upstreamTag(client, relay, "a\(host)")
            let again = try upstreamTag(try UDPClient(bind: SocketAddress(ip: .v4(0x7F00_0000 + UInt32(host)), port: 0)), relay, "b\(host)")
            XCTAssertEqual(first, again, "127.0.0.\(host): a new port moved it from \(first) to \(again)")
            byAddress.insert(first)
        }
        XCTAssertGreaterThan(byAddress.count, 1, "16 client addresses all on one upstream")
    }
}
