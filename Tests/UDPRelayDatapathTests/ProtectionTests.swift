import UDPRelayConfig
import XCTest

@testable import UDPRelayDatapath

final class ProtectionTests: XCTestCase {
    func ip(_ s: String) -> IPAddress { IPAddress(literal: s)! }
    func cidrs(_ s: [String]) -> [CIDR] { s.map { try! CIDR(parsing: $0) } }
    let second: UInt64 = 1_000_000_000

    func testAccessListLongestMatchWinsAndDenyWinsTies() {
        let acl = AccessList(
            allow: cidrs(["10.0.0.0/8", "10.1.2.3", "2001:db8::/32"]),
            deny: cidrs(["10.1.0.0/16", "2001:db8:bad::/48", "10.9.0.0/16"]))
        XCTAssertTrue(acl.permits(ip("10.2.3.4")))  // allow /8
        XCTAssertFalse(acl.permits(ip("10.1.9.9")))  // deny /16 beats allow /8
        XCTAssertTrue(acl.permits(ip("10.1.2.3")))  // allow /32 beats deny /16
        XCTAssertFalse(acl.permits(ip("192.0.2.1")))  // allow rules exist: no match -> denied
        XCTAssertTrue(acl.permits(ip("2001:db8::1")))
        XCTAssertFalse(acl.permits(ip("2001:db8:bad::1")))
        XCTAssertFalse(acl.permits(ip("::1")))
        let tie = AccessList(allow: cidrs(["10.0.0.0/8"]), deny: cidrs(["10.0.0.0/8"]))
        XCTAssertFalse(tie.permits(ip("10.0.0.1")), "deny wins a tie")
        let denyOnly = AccessList(allow: [], deny: cidrs(["192.0.2.0/24"]))
        XCTAssertTrue(denyOnly.permits(ip("198.51.100.1")), "only deny rules: others allowed")
        XCTAssertFalse(denyOnly.permits(ip("192.0.2.77")))
        XCTAssertTrue(AccessList(allow: [], deny: []).isOpen)
    }

    func testTokenBucketRefillsAtItsRateUpToBurst() {
        var b = TokenBucket(rate: 10, burst: 5, now: 0)
        XCTAssertEqual((0..<8).filter { _ in b.take(now: 0) }.count, 5, "burst")
        XCTAssertFalse(b.take(now: second / 20))  // 0.5 token after 50 ms
        XCTAssertTrue(b.take(now: second / 10))  // 1 token after 100 ms
        XCTAssertEqual((0..<100).filter { _ in b.take(now: 100 * second) }.count, 5, "never above burst")
        var slow = TokenBucket(rate: 0.5, burst: 1, now: 0)
        XCTAssertTrue(slow.take(now: 0))
        XCTAssertFalse(slow.take(now: second))
        XCTAssertTrue(slow.take(now: 2 * second))
    }

    func testSourceLimiterIsPerAddressAndBoundedWithLRUEviction() {
        let l = SourceRateLimiter(rate: Rate(perSecond: 1), burst: 2, capacity: 3)
        let a = ip("192.0.2.1"), b = ip("192.0.2.2"), c = ip("2001:db8::3"), d = ip("192.0.2.4")
        XCTAssertTrue(l.admit(a, now: 0))
        XCTAssertTrue(l.admit(a, now: 0))
        XCTAssertFalse(l.admit(a, now: 0))
        XCTAssertTrue(l.admit(b, now: 0), "another source has its own bucket")
        XCTAssertTrue(l.admit(c, now: 0))
        XCTAssertFalse(l.admit(a, now: 1), "a is touched: now the most recent")
        XCTAssertEqual(l.count, 3)
        XCTAssertTrue(l.admit(d, now: 1), "full: the least recently seen (b) is forgotten; d takes from the overflow bucket")
        XCTAssertEqual(l.evictions, 1)
        XCTAssertEqual(l.count, 3)
        XCTAssertFalse(l.admit(a, now: 1), "a kept its empty bucket")
        XCTAssertTrue(l.admit(b, now: 1), "b comes back while the table is full: the overflow bucket's second token")
        XCTAssertEqual(l.evictions, 2)
        XCTAssertFalse(l.admit(d, now: 2), "d's own bucket started empty")
        XCTAssertFalse(l.admit(b, now: 2), "b's own bucket started empty")
        XCTAssertEqual(l.evictions, 2)
        XCTAssertTrue(l.admit(a, now: 1 * second + 1), "a refilled after a second")
    }

    func testFilterOrderAndDefaults() {
        let p = ProtectionConfiguration(deny: cidrs(["192.0.2.0/24"]), rateLimit: Rate(perSecond: 1), rateBurst: 1)
        let f = IngressFilter(p, now: 0)
        f.setLoopContext(
            LoopContext(
                listeners: [(SocketAddress(ip: ip("127.0.0.1"), port: 7007), false)], interfaces: [],
                ephemeral: 32768...60999))
        XCTAssertEqual(f.check(SocketAddress(ip: ip("198.51.100.1"), port: 19), now: 0), .dropSourcePort)
        XCTAssertEqual(f.check(SocketAddress(ip: ip("198.51.100.1"), port: 0), now: 0), .dropSourcePort)
        XCTAssertEqual(f.check(SocketAddress(ip: ip("127.0.0.1"), port: 7007), now: 0), .dropLoop)
        XCTAssertEqual(
            f.check(SocketAddress(ip: ip("127.0.0.2"), port: 7007), now: 0), .dropLoop,
            "echo: our port on another local address is another echo server answering us")
        XCTAssertNil(f.check(SocketAddress(ip: ip("198.51.100.2"), port: 7007), now: 0), "our port on another host: not us")
        XCTAssertEqual(f.check(SocketAddress(ip: ip("192.0.2.9"), port: 40000), now: 0), .dropDenied)
        XCTAssertNil(f.check(SocketAddress(ip: ip("198.51.100.1"), port: 40000), now: 0))
        XCTAssertEqual(f.check(SocketAddress(ip: ip("198.51.100.1"), port: 40001), now: 0), .dropRateLimited)
        for port: UInt16 in [0, 7, 13, 17, 19, 37, 53, 69, 111, 123, 137, 161, 389, 1900, 5353, 11211] {
            XCTAssertTrue(Defaults.denySourcePorts.contains(port), "\(port) must be denied by default")
        }
        XCTAssertFalse(Defaults.denySourcePorts.contains(40000))
    }

    func testTotalLimitAppliesAcrossSources() {
        let f = IngressFilter(ProtectionConfiguration(rateLimitTotal: Rate(perSecond: 2)), now: 0)
        XCTAssertNil(f.check(SocketAddress(ip: ip("192.0.2.1"), port: 40000), now: 0))
        XCTAssertNil(f.check(SocketAddress(ip: ip("192.0.2.2"), port: 40000), now: 0))
        XCTAssertEqual(f.check(SocketAddress(ip: ip("192.0.2.3"), port: 40000), now: 0), .dropRateLimitedTotal)
        XCTAssertNil(f.check(SocketAddress(ip: ip("192.0.2.3"), port: 40000), now: second))
    }

    func testConfigKeys() throws {
        let c = try ConfigLoader.parse(
            """
            [listener a]
            listen = 127.0.0.1:0
            allow = 10.0.0.0/8, ::1
            deny = 10.1.0.0/16
            deny_source_ports = 7, 19, 1000-1002
            loop_guard = no
            rate_limit = 600/m
            rate_burst = 20
            rate_limit_total = 5000/s
            rate_limit_sources = 1024
            """, file: "t.ini")
        let p = c.listeners[0].protection
        XCTAssertEqual(p.allow.map(\.description), ["10.0.0.0/8", "::1/128"])
        XCTAssertEqual(p.deny.map(\.description), ["10.1.0.0/16"])
        XCTAssertEqual(p.denySourcePorts?.description, "7, 19, 1000-1002")
        XCTAssertFalse(p.loopGuard)
        XCTAssertEqual(p.rateLimit, Rate(perSecond: 10))
        XCTAssertEqual(p.rateBurst, 20)
        XCTAssertEqual(p.rateLimitTotal, Rate(perSecond: 5000))
        XCTAssertEqual(p.rateLimitSources, 1024)

        let d = try ConfigLoader.parse("[listener a]\nlisten = 127.0.0.1:0\ndeny_source_ports = none\nrate_limit = 50/s\n", file: "t.ini")
        XCTAssertEqual(d.listeners[0].protection.denySourcePorts?.isEmpty, true)
        XCTAssertEqual(d.listeners[0].protection.rateBurst, 50, "burst defaults to one second of the rate")
        XCTAssertEqual(
            try ConfigLoader.parse("[listener a]\nlisten = 127.0.0.1:0\n", file: "t.ini").listeners[0].protection,
            ProtectionConfiguration(), "safe defaults")

        for (line, expected) in [
            ("rate_limit = fast", "expected a rate such as 1000/s"),
            ("rate_limit = 0/s", "expected a rate such as 1000/s"),
            ("deny_source_ports = 7, 70000", "expected ports or ranges"),
            ("deny_source_ports = 10-5", "expected ports or ranges"),
            ("allow = 10.0.0.0/33", "prefix length must be 0 to 32"),
            ("rate_burst = 5", "rate_burst needs rate_limit"),
            ("mode = mirror\nupstream = " + (1...65).map { "127.0.0.1:\(1000 + $0)" }.joined(separator: ", "), "at most 64 upstreams"),
        ] {
            XCTAssertThrowsError(try ConfigLoader.parse("[listener a]\nlisten = 127.0.0.1:0\n\(line)\n", file: "t.ini")) { e in
                let errors = (e as! ConfigErrors).errors
                XCTAssertEqual(errors.first?.line, line.contains("\n") ? 4 : 3, line)
                XCTAssertTrue(errors.first?.message.contains(expected) ?? false, "\(line): \(errors)")
            }
        }
    }

    /// A sender rotating through one address more than the table holds got
    /// every datagram answered, because each new address evicted another and started full.
    func testRotatingSourcesBeyondTheTableGetNoMoreThanTheLimitAllows() {
        let rate = 10.0, burst = 10, capacity = 16
        let l = SourceRateLimiter(rate: Rate(perSecond: rate), burst: burst, capacity: capacity, now: 0)
        let sources = (1...17).map { IPAddress.v4(0xC000_0200 | UInt32($0)) }
        var admitted = 0
        var now: UInt64 = 0
        let sent = 170_000  // 17 sources x 10,000, one every 50 us: 8.5 s
        for i in 0..<sent {
            if l.admit(sources[i % sources.count], now: now) { admitted += 1 }
            now += 50_000
        }
        let seconds = Double(now) / 1e9
        // The first pass fills the table (16 full buckets); from then on every datagram comes
        // from an address just evicted and takes from the one overflow bucket.
        let bound = capacity * burst + burst + Int(rate * seconds) + 1
        XCTAssertLessThanOrEqual(admitted, bound, "\(admitted) of \(sent) admitted in \(seconds) s")
        XCTAssertGreaterThanOrEqual(l.evictions, UInt64(sent - capacity - 1))
        // A table that is not full still gives a newcomer its burst at once.
        let roomy = SourceRateLimiter(rate: Rate(perSecond: rate), burst: burst, capacity: 64, now: 0)
        XCTAssertEqual((0..<20).filter { _ in roomy.admit(sources[0], now: 0) }.count, burst)
    }

    /// Wildcard listeners own their port on every local address: all of
    /// 127.0.0.0/8, every interface address, and the IPv4-mapped forms.
    func testLoopGuardCoversTheWholeLoopbackRangeInterfacesAndMappedForms() {
        let loop = LoopContext(
            listeners: [
                (SocketAddress(ip: ip("0.0.0.0"), port: 30001), false),
                (SocketAddress(ip: ip("::"), port: 30002), false),
                (SocketAddress(ip: ip("127.0.0.1"), port: 30003), true),
            ],
            interfaces: [ip("192.0.2.10"), ip("2001:db8::10")], ephemeral: 32768...60999)
        for mode in [ListenerMode.echo, .forward] {
            let f = IngressFilter(ProtectionConfiguration(), mode: mode, now: 0)
            f.setLoopContext(loop)
            for (source, port) in [
                ("127.0.0.5", 30002), ("127.255.255.254", 30001), ("::ffff:127.0.0.5", 30001),
                ("192.0.2.10", 30001), ("::ffff:192.0.2.10", 30002), ("2001:db8::10", 30002),
                ("::1", 30001), ("127.0.0.1", 30003),
            ] {
                XCTAssertEqual(
                    f.check(SocketAddress(ip: ip(source), port: UInt16(port)), now: 0), .dropLoop,
                    "\(mode): \(source):\(port) is this daemon")
            }
            for (source, port) in [("198.51.100.7", 30001), ("192.0.2.11", 30002), ("127.0.0.5", 40000)] {
                XCTAssertNil(f.check(SocketAddress(ip: ip(source), port: UInt16(port)), now: 0), "\(mode): \(source):\(port)")
            }
        }
        // The relay check is exact for a listener bound to one address: 127.0.0.53:30003 is
        // another daemon (a relay in front of a local DNS server is fine).
        let relay = IngressFilter(ProtectionConfiguration(), mode: .forward, now: 0)
        relay.setLoopContext(loop)
        XCTAssertNil(relay.check(SocketAddress(ip: ip("127.0.0.53"), port: 30003), now: 0))
        XCTAssertTrue(relay.isOwnRelayListener(SocketAddress(ip: ip("::ffff:127.0.0.1"), port: 30003)))
        XCTAssertFalse(relay.isOwnRelayListener(SocketAddress(ip: ip("127.0.0.53"), port: 30003)))
        XCTAssertFalse(relay.isOwnRelayListener(SocketAddress(ip: ip("127.0.0.1"), port: 30001)), "an echo listener: not a relay")
        let wildcardRelay = LoopContext(
            listeners: [(SocketAddress(ip: ip("0.0.0.0"), port: 30001), true)],
            interfaces: [ip("192.0.2.10")], ephemeral: 32768...60999)
        relay.setLoopContext(wildcardRelay)
        for upstream in ["127.0.0.1", "127.0.0.9", "::ffff:127.0.0.1", "192.0.2.10"] {
            XCTAssertTrue(relay.isOwnRelayListener(SocketAddress(ip: ip(upstream), port: 30001)), "relay to itself via \(upstream)")
        }
        XCTAssertFalse(relay.isOwnRelayListener(SocketAddress(ip: ip("198.51.100.1"), port: 30001)))
    }

    /// The echo loop breaker holds with `loop_guard = no`: a local server port (outside the
    /// ephemeral range) answering us is capped per flow, so a datagram bouncing between two
    /// echo servers is dropped within the burst; clients' ports and other hosts are not capped.
    func testEchoLoopBreakerCapsLocalServerPortsOnly() {
        let f = IngressFilter(ProtectionConfiguration(loopGuard: false), mode: .echo, now: 0)
        f.setLoopContext(
            LoopContext(
                listeners: [(SocketAddress(ip: ip("127.0.0.1"), port: 7007), false)], interfaces: [],
                ephemeral: 32768...60999))
        let peer = SocketAddress(ip: ip("127.0.0.1"), port: 7008)
        let served = (0..<1000).prefix { _ in f.check(peer, now: 0) == nil }.count
        XCTAssertLessThanOrEqual(served, LoopBreaker.burst + 1, "a ping-pong with another echo server ends within the burst")
        XCTAssertEqual(f.check(peer, now: 0), .dropLoop)
        XCTAssertEqual(f.check(SocketAddress(ip: ip("::ffff:127.0.0.1"), port: 7008), now: 0), .dropLoop, "mapped form, same flow")
        for other in [SocketAddress(ip: ip("127.0.0.1"), port: 40000), SocketAddress(ip: ip("198.51.100.1"), port: 7008)] {
            XCTAssertEqual((0..<1000).filter { _ in f.check(other, now: 0) == nil }.count, 1000, "\(other) is not capped")
        }
        XCTAssertNil(IngressFilter(ProtectionConfiguration(), mode: .forward, now: 0).check(peer, now: 0), "relays: no cap")
    }

    /// IPv4 rules and rate-limit keys apply to IPv4-mapped sources.
    func testIPv4MappedSourcesMeetIPv4Rules() {
        let f = IngressFilter(
            ProtectionConfiguration(
                deny: cidrs(["127.0.0.0/8", "::ffff:10.0.0.0/104"]),
                rateLimit: Rate(perSecond: 1), rateBurst: 1), mode: .forward, now: 0)
        XCTAssertEqual(f.check(SocketAddress(ip: ip("::ffff:127.0.0.1"), port: 40000), now: 0), .dropDenied)
        XCTAssertEqual(f.check(SocketAddress(ip: ip("10.1.2.3"), port: 40000), now: 0), .dropDenied, "a mapped rule is an IPv4 rule")
        XCTAssertNil(f.check(SocketAddress(ip: ip("192.0.2.1"), port: 40000), now: 0))
        XCTAssertEqual(
            f.check(SocketAddress(ip: ip("::ffff:192.0.2.1"), port: 40001), now: 0), .dropRateLimited,
            "one bucket for an IPv4 source in either form")
        XCTAssertEqual(
            f.check(SocketAddress(ip: ip("::ffff:192.0.2.9"), port: 123), now: 0), nil,
            "relay modes let NTP's source port through")
        let echo = IngressFilter(ProtectionConfiguration(), mode: .echo, now: 0)
        XCTAssertEqual(echo.check(SocketAddress(ip: ip("::ffff:192.0.2.9"), port: 123), now: 0), .dropSourcePort)
        XCTAssertFalse(AccessList(allow: [], deny: cidrs(["::/0"])).permits(ip("192.0.2.1")), "::/0 covers mapped sources")
        XCTAssertTrue(AccessList(allow: [], deny: cidrs(["2001:db8::/32"])).permits(ip("192.0.2.1")))
    }

    /// `deny_source_ports` defaults by mode; a list that is set applies as set.
    func testDenySourcePortsDefaultByMode() throws {
        for port: UInt16 in [0, 7, 13, 17, 19, 37] {
            XCTAssertTrue(Defaults.denySourcePorts(for: .forward).contains(port), "\(port)")
        }
        for port: UInt16 in [53, 123, 161, 11211] {
            XCTAssertFalse(Defaults.denySourcePorts(for: .balance).contains(port), "\(port)")
            XCTAssertTrue(Defaults.denySourcePorts(for: .echo).contains(port), "\(port)")
        }
        let c = try ConfigLoader.parse(
            """
            [listener f]
            listen = 127.0.0.1:0
            mode = forward
            upstream = 127.0.0.1:9
            [listener g]
            listen = 127.0.0.1:0
            mode = mirror
            upstream = 127.0.0.1:9
            deny_source_ports = 123
            """, file: "t.ini")
        XCTAssertEqual(c.listeners[0].protection.denySourcePorts(for: .forward).description, "0, 7, 13, 17, 19, 37")
        XCTAssertEqual(c.listeners[1].protection.denySourcePorts(for: .mirror).description, "123")
    }

    func testLogLimiterWritesAtMostItsLinesPerIntervalAndCountsTheRest() {
        var l = LogLimiter(lines: 1, per: .seconds(60))
        XCTAssertEqual(l.admit(now: 5 * second), 0, "the first event is written at once")
        XCTAssertEqual((0..<10_000).compactMap { _ in l.admit(now: 30 * second) }.count, 0)
        XCTAssertEqual(l.suppressed, 10_000)
        XCTAssertEqual(l.admit(now: 65 * second), 10_000, "a minute later: one line with the count")
        XCTAssertNil(l.admit(now: 66 * second))
        var burst = LogLimiter(lines: 20, per: .seconds(1))
        var written = 0
        for i in 0..<100_000 where burst.admit(now: UInt64(i) * 50_000) != nil { written += 1 }  // 5 s of 20,000/s
        XCTAssertLessThanOrEqual(written, 20 * 6)
        XCTAssertGreaterThanOrEqual(written, 20 * 5)
    }

    func testLogFloodGateBoundsEachKindAndCountsWhatItLeavesOut() {
        let gate = LogFloodGate(lines: 5, per: .seconds(1), kinds: 2)
        XCTAssertEqual((0..<100).compactMap { _ in gate.admit("debug session opened", now: 0) }.count, 5)
        XCTAssertEqual((0..<100).compactMap { _ in gate.admit("notice datagram refused", now: 0) }.count, 5, "kinds are separate")
        XCTAssertEqual(gate.admit("debug session opened", now: second), 95, "the next second's first line carries the count")
        // Kinds beyond the table share one limiter: a peer cannot grow it with new messages.
        XCTAssertEqual((0..<100).compactMap { i in gate.admit("debug kind \(i)", now: 0) }.count, 5)
    }

}
