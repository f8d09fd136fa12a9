import XCTest

@testable import UDPRelayConfig
@testable import UDPRelayDatapath

#if canImport(Glibc)
import Glibc
#endif

/// `balance = hash` as a contract between instances: every instance with the same upstream list
/// picks the same upstream for a client, whatever the list's order, in every process and every
/// version. The golden table below was taken from the implementation once and is hard-coded: a
/// change to the hash, the mixing or the rendezvous scoring that moves any client fails here
/// (and would split a fleet running two versions).
final class HashContractTests: XCTestCase {
    /// A client key built from real socket address bytes, as the worker builds it.
    func client(_ text: String) throws -> ClientKey {
        let address = try Values.socketAddress(Substring(text))
        let (storage, _) = address.storage()
        return withUnsafeBytes(of: storage) { ClientKey(sockaddr: $0.baseAddress!)! }
    }

    static let clients = [
        "192.0.2.1:40000", "192.0.2.1:40001", "198.51.100.7:53", "203.0.113.250:65535", "10.1.2.3:1024", "172.16.0.9:5000",
        "[2001:db8::1]:40000", "[2001:db8::1]:40001", "[2001:db8:ffff::abcd]:53", "[2001:db8:1:2:3:4:5:6]:65535",
    ]

    static let lists = [
        "10.0.0.1:53, 10.0.0.2:53, 10.0.0.3:53, 10.0.0.4:53",
        "[2001:db8::10]:53, [2001:db8::11]:53, [2001:db8::12]:53",
        "10.0.0.1:53 weight=1, 10.0.0.2:53 weight=3, [2001:db8::10]:53 weight=2",
        "[2001:db8::10]:53 weight=5, [2001:db8::11]:53 weight=1, [2001:db8::12]:53 weight=1, [2001:db8::13]:53 weight=2",
        "dns-a.example:53, dns-b.example:53, dns-c.example:5353",
    ]

    /// Expected upstream index per list (rows) and client (columns), `hash_key = address_port`.
    static let goldenAddressPort: [[Int]] = [
        [2, 1, 1, 3, 2, 3, 3, 2, 2, 2],
        [2, 1, 2, 0, 1, 1, 0, 2, 1, 1],
        [1, 1, 1, 2, 1, 0, 1, 1, 2, 2],
        [2, 3, 2, 0, 0, 1, 3, 0, 3, 3],
        [1, 0, 0, 0, 0, 1, 1, 2, 1, 2],
    ]
    /// The same with `hash_key = address`.
    static let goldenAddress: [[Int]] = [
        [2, 2, 0, 3, 3, 0, 3, 3, 0, 3],
        [2, 2, 0, 0, 0, 2, 1, 1, 0, 1],
        [1, 1, 2, 1, 2, 0, 1, 1, 0, 2],
        [3, 3, 0, 0, 3, 0, 3, 3, 3, 0],
        [1, 1, 0, 2, 1, 0, 1, 1, 2, 1],
    ]

    func picks(_ list: [UpstreamEndpoint], _ hashKey: HashKey) throws -> [Int] {
        var b = Balancer(algorithm: .hash, upstreams: list, hashKey: hashKey)
        return try Self.clients.map { b.pick(clientHash: b.clientHash(try client($0)), isUp: { _ in true }).index }
    }

    /// The inputs of the table, pinned bit for bit: the client hashes and an upstream's seed.
    func testGoldenHashesOfClientsAndUpstreams() throws {
        XCTAssertEqual(try client("192.0.2.1:40000").stableHash(.addressPort), 0x96fb_4e43_48a8_0298)
        XCTAssertEqual(try client("192.0.2.1:40000").stableHash(.address), 0x488b_f43f_d301_d926)
        XCTAssertEqual(try client("[2001:db8::1]:40000").stableHash(.addressPort), 0x0ef8_ed6f_80a9_7172)
        XCTAssertEqual(try client("[2001:db8::1]:40000").stableHash(.address), 0x01e6_dcf6_b19e_9ca2)
        // FNV-1a 64 of the text, as any other implementation computes it.
        XCTAssertEqual(Mix.fnv1a("10.0.0.1:53"), 0x5273_4f4b_641a_5869)
        XCTAssertEqual(Balancer.weight(clientHash: 1, seed: 2), 0xe06d_d043_328b_d285)
    }

    func testGoldenTableOfClientsToUpstreams() throws {
        for (hashKey, golden) in [(HashKey.addressPort, Self.goldenAddressPort), (.address, Self.goldenAddress)] {
            var table: [[Int]] = []
            for text in Self.lists { table.append(try picks(try Values.upstreams(text), hashKey)) }
            XCTAssertEqual(table, golden, "hash_key = \(hashKey.rawValue): the choice of balance = hash changed; instances of two versions would disagree")
        }
    }

    /// Every order of each list's lines picks the same upstream (by address) for every client:
    /// rendezvous scores are seeded by an upstream's text, not its position.
    func testOrderOfTheUpstreamListDoesNotMatter() throws {
        let clients = (0..<2000).map { i in
            i % 2 == 0 ? "10.\(i / 250 % 256).\(i % 250).1:\(1024 + i)" : "[2001:db8::\(String(i, radix: 16))]:\(40000 + i)"
        }
        let keys = try clients.map(client)
        for text in Self.lists {
            let list = try Values.upstreams(text)
            func chosen(_ order: [UpstreamEndpoint]) -> [String] {
                var b = Balancer(algorithm: .hash, upstreams: order)
                return keys.map { order[b.pick(clientHash: b.clientHash($0), isUp: { _ in true }).index].description }
            }
            let reference = chosen(list)
            XCTAssertEqual(Set(reference).count, list.count, "\(text): every upstream takes some of 2000 clients")
            for order in permutations(list) {
                XCTAssertEqual(chosen(order), reference, "\(order.map(\.description)) chooses differently from \(text)")
            }
        }
    }

    /// An upstream's seed is its canonical text: two spellings of one address are one upstream.
    func testSpellingsOfOneAddressPickAlike() throws {
        let upper = try Values.upstreams("[2001:DB8::0:10]:53, 10.0.0.1:53")
        let lower = try Values.upstreams("[2001:db8::10]:53, 10.0.0.1:53")
        var a = Balancer(algorithm: .hash, upstreams: upper)
        var b = Balancer(algorithm: .hash, upstreams: lower)
        let keys = try (0..<500).map { try client("192.0.2.\($0 % 250 + 1):\(2000 + $0)") }
        XCTAssertEqual(
            keys.map { a.pick(clientHash: a.clientHash($0), isUp: { _ in true }).index },
            keys.map { b.pick(clientHash: b.clientHash($0), isUp: { _ in true }).index })
    }

    /// `hash_key = address`: a client whose NAT rebinds its port keeps its upstream; with the
    /// default `address_port` the port is part of the choice.
    func testAddressKeyKeepsTheUpstreamWhenTheClientPortChanges() throws {
        let list = try Values.upstreams(Self.lists[0])
        var byAddress = Balancer(algorithm: .hash, upstreams: list, hashKey: .address)
        var byAddressPort = Balancer(algorithm: .hash, upstreams: list)
        XCTAssertEqual(byAddressPort.hashKey, .addressPort, "the default")
        for host in ["192.0.2.1", "198.51.100.77", "[2001:db8::1]", "[2001:db8:ffff::abcd]"] {
            let ports = try (0..<500).map { try client("\(host):\(1024 + $0 * 97)") }
            let fixed = Set(ports.map { byAddress.pick(clientHash: byAddress.clientHash($0), isUp: { _ in true }).index })
            XCTAssertEqual(fixed.count, 1, "\(host): 500 ports of one address must share one upstream with hash_key = address")
            let spread = Set(ports.map { byAddressPort.pick(clientHash: byAddressPort.clientHash($0), isUp: { _ in true }).index })
            XCTAssertEqual(spread.count, list.count, "\(host): with address_port the ports spread over every upstream")
        }
        // Different addresses still spread with hash_key = address.
        let hosts = try (0..<1000).map { try client("10.9.\($0 / 250).\($0 % 250 + 1):5000") }
        var counts = [Int](repeating: 0, count: list.count)
        for k in hosts { counts[byAddress.pick(clientHash: byAddress.clientHash(k), isUp: { _ in true }).index] += 1 }
        for c in counts { XCTAssertEqual(Double(c) / 1000, 0.25, accuracy: 0.06, "\(counts)") }
    }

    func permutations<T>(_ items: [T]) -> [[T]] {
        guard items.count > 1 else { return [items] }
        var all: [[T]] = []
        for i in items.indices {
            var rest = items
            let first = rest.remove(at: i)
            for p in permutations(rest) { all.append([first] + p) }
        }
        return all
    }
}
