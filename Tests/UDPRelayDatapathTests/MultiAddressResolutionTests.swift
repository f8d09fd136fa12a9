import Dispatch
import Foundation
import Logging
import XCTest

@testable import UDPRelayConfig
@testable import UDPRelayDatapath

#if canImport(Glibc)
import Glibc
#endif

/// A resolver whose answer the test sets: every name answers the current list (tests change it
/// between lookups). The machine's resolver is never used.
final class SettableResolver: @unchecked Sendable {
    // @unchecked: `answer` is guarded by `lock`.
    private let lock = NSLock()
    private var answer: [String]
    init(_ answer: [String]) { self.answer = answer }

    func set(_ addresses: [String]) {
        lock.lock()
        answer = addresses
        lock.unlock()
    }

    func resolve(_ host: String, _ port: UInt16) -> Result<[SocketAddress], UpstreamTable.ResolveError> {
        lock.lock()
        defer { lock.unlock() }
        return .success(answer.map { SocketAddress(ip: IPAddress(literal: $0)!, port: port) })
    }
}

/// Every address of an upstream hostname is an upstream of its own: the set follows the answer,
/// an address that leaves it drains (its sessions stay, no new one comes) and goes once its
/// sessions end; `resolve` picks the family. Pure table and balancer: no sockets.
final class MultiAddressResolutionTests: XCTestCase {
    func table(
        _ upstreams: String, resolver: SettableResolver, family: ResolveFamily = .any, mode: ListenerMode = .balance,
        balance: BalanceAlgorithm = .roundRobin, log: CapturedLog = CapturedLog()
    ) throws -> UpstreamTable {
        let lc = ListenerConfiguration(
            name: "r", listen: [SocketAddress(ip: .v4(0x7F00_0001), port: 0)], mode: mode,
            upstreams: try Values.upstreams(upstreams), balance: balance, resolveFamily: family)
        let t = UpstreamTable(
            configuration: lc, workers: 1, logger: Logger(label: "t") { _ in log }, resolver: { resolver.resolve($0, $1) })
        t.awaitInitialResolution()
        return t
    }

    func rows(_ t: UpstreamTable) -> [String] {
        t.snapshot().map { "\($0.endpoint) \($0.address.map { "\($0)" } ?? "-")\($0.removed ? " removed" : "")" }
    }

    func slot(_ t: UpstreamTable, _ address: String) throws -> Int {
        let a = try SocketAddress(parsing: address)
        return try XCTUnwrap(t.lock.withLockedValue { $0.addresses.firstIndex(of: a) }, "\(address) has no slot")
    }

    /// Sweeps as the timer does, twice (a drained address goes at the second sweep that finds
    /// it without sessions), as if `after` nanoseconds had passed since now.
    func sweep(_ t: UpstreamTable, after: UInt64 = UpstreamTable.removalGrace) {
        t.resolveQueue.sync {
            t.sweep(now: SystemClock.monotonicNanos() + after)
            t.sweep(now: SystemClock.monotonicNanos() + after)
        }
    }

    /// The upstreams new sessions take: every pick of many clients.
    func picked(_ t: UpstreamTable, clients: Int = 64) -> Set<String> {
        var b = t.makeBalancer(algorithm: .roundRobin, hashKey: .addressPort)
        return Set(
            (0..<clients).compactMap { c in
                let p = t.pick(&b, clientHash: UInt64(c), now: 1)
                return p.failOpen ? nil : t.address(p.index).map { "\($0)" }
            })
    }

    func testTwoThenThreeThenOneAddressTheUpstreamsFollowAndDrainedOnesLeaveWhenTheirSessionsEnd() throws {
        let dns = SettableResolver(["192.0.2.1", "192.0.2.2"])
        let log = CapturedLog()
        let t = try table("svc.test:53, 198.51.100.9:53", resolver: dns, log: log)
        defer { stop(t) }
        XCTAssertEqual(rows(t), ["svc.test:53 192.0.2.1:53", "svc.test:53 192.0.2.2:53", "198.51.100.9:53 198.51.100.9:53"])
        XCTAssertEqual(t.snapshot().map(\.hostname), [true, true, false])
        XCTAssertEqual(picked(t), ["192.0.2.1:53", "192.0.2.2:53", "198.51.100.9:53"])

        dns.set(["192.0.2.1", "192.0.2.2", "192.0.2.3"])
        t.resolveNames().wait()
        XCTAssertEqual(
            rows(t), ["svc.test:53 192.0.2.1:53", "svc.test:53 192.0.2.2:53", "svc.test:53 192.0.2.3:53", "198.51.100.9:53 198.51.100.9:53"])
        XCTAssertEqual(picked(t), ["192.0.2.1:53", "192.0.2.2:53", "192.0.2.3:53", "198.51.100.9:53"])

        // Two sessions on .2 (one per worker row), none on .1.
        let two = try slot(t, "192.0.2.2:53")
        t.counters[0][two].sessionOpened()
        t.counters[1][two].sessionOpened()
        dns.set(["192.0.2.3"])
        t.resolveNames().wait()
        XCTAssertEqual(
            rows(t),
            [
                "svc.test:53 192.0.2.1:53 removed", "svc.test:53 192.0.2.2:53 removed", "svc.test:53 192.0.2.3:53",
                "198.51.100.9:53 198.51.100.9:53",
            ])
        let s = t.snapshot()
        XCTAssertEqual(s.map(\.draining), [true, true, false, false], "an address gone from the answer drains")
        XCTAssertEqual(s[1].counters[.sessionsActive], 2, "with its live sessions")
        XCTAssertEqual(s.map(\.state), ["up", "up", "up", "up"], "draining is not down")
        XCTAssertEqual(picked(t), ["192.0.2.3:53", "198.51.100.9:53"], "no new session goes to a removed address")
        XCTAssertEqual(log.lines.filter { $0.contains("left the answer") }.count, 2, log.lines.joined(separator: "\n"))

        sweep(t, after: 0)
        XCTAssertEqual(rows(t).count, 4, "nothing goes within the grace after the change")
        sweep(t)
        XCTAssertEqual(
            rows(t), ["svc.test:53 192.0.2.2:53 removed", "svc.test:53 192.0.2.3:53", "198.51.100.9:53 198.51.100.9:53"],
            "the address without sessions goes; the one with sessions stays")
        t.counters[0][two].sessionEnded()
        sweep(t)
        XCTAssertEqual(t.snapshot()[0].counters[.sessionsActive], 1)
        t.counters[1][two].sessionEnded()
        t.resolveQueue.sync { t.sweep(now: SystemClock.monotonicNanos() + UpstreamTable.removalGrace) }
        XCTAssertEqual(rows(t).count, 3, "a worker that just ended a session may still read its address: one more sweep")
        sweep(t)
        XCTAssertEqual(rows(t), ["svc.test:53 192.0.2.3:53", "198.51.100.9:53 198.51.100.9:53"], "gone once its last session ended")
        XCTAssertEqual(log.lines.filter { $0.contains("drained and removed") }.count, 2)

        // A freed slot takes a new address with counters of its own.
        t.counters[0][try slot(t, "192.0.2.3:53")].add(.sentPackets, 7)
        dns.set(["192.0.2.3", "192.0.2.4", "192.0.2.5"])
        t.resolveNames().wait()
        XCTAssertEqual(
            Dictionary(uniqueKeysWithValues: t.snapshot().map { ("\($0.address!)", $0.counters[.sentPackets]) }),
            ["192.0.2.3:53": 7, "192.0.2.4:53": 0, "192.0.2.5:53": 0, "198.51.100.9:53": 0])
        XCTAssertEqual(picked(t), ["192.0.2.3:53", "192.0.2.4:53", "192.0.2.5:53", "198.51.100.9:53"])
    }

    func testAnAddressThatComesBackBeforeItDrainedTakesSessionsAgain() throws {
        let dns = SettableResolver(["192.0.2.1", "192.0.2.2"])
        let t = try table("svc.test:53, 198.51.100.9:53", resolver: dns)
        defer { stop(t) }
        let g = t.generation[0]
        dns.set(["192.0.2.1"])
        t.resolveNames().wait()
        XCTAssertEqual(picked(t), ["192.0.2.1:53", "198.51.100.9:53"])
        dns.set(["192.0.2.2", "192.0.2.1"])
        t.resolveNames().wait()
        XCTAssertEqual(rows(t), ["svc.test:53 192.0.2.1:53", "svc.test:53 192.0.2.2:53", "198.51.100.9:53 198.51.100.9:53"])
        XCTAssertEqual(picked(t), ["192.0.2.1:53", "192.0.2.2:53", "198.51.100.9:53"])
        let now = t.generation[0]
        XCTAssertNotEqual(now, g)
        t.resolveNames().wait()
        XCTAssertEqual(t.generation[0], now, "the same answer in another order changes nothing")
    }

    func testResolveIPv4OrIPv6FiltersTheOtherFamilyOut() throws {
        let answer = ["192.0.2.1", "2001:db8::1", "192.0.2.2", "2001:db8::2"]
        let expected: [(ResolveFamily, [String])] = [
            (.ipv4, ["192.0.2.1:53", "192.0.2.2:53"]),
            (.ipv6, ["[2001:db8::1]:53", "[2001:db8::2]:53"]),
            (.any, ["192.0.2.1:53", "[2001:db8::1]:53", "192.0.2.2:53", "[2001:db8::2]:53"]),
        ]
        for (family, addresses) in expected {
            let t = try table("svc.test:53, 198.51.100.9:53", resolver: SettableResolver(answer), family: family)
            defer { stop(t) }
            XCTAssertEqual(t.snapshot().filter(\.hostname).compactMap { $0.address.map { "\($0)" } }, addresses, "resolve = \(family)")
        }
        // Only the other family: no address, as a failed lookup.
        let log = CapturedLog()
        let t = try table("svc.test:53, 198.51.100.9:53", resolver: SettableResolver(["2001:db8::1"]), family: .ipv4, log: log)
        defer { stop(t) }
        XCTAssertEqual(t.snapshot().map(\.state), ["unresolved", "up"])
        XCTAssertEqual(t.snapshot()[0].lastError, "cannot resolve: no IPv4 address (resolve = ipv4)")
        XCTAssertEqual(log.lines.filter { $0.contains("cannot resolve upstream") }.count, 1)
    }

    func testAnswersBeyondTheCapAreLeftOutAndLoggedOnce() throws {
        let many = (1...20).map { "192.0.2.\($0)" }
        let log = CapturedLog()
        let dns = SettableResolver(many)
        let t = try table("svc.test:53, 198.51.100.9:53", resolver: dns, log: log)
        defer { stop(t) }
        XCTAssertEqual(t.snapshot().filter(\.hostname).count, UpstreamTable.addressesPerName)
        t.resolveNames().wait()
        XCTAssertEqual(log.lines.filter { $0.contains("more addresses than it has room for") }.count, 1)
    }

    /// `hash` scores each address by the address: a name answering A, B picks as the literal
    /// list `A, B` does; an address that goes moves only its own clients, one that comes takes
    /// clients only for itself. Weights apply to every address of the entry.
    func testHashMovesOnlyTheShareOfTheAddressThatComesOrGoes() throws {
        let five = (1...5).map { "10.0.0.\($0)" }
        let dns = SettableResolver(five)
        let t = try table("svc.test:53 weight=2, 198.51.100.9:53", resolver: dns, balance: .hash)
        defer { stop(t) }
        var b = t.makeBalancer(algorithm: .hash, hashKey: .addressPort)
        let clients = 10_000
        func map() -> [String] {
            (0..<clients).map { c in t.address(t.pick(&b, clientHash: Mix.hash(UInt64(c)), now: 1).index)!.description }
        }
        let before = map()
        // As the literal list with the same weights.
        var literal = Balancer(
            algorithm: .hash, upstreams: try Values.upstreams(five.map { "\($0):53 weight=2" }.joined(separator: ", ") + ", 198.51.100.9:53"))
        let literalMap = (0..<clients).map { c in literal.pick(clientHash: Mix.hash(UInt64(c)), isUp: { _ in true }).index }
        let literalNames = five.map { "\($0):53" } + ["198.51.100.9:53"]
        XCTAssertEqual(before, literalMap.map { literalNames[$0] }, "a name's addresses hash as the same literal addresses")
        let share = Double(before.filter { $0 == "198.51.100.9:53" }.count) / Double(clients)
        XCTAssertEqual(share, 1.0 / 11.0, accuracy: 0.02, "weight 2 on each of five addresses against weight 1")

        dns.set(five.filter { $0 != "10.0.0.3" })
        t.resolveNames().wait()
        let after = map()
        for c in 0..<clients where before[c] != "10.0.0.3:53" {
            XCTAssertEqual(after[c], before[c], "client \(c) was not on the removed address")
        }
        XCTAssertFalse(after.contains("10.0.0.3:53"))

        dns.set(five + ["10.0.0.6"])
        t.resolveNames().wait()
        let added = map()
        for c in 0..<clients where added[c] != before[c] {
            XCTAssertEqual(added[c], "10.0.0.6:53", "client \(c) moved, only to the new address")
        }
        let moved = Double((0..<clients).filter { added[$0] != before[$0] }.count) / Double(clients)
        XCTAssertEqual(moved, 2.0 / 13.0, accuracy: 0.02, "the new address takes its weight's share")
    }

    func testRoundRobinAndFirstOverTheAddresses() throws {
        let dns = SettableResolver(["192.0.2.1", "192.0.2.2"])
        let t = try table("svc.test:53 weight=3, 198.51.100.9:53 weight=2", resolver: dns)
        defer { stop(t) }
        var rr = t.makeBalancer(algorithm: .roundRobin, hashKey: .addressPort)
        var counts: [String: Int] = [:]
        for c in 0..<80 { counts[t.address(t.pick(&rr, clientHash: UInt64(c), now: 1).index)!.description, default: 0] += 1 }
        XCTAssertEqual(counts, ["192.0.2.1:53": 30, "192.0.2.2:53": 30, "198.51.100.9:53": 20], "each address with the entry's weight")

        // `first` (and forward): the name's addresses at the name's place in the list.
        let f = try table("198.51.100.9:53, svc.test:53", resolver: SettableResolver(["192.0.2.1", "192.0.2.2"]), balance: .first)
        defer { stop(f) }
        var first = f.makeBalancer(algorithm: .first, hashKey: .addressPort)
        let one = f.address(f.pick(&first, clientHash: 1, now: 1).index)!.description
        XCTAssertEqual(one, "198.51.100.9:53")
        let down = SystemClock.monotonicNanos()
        for k in 0..<3 { f.recordFailure(0, now: down + UInt64(k), errno: ECONNREFUSED) }
        let next = f.pick(&first, clientHash: 1, now: down + 10)
        XCTAssertEqual(f.address(next.index)?.description, "192.0.2.1:53", "then the name's first address")
    }

    /// A mirror copies to each upstream once: a hostname keeps the first address of its answer,
    /// replaced in place (no second row, nothing drains), with its counters going on.
    func testAMirrorKeepsTheFirstAddressOfTheAnswer() throws {
        let dns = SettableResolver(["192.0.2.1", "192.0.2.2"])
        let t = try table("svc.test:53, 198.51.100.9:53", resolver: dns, mode: .mirror)
        defer { stop(t) }
        XCTAssertEqual(t.count, 2, "one slot per entry")
        XCTAssertEqual(rows(t), ["svc.test:53 192.0.2.1:53", "198.51.100.9:53 198.51.100.9:53"])
        t.counters[0][0].add(.sentPackets, 5)
        let g = t.generation[0]
        dns.set(["192.0.2.3", "192.0.2.1"])
        t.resolveNames().wait()
        XCTAssertEqual(rows(t), ["svc.test:53 192.0.2.3:53", "198.51.100.9:53 198.51.100.9:53"])
        XCTAssertEqual(t.snapshot()[0].counters[.sentPackets], 5)
        XCTAssertNotEqual(t.generation[0], g, "the mirror's sockets reconnect")
    }

    /// "upstream down" names the address of the hostname that went down, not only the name.
    func testHealthLogLinesNameTheAddress() throws {
        let lines = RecordLog()
        let lc = ListenerConfiguration(
            name: "r", listen: [SocketAddress(ip: .v4(0x7F00_0001), port: 0)], mode: .balance,
            upstreams: try Values.upstreams("svc.test:53, 198.51.100.9:53"))
        let dns = SettableResolver(["192.0.2.1", "192.0.2.2"])
        let t = UpstreamTable(configuration: lc, workers: 1, logger: Logger(label: "t") { _ in lines }, resolver: { dns.resolve($0, $1) })
        t.awaitInitialResolution()
        defer { stop(t) }
        let i = try slot(t, "192.0.2.2:53")
        let now = SystemClock.monotonicNanos()
        for k in 0..<3 { t.recordFailure(i, now: now + UInt64(k), errno: ECONNREFUSED) }
        XCTAssertEqual(t.snapshot().map(\.state), ["up", "down", "up"])
        let down = try XCTUnwrap(lines.entries.first { $0.message == "upstream down" })
        XCTAssertEqual(down.metadata["upstream"], "svc.test:53")
        XCTAssertEqual(down.metadata["upstream.address"], "192.0.2.2:53")
    }

    func stop(_ t: UpstreamTable) {
        let done = DispatchGroup()
        t.stop(done: done)
        done.wait()
    }
}
