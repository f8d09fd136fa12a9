import TestSupport
import XCTest

@testable import UDPRelayConfig

final class RelayConfigTests: XCTestCase, ConfigFileTests {
    func testRelayKeysAndDefaults() throws {
        let c = try parse(
            """
            [listener f]
            listen = 127.0.0.1:0
            mode = forward
            upstream = dns.example.:53
            [listener b]
            listen = 127.0.0.1:0
            mode = balance
            upstream = 192.0.2.1:53, [2001:db8::1]:53, resolver-2.example:5353
            balance = hash
            session_timeout = 250ms
            max_sessions = 100
            session_max_replies = 1
            session_log = yes
            session_log_rate = 500
            resolve_interval = 5m
            max_fails = 0
            fail_timeout = 30s
            health_probe = 0x0d0a
            health_expect = "OK"
            health_interval = 2s
            health_fails = 3
            [listener m]
            listen = 127.0.0.1:0
            mode = mirror
            upstream = 127.0.0.1:514, 127.0.0.2:514
            sample = 1/10
            """)
        let f = c.listeners[0], b = c.listeners[1], m = c.listeners[2]
        XCTAssertEqual(f.mode, .forward)
        XCTAssertEqual(f.upstreams, [UpstreamEndpoint(host: .name("dns.example."), port: 53)])
        XCTAssertNil(f.upstreams[0].literal)
        XCTAssertEqual(f.balance, .roundRobin)
        XCTAssertEqual(f.sessions, SessionSettings(timeout: .seconds(60), maxSessions: 65536, maxReplies: nil, log: false, logRate: 100))
        XCTAssertEqual(f.health, HealthSettings(maxFails: 3, failTimeout: .seconds(10), probe: nil, expect: [], interval: .seconds(5), probeFails: 1))
        XCTAssertEqual(f.resolveInterval, .seconds(30))
        XCTAssertEqual(b.upstreams.map(\.description), ["192.0.2.1:53", "[2001:db8::1]:53", "resolver-2.example:5353"])
        XCTAssertEqual(b.upstreams[0].literal?.description, "192.0.2.1:53")
        XCTAssertEqual(b.balance, .hash)
        XCTAssertEqual(b.sessions, SessionSettings(timeout: .milliseconds(250), maxSessions: 100, maxReplies: 1, log: true, logRate: 500))
        XCTAssertEqual(b.resolveInterval, .seconds(300))
        XCTAssertEqual(
            b.health,
            HealthSettings(maxFails: 0, failTimeout: .seconds(30), probe: [0x0d, 0x0a], expect: Array("OK".utf8), interval: .seconds(2), probeFails: 3))
        XCTAssertEqual(m.mode, .mirror)
        XCTAssertEqual(m.sampleEvery, 10)
        XCTAssertEqual(m.upstreams.count, 2)
    }

    func testUpstreamRequiredForRelayModesAndForbiddenForEcho() {
        let e = errors(
            """
            [listener a]
            listen = 127.0.0.1:0
            mode = forward
            [listener b]
            listen = 127.0.0.1:0
            upstream = 127.0.0.1:9
            session_timeout = 5s
            health_probe = ping
            """)
        XCTAssertEqual(e.map(\.line), [1, 6, 7, 8])
        XCTAssertEqual(e[0].description, "t.ini:1: [listener a] upstream: missing required key for mode = forward (e.g. upstream = 192.0.2.10:53)")
        XCTAssertEqual(e[1].description, "t.ini:6: [listener b] upstream: only valid with mode = forward|balance|mirror, not with mode = echo")
        XCTAssertTrue(e[2].message.contains("only valid with mode = forward|balance"), e[2].message)
        XCTAssertTrue(e[3].message.contains("only valid with mode = forward|balance|mirror"), e[3].message)
    }

    func testUpstreamCountsPerMode() {
        let e = errors(
            """
            [listener a]
            listen = 127.0.0.1:0
            mode = forward
            upstream = 127.0.0.1:9, 127.0.0.1:10
            [listener b]
            listen = 127.0.0.1:0
            mode = balance
            upstream = 127.0.0.1:9
            [listener c]
            listen = 127.0.0.1:0
            mode = forward
            upstream = 127.0.0.1:9
            balance = hash
            """)
        XCTAssertEqual(e.map(\.line), [4, 8, 13])
        XCTAssertTrue(e[0].message.contains("mode = forward takes one upstream, got 2; use mode = balance"), e[0].message)
        XCTAssertTrue(e[1].message.contains("mode = balance needs at least two upstreams"), e[1].message)
        XCTAssertTrue(e[2].message.contains("only valid with mode = balance"), e[2].message)
    }

    func testBadValues() {
        let e = errors(
            """
            [listener a]
            listen = 127.0.0.1:0
            mode = balance
            upstream = 127.0.0.1:0, 10.0.0.1:53
            balance = round-robbin
            session_timeout = 0s
            max_sessions = 0
            fail_timeout = -1s
            health_probe = 0xabc
            health_interval = soon
            [listener m]
            listen = 127.0.0.1:0
            mode = mirror
            upstream = 10.0.0.1:53, 10.0.0.1:53
            sample = 10%
            session_max_replies = 1
            [listener n]
            listen = 127.0.0.1:0
            mode = mirror
            upstream = 2001:db8::1:53, bad_name:53, 300.1.2.3:53
            """)
        XCTAssertEqual(e.map(\.line), [4, 5, 6, 7, 8, 9, 10, 14, 15, 16, 20])
        XCTAssertTrue(e[0].message.contains("upstream port must be 1 to 65535"), e[0].message)
        XCTAssertTrue(e[1].message.contains("did you mean 'round-robin'?"), e[1].message)
        XCTAssertTrue(e[2].message.contains("must be greater than zero"), e[2].message)
        XCTAssertTrue(e[3].message.contains("from 1 to"), e[3].message)
        XCTAssertTrue(e[4].message.contains("expected a duration"), e[4].message)
        XCTAssertTrue(e[5].message.contains("even number of hex digits"), e[5].message)
        XCTAssertTrue(e[7].message.contains("listed twice"), e[7].message)
        XCTAssertTrue(e[8].message.contains("expected '1/N'"), e[8].message)
        XCTAssertTrue(e[9].message.contains("only valid with mode = forward|balance, not with mode = mirror"), e[9].message)
        XCTAssertTrue(e[10].message.contains("IPv6 addresses need brackets"), e[10].message)
    }

    func testSessionLogKeysAreCheckedAndOnlyForSessions() {
        let e = errors(
            """
            [listener a]
            listen = 127.0.0.1:0
            mode = forward
            upstream = 192.0.2.1:53
            session_log = maybe
            session_log_rate = 0
            [listener m]
            listen = 127.0.0.1:0
            mode = mirror
            upstream = 192.0.2.1:53
            session_log = yes
            """)
        XCTAssertEqual(e.map(\.line), [5, 6, 11])
        XCTAssertTrue(e[1].message.contains("from 1 to 100000"), e[1].message)
        XCTAssertTrue(e[2].message.contains("only valid with mode = forward|balance, not with mode = mirror"), e[2].message)
    }

    func testUpstreamEndpointParsing() throws {
        XCTAssertEqual(try UpstreamEndpoint(parsing: "Resolver.Example:53").description, "resolver.example:53")
        XCTAssertEqual(try UpstreamEndpoint(parsing: "localhost:7").host, .name("localhost"))
        XCTAssertEqual(try UpstreamEndpoint(parsing: "[::1]:7").literal, SocketAddress(ip: .v6(high: 0, low: 1), port: 7))
        for bad in ["bad_name:53", "300.1.2.3:53", "-x.example:53", "x.example", "x.example:0", "x.example:70000", "[::1]:0", ":53"] {
            XCTAssertThrowsError(try UpstreamEndpoint(parsing: bad), bad)
        }
    }

    func testSampleAndPayloadValues() throws {
        XCTAssertEqual(try Values.sample("1/1"), 1)
        XCTAssertEqual(try Values.sample("1 / 100"), 100)
        XCTAssertThrowsError(try Values.sample("2/3"))
        XCTAssertThrowsError(try Values.sample("1/0"))
        XCTAssertEqual(try Values.payload("0xDEADbeef"), [0xde, 0xad, 0xbe, 0xef])
        XCTAssertEqual(try Values.payload("ping"), Array("ping".utf8))
        XCTAssertEqual(try INILexer.parseValue("\"\\xff\\x00a\"").unicodeScalars.map(\.value), [0xff, 0, 0x61])
        XCTAssertEqual(try Values.payload(INILexer.parseValue("\"\\xff\\x00a\"")), [0xff, 0, 0x61])
        XCTAssertThrowsError(try Values.payload("0xzz"))
    }

    func testUpstreamMayNotBeTheListenerItself() {
        let e = errors("[listener a]\nlisten = 127.0.0.1:5353\nmode = forward\nupstream = 127.0.0.1:5353\n")
        XCTAssertEqual(e.map(\.line), [4])
        XCTAssertTrue(e[0].message.contains("relay to itself"), e[0].message)
    }

    func testHealthFailsNeedsProbeAndAWholeNumberFrom1To1000() {
        let e = errors(
            "[listener a]\nlisten = 127.0.0.1:0\nmode = forward\nupstream = 127.0.0.1:9\nhealth_fails = 2\n"
                + "[listener b]\nlisten = 127.0.0.1:0\nmode = forward\nupstream = 127.0.0.1:9\nhealth_probe = x\nhealth_fails = 0\n")
        XCTAssertEqual(e.map(\.line), [5, 11])
        XCTAssertEqual(e.map(\.key), ["health_fails", "health_fails"])
        XCTAssertTrue(e[0].message.contains("only valid together with health_probe"), e[0].message)
        XCTAssertTrue(e[1].message.contains("1"), e[1].message)
    }

    func testHealthExpectNeedsProbe() {
        let e = errors("[listener a]\nlisten = 127.0.0.1:0\nmode = forward\nupstream = 127.0.0.1:9\nhealth_expect = ok\n")
        XCTAssertEqual(e.map(\.line), [5])
        XCTAssertTrue(e[0].message.contains("only valid together with health_probe"), e[0].message)
    }

    // MARK: relays that loop (the configuration's part)

    func relay(_ name: String, listen: String, upstream: String, mode: String = "forward") -> String {
        "[listener \(name)]\nlisten = \(listen)\nmode = \(mode)\nupstream = \(upstream)\n"
    }

    func testARelayToItselfIsRefusedInEverySpelling() {
        let cases: [(listen: String, upstream: String)] = [
            ("0.0.0.0:30001", "127.0.0.1:30001"),
            ("0.0.0.0:30001", "127.0.0.5:30001"),
            ("0.0.0.0:30001", "127.255.255.254:30001"),
            ("0.0.0.0:30001", "0.0.0.0:30001"),
            ("0.0.0.0:30001", "localhost:30001"),
            ("0.0.0.0:30001", "LocalHost.:30001"),
            ("0.0.0.0:30001", "relay.localhost:30001"),
            ("127.0.0.1:30001", "127.0.0.1:30001"),
            ("127.0.0.1:30001", "0.0.0.0:30001"),
            ("127.0.0.1:30001", "localhost:30001"),
            ("[::]:30001", "[::1]:30001"),
            ("[::]:30001", "[::]:30001"),
            ("[::]:30001", "localhost:30001"),
            ("[::1]:30001", "[0:0:0:0:0:0:0:1]:30001"),
            ("192.0.2.1:30001, [::]:30001", "[::1]:30001"),
        ]
        for c in cases {
            for mode in ["forward", "mirror"] {
                let e = errors(relay("r", listen: c.listen, upstream: c.upstream, mode: mode))
                XCTAssertEqual(e.map(\.line), [4], "\(c) \(mode)")
                XCTAssertEqual(e.first?.key, "upstream")
                XCTAssertTrue(
                    e.first?.message.contains("is this listener's own address") == true
                        && e.first?.message.hasSuffix("it would relay to itself") == true, "\(c): \(e.first?.message ?? "accepted")")
            }
        }
        // Balance with the loop among other upstreams.
        let e = errors("[listener b]\nlisten = 0.0.0.0:30001\nmode = balance\nupstream = 192.0.2.1:53, localhost:30001\n")
        XCTAssertEqual(
            e.map(\.description), ["t.ini:4: [listener b] upstream: localhost:30001 is this listener's own address 0.0.0.0:30001; it would relay to itself"])
    }

    func testAddressesThatDoNotReachTheListenerAreNoLoop() throws {
        let fine: [(listen: String, upstream: String)] = [
            ("127.0.0.1:30001", "127.0.0.2:30001"),  // a specific address is not the whole range
            ("0.0.0.0:30001", "127.0.0.1:30002"),  // another port
            ("0.0.0.0:30001", "[::1]:30001"),  // another family: IPv6 sockets are IPv6-only
            ("[::]:30001", "127.0.0.1:30001"),
            ("0.0.0.0:30001", "192.0.2.1:30001"),  // not knowable without the interfaces: the runtime guard's
            ("0.0.0.0:30001", "dns.example:30001"),  // not knowable without DNS
            ("127.0.0.1:0", "127.0.0.1:30001"),  // port 0 is chosen at bind time
        ]
        for c in fine {
            XCTAssertNoThrow(try parse(relay("r", listen: c.listen, upstream: c.upstream)), "\(c)")
        }
    }

    func testRelaysThatPointAtEachOtherAreALoop() {
        let pair = errors(
            relay("a", listen: "0.0.0.0:30001", upstream: "127.0.0.1:30002")
                + relay("b", listen: "0.0.0.0:30002", upstream: "localhost:30001"))
        XCTAssertEqual(
            pair.map(\.description),
            [
                "t.ini:4: [listener a] upstream: relay loop 'a' -> 'b' -> 'a': 127.0.0.1:30002 is listener 'b''s address 0.0.0.0:30002, "
                    + "and each relays to the next, so datagrams would circle between them; point one upstream elsewhere"
            ])
        // A chain of three, written in any order, with a mirror and a balance in it.
        let chain = errors(
            relay("c", listen: "127.0.0.1:30003", upstream: "localhost:30001", mode: "mirror")
                + relay("a", listen: "[::]:30001", upstream: "[::1]:30002")
                + "[listener b]\nlisten = 127.0.0.1:30002, [::1]:30002\nmode = balance\nupstream = 192.0.2.1:53, 127.0.0.1:30003\n")
        XCTAssertEqual(chain.count, 1)
        XCTAssertEqual(chain.first?.line, 4)
        XCTAssertTrue(
            chain.first?.message.hasPrefix("relay loop 'c' -> 'a' -> 'b' -> 'c': localhost:30001 is listener 'a''s address [::]:30001") == true,
            chain.first?.message ?? "")
    }

    func testChainsAndRelaysToOurOwnEchoListenersAreAllowed() throws {
        // A relay to an echo listener of this file (the shipped example does it): the echo answers
        // the relay's session socket, not a listener, so nothing circles.
        XCTAssertNoThrow(try parse("[listener e]\nlisten = 127.0.0.1:30001\n" + relay("r", listen: "127.0.0.1:30002", upstream: "127.0.0.1:30001")))
        XCTAssertNoThrow(
            try parse("[listener e]\nlisten = 0.0.0.0:30001\n" + relay("m", listen: "127.0.0.1:30002", upstream: "localhost:30001", mode: "mirror")))
        // A chain that ends outside: a -> b -> 192.0.2.1.
        XCTAssertNoThrow(
            try parse(
                relay("a", listen: "127.0.0.1:30001", upstream: "127.0.0.1:30002")
                    + relay("b", listen: "127.0.0.1:30002", upstream: "192.0.2.1:53")))
    }
}
