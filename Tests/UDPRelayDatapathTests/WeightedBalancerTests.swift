import XCTest

@testable import UDPRelayConfig
@testable import UDPRelayDatapath

#if canImport(Glibc)
import Glibc
#endif

/// Upstream options in the balancer: `weight=N` for every algorithm that spreads, `drain`
/// (no new sessions) and `backup` (only while no primary is up). Pure: no sockets.
final class WeightedBalancerTests: XCTestCase {
    func key(_ i: Int) -> ClientKey {
        var sin = sockaddr_in()
        sin.sin_family = sa_family_t(AF_INET)
        sin.sin_port = UInt16(truncatingIfNeeded: 1024 + i % 60000).bigEndian
        sin.sin_addr.s_addr = UInt32(0x0A00_0000 + i / 60000).bigEndian
        return withUnsafeBytes(of: sin) { ClientKey(sockaddr: $0.baseAddress!)! }
    }

    func upstreams(_ items: String) throws -> [UpstreamEndpoint] {
        try Values.upstreams(items)
    }

    func shares(_ b: inout Balancer, clients: Int = 10_000, isUp: (Int) -> Bool = { _ in true }) -> [Double] {
        var counts = [Int](repeating: 0, count: b.count)
        for c in 0..<clients { counts[b.pick(clientHash: key(c).stableHash, isUp: isUp).index] += 1 }
        return counts.map { Double($0) / Double(clients) }
    }

    func testWeightsOneToThreeSplitTwentyFiveSeventyFive() throws {
        let list = try upstreams("10.0.0.1:53, 10.0.0.2:53 weight=3")
        for algorithm in [BalanceAlgorithm.hash, .random] {
            var b = Balancer(algorithm: algorithm, upstreams: list, seed: 42)
            let s = shares(&b)
            print("\(algorithm) weights 1:3 over 10000 clients: \(s)")
            XCTAssertEqual(s[0], 0.25, accuracy: 0.02, "\(algorithm): \(s)")
            XCTAssertEqual(s[1], 0.75, accuracy: 0.02, "\(algorithm): \(s)")
        }
        // Round robin: exactly 1 and 3 in every cycle of 4, interleaved (smooth, as nginx).
        var rr = Balancer(algorithm: .roundRobin, upstreams: list)
        var picks: [Int] = []
        for c in 0..<400 { picks.append(rr.pick(clientHash: UInt64(c), isUp: { _ in true }).index) }
        for cycle in stride(from: 0, to: 400, by: 4) {
            XCTAssertEqual(picks[cycle..<cycle + 4].filter { $0 == 0 }.count, 1, "cycle at \(cycle): \(picks[cycle..<cycle + 4])")
        }
        var swrr = Balancer(algorithm: .roundRobin, upstreams: try upstreams("a.example:1 weight=5, b.example:1, c.example:1"))
        let seven = (0..<7).map { _ in swrr.pick(clientHash: 0, isUp: { _ in true }).index }
        XCTAssertEqual(seven, [0, 0, 1, 0, 2, 0, 0], "nginx's smooth weighted round robin sequence for 5:1:1")
    }

    /// Weighted rendezvous hashing keeps the minimal-remap property: removing one of five
    /// weighted upstreams moves exactly the clients that were on it, and nobody else.
    func testRemovingOneOfFiveWeightedUpstreamsRemapsOnlyItsClients() throws {
        let all = try upstreams("10.0.0.1:53 weight=1, 10.0.0.2:53 weight=2, 10.0.0.3:53 weight=3, 10.0.0.4:53 weight=4, 10.0.0.5:53 weight=5")
        var five = Balancer(algorithm: .hash, upstreams: all)
        let clients = 10_000
        let before = (0..<clients).map { five.pick(clientHash: key($0).stableHash, isUp: { _ in true }).index }
        var four = Balancer(algorithm: .hash, upstreams: all.enumerated().filter { $0.offset != 3 }.map(\.element))
        let mapBack = [0, 1, 2, 4]
        var moved = 0
        for c in 0..<clients {
            let after = mapBack[four.pick(clientHash: key(c).stableHash, isUp: { _ in true }).index]
            if before[c] == 3 {
                moved += 1
                XCTAssertNotEqual(after, 3)
            } else {
                XCTAssertEqual(after, before[c], "client \(c) was not on the removed upstream but moved")
            }
        }
        // Its share was 4/15 of the clients.
        XCTAssertEqual(Double(moved) / Double(clients), 4.0 / 15.0, accuracy: 0.02)
    }

    /// Equal weights written out give exactly the choices of the unweighted balancer, for every
    /// algorithm, healthy or not.
    func testEqualWeightsMakeTodaysChoices() throws {
        let names = ["10.0.0.1:53", "10.0.0.2:53", "10.0.0.3:53", "10.0.0.4:53"]
        let weighted = try upstreams(names.map { "\($0) weight=7" }.joined(separator: ", "))
        for algorithm in BalanceAlgorithm.allCases {
            var old = Balancer(algorithm: algorithm, upstreams: names, seed: 9)
            var new = Balancer(algorithm: algorithm, upstreams: weighted, seed: 9)
            for c in 0..<5000 {
                let up: (Int) -> Bool = { $0 != c % 5 }
                XCTAssertEqual(
                    old.pick(clientHash: key(c).stableHash, isUp: up).index,
                    new.pick(clientHash: key(c).stableHash, isUp: up).index, "\(algorithm), client \(c)")
            }
        }
    }

    func testDrainingUpstreamGetsNoNewSessionsEvenWhenOthersAreDown() throws {
        let list = try upstreams("10.0.0.1:53, 10.0.0.2:53 drain, 10.0.0.3:53")
        for algorithm in BalanceAlgorithm.allCases {
            var b = Balancer(algorithm: algorithm, upstreams: list, seed: 1)
            for c in 0..<2000 {
                XCTAssertNotEqual(b.pick(clientHash: key(c).stableHash, isUp: { _ in true }).index, 1, "\(algorithm)")
            }
            let open = b.pick(clientHash: 5, isUp: { _ in false })
            XCTAssertTrue(open.failOpen)
            XCTAssertNotEqual(open.index, 1, "\(algorithm): failing open never lands on a draining upstream")
        }
    }

    func testBackupTakesSessionsOnlyWhileNoPrimaryIsUp() throws {
        let list = try upstreams("10.0.0.1:53 backup, 10.0.0.2:53, 10.0.0.3:53, 10.0.0.4:53 backup")
        for algorithm in BalanceAlgorithm.allCases {
            var b = Balancer(algorithm: algorithm, upstreams: list, seed: 3)
            var onPrimaries = Set<Int>()
            for c in 0..<1000 { onPrimaries.insert(b.pick(clientHash: key(c).stableHash, isUp: { _ in true }).index) }
            XCTAssertTrue(onPrimaries.isSubset(of: [1, 2]), "\(algorithm): \(onPrimaries)")
            XCTAssertEqual(b.pick(clientHash: 7, isUp: { $0 != 1 }).index, 2, "\(algorithm): the other primary first")
            var onBackups = Set<Int>()
            for c in 0..<1000 {
                let p = b.pick(clientHash: key(c).stableHash, isUp: { $0 == 0 || $0 == 3 })
                XCTAssertFalse(p.failOpen)
                onBackups.insert(p.index)
            }
            XCTAssertTrue(onBackups.isSubset(of: [0, 3]), "\(algorithm): \(onBackups)")
            if algorithm != .first { XCTAssertEqual(onBackups, [0, 3], "\(algorithm) spreads over the backups") }
            XCTAssertEqual(b.pick(clientHash: 7, isUp: { $0 == 3 }).index, 3, "\(algorithm): the backup that is up")
            let open = b.pick(clientHash: 7, isUp: { _ in false })
            XCTAssertTrue(open.failOpen)
            XCTAssertTrue([1, 2].contains(open.index), "\(algorithm): all down fails open onto the primaries")
        }
        // balance = first is today's active/standby: a draining primary hands new sessions on.
        var first = Balancer(algorithm: .first, upstreams: try upstreams("10.0.0.1:53 drain, 10.0.0.2:53 backup, 10.0.0.3:53"))
        XCTAssertEqual(first.pick(clientHash: 1, isUp: { _ in true }).index, 2)
        XCTAssertEqual(first.pick(clientHash: 1, isUp: { $0 != 2 }).index, 1)
    }
}
