import XCTest
import UDPRelayConfig
@testable import UDPRelayDatapath

final class ProtectionTests: XCTestCase {
    func ip(_ s: String) -> IPAddress { IPAddress(literal: s)! }
    func cidrs(_ s: [String]) -> [CIDR] { s.map { try! CIDR(parsing: $0) } }
    let second: UInt64 = 1_000_000_000

    func testAccessListLongestMatchWinsAndDenyWinsTies() {
        let acl = AccessList(allow: cidrs(["10.0.0.0/8", "10.1.2.3", "2001:db8::/32"]),
                             deny: cidrs(["10.1.0.0/16", "2001:db8:bad::/48", "10.9.0.0/16"]))
        XCTAssertTrue(acl.permits(ip("10.2.3.4")))          // allow /8
        XCTAssertFalse(acl.permits(ip("10.1.9.9")))         // deny /16 beats allow /8
        XCTAssertTrue(acl.permits(ip("10.1.2.3")))          // allow /32 beats deny /16
        XCTAssertFalse(acl.permits(ip("192.0.2.1")))        // allow rules exist: no match -> denied
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
        XCTAssertFalse(b.take(now: second / 20))           // 0.5 token after 50 ms
        XCTAssertTrue(b.take(now: second / 10))            // 1 token after 100 ms
        XCTAssertEqual((0..<100).filter { _ in b.take(now: 100 * second) }.count, 5, "never above burst")
        var slow = TokenBucket(rate: 0.5, burst: 1, now: 0)
        XCTAssertTrue(slow.take(now: 0))
        XCTAssertFalse(slow.take(now: second))
        XCTAssertTrue(slow.take(now: 2 * second))
    }

    func testSourceLimiterIsPerAddressAndBoundedWithLRUEviction() {
        let l = SourceRateLimiter(rate: Rate(perSecond: 1), burst: 2, capacity: 3)
        let a = ip("192.0.2.1"), b = ip("192.0.2.2"), c = ip("2001:db8::3"), d = ip("192.0.2.4")
        XCTAssertTrue(l.admit(a, now: 0)); XCTAssertTrue(l.admit(a, now: 0)); XCTAssertFalse(l.admit(a, now: 0))
        XCTAssertTrue(l.admit(b, now: 0), "another source has its own bucket")
        XCTAssertTrue(l.admit(c, now: 0))
        XCTAssertFalse(l.admit(a, now: 1), "a is touched: now the most recent")
        XCTAssertEqual(l.count, 3)
        XCTAssertTrue(l.admit(d, now: 1), "full: the least recently seen (b) is forgotten")
        XCTAssertEqual(l.evictions, 1)
        XCTAssertEqual(l.count, 3)
        XCTAssertFalse(l.admit(a, now: 1), "a kept its empty bucket")
        XCTAssertTrue(l.admit(b, now: 1), "b starts over with a full bucket")
        XCTAssertEqual(l.evictions, 2)
        XCTAssertTrue(l.admit(a, now: 1 * second + 1), "a refilled after a second")
    }

    func testFilterOrderAndDefaults() {
        let p = ProtectionConfiguration(deny: cidrs(["192.0.2.0/24"]), rateLimit: Rate(perSecond: 1), rateBurst: 1)
        let f = IngressFilter(p, now: 0)
        f.setOwnAddresses([SocketAddress(ip: ip("127.0.0.1"), port: 7007)])
        XCTAssertEqual(f.check(SocketAddress(ip: ip("198.51.100.1"), port: 19), now: 0), .dropSourcePort)
        XCTAssertEqual(f.check(SocketAddress(ip: ip("198.51.100.1"), port: 0), now: 0), .dropSourcePort)
        XCTAssertEqual(f.check(SocketAddress(ip: ip("127.0.0.1"), port: 7007), now: 0), .dropLoop)
        XCTAssertNil(f.check(SocketAddress(ip: ip("127.0.0.2"), port: 7007), now: 0), "same port, other address: not us")
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
        let c = try ConfigLoader.parse("""
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
        XCTAssertEqual(p.denySourcePorts.description, "7, 19, 1000-1002")
        XCTAssertFalse(p.loopGuard)
        XCTAssertEqual(p.rateLimit, Rate(perSecond: 10))
        XCTAssertEqual(p.rateBurst, 20)
        XCTAssertEqual(p.rateLimitTotal, Rate(perSecond: 5000))
        XCTAssertEqual(p.rateLimitSources, 1024)

        let d = try ConfigLoader.parse("[listener a]\nlisten = 127.0.0.1:0\ndeny_source_ports = none\nrate_limit = 50/s\n", file: "t.ini")
        XCTAssertTrue(d.listeners[0].protection.denySourcePorts.isEmpty)
        XCTAssertEqual(d.listeners[0].protection.rateBurst, 50, "burst defaults to one second of the rate")
        XCTAssertEqual(try ConfigLoader.parse("[listener a]\nlisten = 127.0.0.1:0\n", file: "t.ini").listeners[0].protection,
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
}
