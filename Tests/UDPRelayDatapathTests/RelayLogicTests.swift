import Logging
import UDPRelayConfig
import XCTest

@testable import UDPRelayDatapath

#if canImport(Glibc)
import Glibc
#endif

/// The pure pieces of the relay: session key, LRU/idle list, balancer, health state machine.
/// Time is a plain number (nanoseconds) advanced by the test.
final class RelayLogicTests: XCTestCase {
    static let ms: UInt64 = 1_000_000

    func key(_ i: Int) -> ClientKey {
        var sin = sockaddr_in()
        sin.sin_family = sa_family_t(AF_INET)
        sin.sin_port = UInt16(truncatingIfNeeded: 1024 + i % 60000).bigEndian
        sin.sin_addr.s_addr = UInt32(0x0A00_0000 + i / 60000).bigEndian
        return withUnsafeBytes(of: sin) { ClientKey(sockaddr: $0.baseAddress!)! }
    }

    func testClientKeyDistinguishesAddressPortAndFamily() {
        XCTAssertEqual(key(1), key(1))
        XCTAssertNotEqual(key(1), key(2))
        XCTAssertEqual(key(1).stableHash, key(1).stableHash)
        var sin6 = sockaddr_in6()
        sin6.sin6_family = sa_family_t(AF_INET6)
        sin6.sin6_port = UInt16(1025).bigEndian
        let k6 = withUnsafeBytes(of: sin6) { ClientKey(sockaddr: $0.baseAddress!)! }
        XCTAssertNotEqual(k6, key(1))
        var unix = sockaddr_un()
        unix.sun_family = sa_family_t(AF_UNIX)
        XCTAssertNil(withUnsafeBytes(of: unix) { ClientKey(sockaddr: $0.baseAddress!) })
    }

    /// The key read through `RawSockaddr` is the one the struct fields give (the values every
    /// session table and `hash` balancing used so far): for IPv4, IPv6 with a scope id and
    /// v4-mapped IPv6, from the kernel's struct, from `SocketAddress.storage()` and at an odd
    /// address.
    func testClientKeyIsTheStructFieldsAsStored() throws {
        var sin = sockaddr_in()
        sin.sin_family = sa_family_t(AF_INET)
        sin.sin_port = UInt16(5353).bigEndian
        XCTAssertEqual(inet_pton(AF_INET, "198.18.0.7", &sin.sin_addr), 1)
        let v4 = ClientKey(high: UInt64(sin.sin_addr.s_addr), low: 0, rest: UInt64(sin.sin_family) | UInt64(sin.sin_port) << 16)

        func v6Key(_ text: String, port: UInt16, scope: UInt32) -> (sockaddr_in6, ClientKey) {
            var sin6 = sockaddr_in6()
            sin6.sin6_family = sa_family_t(AF_INET6)
            sin6.sin6_port = port.bigEndian
            sin6.sin6_scope_id = scope
            XCTAssertEqual(inet_pton(AF_INET6, text, &sin6.sin6_addr), 1)
            let (h, l) = withUnsafeBytes(of: sin6.sin6_addr) { ($0.load(as: UInt64.self), $0.load(fromByteOffset: 8, as: UInt64.self)) }
            return (sin6, ClientKey(high: h, low: l, rest: UInt64(sin6.sin6_family) | UInt64(sin6.sin6_port) << 16 | UInt64(sin6.sin6_scope_id) << 32))
        }
        let (sin6, v6) = v6Key("2001:db8::1:2", port: 443, scope: 3)
        let (mapped6, mapped) = v6Key("::ffff:198.18.0.7", port: 5353, scope: 0)

        XCTAssertEqual(withUnsafeBytes(of: sin) { ClientKey(sockaddr: $0.baseAddress!) }, v4)
        XCTAssertEqual(withUnsafeBytes(of: sin6) { ClientKey(sockaddr: $0.baseAddress!) }, v6)
        XCTAssertEqual(withUnsafeBytes(of: mapped6) { ClientKey(sockaddr: $0.baseAddress!) }, mapped)
        XCTAssertNotEqual(mapped, v4, "a v4-mapped client is not the IPv4 client")
        XCTAssertEqual(v6.rest >> 32, 3, "the scope id is part of the key")

        for (text, port, expected) in [("198.18.0.7", UInt16(5353), v4), ("::ffff:198.18.0.7", 5353, mapped)] {
            let address = SocketAddress(ip: try XCTUnwrap(IPAddress(literal: text)), port: port)
            var (storage, _) = address.storage()
            XCTAssertEqual(withUnsafeBytes(of: &storage) { ClientKey(sockaddr: $0.baseAddress!) }, expected, text)
            // The kernel's names in a batch need no alignment for the key either.
            var bytes = [UInt8](repeating: 0, count: MemoryLayout<sockaddr_storage>.size + 1)
            withUnsafeBytes(of: &storage) { raw in
                bytes.withUnsafeMutableBytes { $0.baseAddress!.advanced(by: 1).copyMemory(from: raw.baseAddress!, byteCount: raw.count) }
            }
            let odd = bytes.withUnsafeBytes { ClientKey(sockaddr: $0.baseAddress!.advanced(by: 1)) }
            XCTAssertEqual(odd, expected, text)
            XCTAssertEqual(odd?.stableHash, expected.stableHash, text)
        }
    }

    // MARK: IdleList (expiry and LRU eviction)

    func testIdleListKeepsLeastRecentlyUsedOrder() {
        var l = IdleList()
        for s in 0..<4 { l.insert(Int32(s), now: UInt64(s) * Self.ms) }
        XCTAssertEqual(l.slots, [3, 2, 1, 0])
        XCTAssertEqual(l.tail, 0, "oldest is evicted first")
        l.touch(0, now: 10 * Self.ms)
        XCTAssertEqual(l.slots, [0, 3, 2, 1])
        XCTAssertEqual(l.tail, 1)
        l.remove(2)
        XCTAssertEqual(l.slots, [0, 3, 1])
        XCTAssertEqual(l.count, 3)
        l.remove(2)  // twice is harmless
        XCTAssertEqual(l.count, 3)
        l.insert(2, now: 11 * Self.ms)
        XCTAssertEqual(l.slots, [2, 0, 3, 1])
    }

    func testIdleListExpiresOnlyIdleSessionsOldestFirst() {
        var l = IdleList()
        let timeout = 100 * Self.ms
        l.insert(0, now: 0)
        l.insert(1, now: 50 * Self.ms)
        l.insert(2, now: 60 * Self.ms)
        XCTAssertNil(l.expired(now: 99 * Self.ms, timeout: timeout))
        l.touch(0, now: 90 * Self.ms)  // traffic keeps 0 alive
        XCTAssertNil(l.expired(now: 120 * Self.ms, timeout: timeout))
        var expired: [Int32] = []
        while let s = l.expired(now: 165 * Self.ms, timeout: timeout) {
            expired.append(s)
            l.remove(s)
        }
        XCTAssertEqual(expired, [1, 2])
        XCTAssertEqual(l.slots, [0])
        XCTAssertEqual(l.expired(now: 190 * Self.ms, timeout: timeout), 0)
    }

    func testIdleListScalesToManySessions() {
        var l = IdleList()
        let n = 100_000
        for s in 0..<n { l.insert(Int32(s), now: UInt64(s)) }
        for s in stride(from: 0, to: n, by: 2) { l.touch(Int32(s), now: UInt64(n + s)) }
        var count = 0
        while let s = l.expired(now: UInt64(n + n / 2), timeout: UInt64(n / 2 + 1)) {
            XCTAssertEqual(s % 2, 1, "only untouched (odd) slots are old enough")
            l.remove(s)
            count += 1
        }
        XCTAssertEqual(count, n / 2)
    }

    // MARK: Balancer

    func testRoundRobinSpreadsEvenlyAndSkipsDownUpstreams() {
        var b = Balancer(algorithm: .roundRobin, upstreams: ["a:1", "b:1", "c:1"])
        var counts = [0, 0, 0]
        for i in 0..<300 { counts[b.pick(clientHash: UInt64(i), isUp: { _ in true }).index] += 1 }
        XCTAssertEqual(counts, [100, 100, 100])
        counts = [0, 0, 0]
        for i in 0..<300 { counts[b.pick(clientHash: UInt64(i), isUp: { $0 != 1 }).index] += 1 }
        XCTAssertEqual(counts, [150, 0, 150])
    }

    func testFirstIsActiveStandbyAndAllDownFailsOpen() {
        var b = Balancer(algorithm: .first, upstreams: ["a:1", "b:1", "c:1"])
        XCTAssertEqual(b.pick(clientHash: 1, isUp: { _ in true }).index, 0)
        XCTAssertEqual(b.pick(clientHash: 1, isUp: { $0 != 0 }).index, 1)
        let open = b.pick(clientHash: 1, isUp: { _ in false })
        XCTAssertEqual(open.index, 0)
        XCTAssertTrue(open.failOpen)
        var rr = Balancer(algorithm: .roundRobin, upstreams: ["a:1", "b:1"])
        XCTAssertTrue(rr.pick(clientHash: 1, isUp: { _ in false }).failOpen)
    }

    func testRandomUsesOnlyUpUpstreams() {
        var b = Balancer(algorithm: .random, upstreams: ["a:1", "b:1", "c:1", "d:1"])
        var counts = [0, 0, 0, 0]
        for i in 0..<4000 { counts[b.pick(clientHash: UInt64(i), isUp: { $0 != 2 }).index] += 1 }
        XCTAssertEqual(counts[2], 0)
        for i in [0, 1, 3] { XCTAssertGreaterThan(counts[i], 1000, "\(counts)") }
    }

    /// Rendezvous hashing: sticky per client, even, and removing one of 5 upstreams moves only
    /// that upstream's clients (about 1/5 of all); adding a 6th moves about 1/6.
    func testHashIsStickyEvenAndRemapsAboutOneInN() {
        let names = ["10.0.0.1:53", "10.0.0.2:53", "10.0.0.3:53", "10.0.0.4:53", "10.0.0.5:53"]
        var five = Balancer(algorithm: .hash, upstreams: names)
        let clients = 20_000
        let before = (0..<clients).map { five.pick(clientHash: key($0).stableHash, isUp: { _ in true }).index }
        for c in 0..<200 {
            XCTAssertEqual(five.pick(clientHash: key(c).stableHash, isUp: { _ in true }).index, before[c], "sticky")
        }
        var counts = [Int](repeating: 0, count: 5)
        for u in before { counts[u] += 1 }
        for c in counts { XCTAssertEqual(Double(c) / Double(clients), 0.2, accuracy: 0.02, "even: \(counts)") }

        // Remove upstream 2 from the configuration (a new balancer over the other four).
        var four = Balancer(algorithm: .hash, upstreams: names.enumerated().filter { $0.offset != 2 }.map(\.element))
        let mapBack = [0, 1, 3, 4]
        var moved = 0
        for c in 0..<clients {
            let after = mapBack[four.pick(clientHash: key(c).stableHash, isUp: { _ in true }).index]
            if after != before[c] {
                moved += 1
                XCTAssertEqual(before[c], 2, "only clients of the removed upstream move")
            }
        }
        let fraction = Double(moved) / Double(clients)
        print("hash remap fraction after removing 1 of 5 upstreams: \(fraction)")
        XCTAssertEqual(fraction, 0.2, accuracy: 0.02)

        // Marking an upstream down (instead of removing it) gives the same answer.
        for c in 0..<500 {
            let down = five.pick(clientHash: key(c).stableHash, isUp: { $0 != 2 }).index
            XCTAssertEqual(down, mapBack[four.pick(clientHash: key(c).stableHash, isUp: { _ in true }).index])
        }

        var six = Balancer(algorithm: .hash, upstreams: names + ["10.0.0.6:53"])
        let added = (0..<clients).filter { six.pick(clientHash: key($0).stableHash, isUp: { _ in true }).index != before[$0] }
        print("hash remap fraction after adding a 6th upstream: \(Double(added.count) / Double(clients))")
        XCTAssertEqual(Double(added.count) / Double(clients), 1.0 / 6.0, accuracy: 0.02)
    }

    // MARK: HealthState

    func testPassiveHealthMarksDownAfterMaxFailsWithinWindow() {
        var h = HealthState(maxFails: 3, failTimeout: 1000 * Self.ms)
        XCTAssertFalse(h.recordFailure(now: 0))
        XCTAssertFalse(h.recordFailure(now: 100 * Self.ms))
        XCTAssertFalse(h.isDown(now: 100 * Self.ms))
        XCTAssertTrue(h.recordFailure(now: 200 * Self.ms), "third failure within the window")
        XCTAssertTrue(h.isDown(now: 201 * Self.ms))
        XCTAssertTrue(h.isDown(now: 1199 * Self.ms))
        XCTAssertFalse(h.recordFailure(now: 500 * Self.ms), "failures while down do not extend it")
        XCTAssertFalse(h.isDown(now: 1200 * Self.ms), "up again after fail_timeout")
    }

    func testPassiveHealthWindowResets() {
        var h = HealthState(maxFails: 2, failTimeout: 1000 * Self.ms)
        XCTAssertFalse(h.recordFailure(now: 0))
        XCTAssertFalse(h.recordFailure(now: 1500 * Self.ms), "the first failure fell out of the window")
        XCTAssertTrue(h.recordFailure(now: 1600 * Self.ms))
        var off = HealthState(maxFails: 0, failTimeout: 1000 * Self.ms)
        for t in 0..<100 { XCTAssertFalse(off.recordFailure(now: UInt64(t))) }
        XCTAssertFalse(off.isDown(now: 100))
    }

    func testProbeResultsMarkDownAndUp() {
        var h = HealthState(maxFails: 1, failTimeout: 1000 * Self.ms)
        XCTAssertNil(h.recordProbe(answered: true, now: 0))
        XCTAssertEqual(h.recordProbe(answered: false, now: 10), true)
        XCTAssertNil(h.recordProbe(answered: false, now: 20))
        XCTAssertTrue(h.isDown(now: 5000 * Self.ms), "probe-down lasts until a probe is answered")
        XCTAssertEqual(h.recordProbe(answered: true, now: 30), false)
        XCTAssertFalse(h.isDown(now: 31))
    }

    func testHealthFailsProbesInARowMarkDownAndOneAnswerBringsItBack() {
        var h = HealthState(maxFails: 1, failTimeout: 1000 * Self.ms, probeFails: 3)
        XCTAssertNil(h.recordProbe(answered: false, now: 10))
        XCTAssertNil(h.recordProbe(answered: false, now: 20), "two lost probes are not enough")
        XCTAssertNil(h.recordProbe(answered: true, now: 30), "an answer starts the count again")
        XCTAssertNil(h.recordProbe(answered: false, now: 40))
        XCTAssertNil(h.recordProbe(answered: false, now: 50))
        XCTAssertFalse(h.isDown(now: 51))
        XCTAssertEqual(h.recordProbe(answered: false, now: 60), true, "the third in a row marks it down")
        XCTAssertNil(h.recordProbe(answered: false, now: 70))
        XCTAssertEqual(h.recordProbe(answered: true, now: 80), false, "one answer brings it back")
    }

    func testDurationNanoseconds() {
        XCTAssertEqual(Duration.milliseconds(250).nanoseconds, 250_000_000)
        XCTAssertEqual(Duration.seconds(60).nanoseconds, 60_000_000_000)
    }
}
