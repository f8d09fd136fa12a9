import UDPRelayConfig
import XCTest

@testable import UDPRelayDatapath

/// The headers `spoof = yes` writes in front of each copy: field by field as RFC 791, RFC 8200
/// and RFC 768 lay them out, with UDP checksums checked against vectors computed elsewhere
/// (Python's struct module, word by word in network order) and against a reference sum
/// written here the plain way.
final class SpoofedHeaderTests: XCTestCase {
    /// RFC 1071, section 3: the sum of 00 01 f2 03 f4 f5 f6 f7 is dd f2.
    func testSumMatchesRFC1071Example() {
        let bytes: [UInt8] = [0x00, 0x01, 0xF2, 0x03, 0xF4, 0xF5, 0xF6, 0xF7]
        var folded = bytes.withUnsafeBytes { SpoofedHeader.fold(SpoofedHeader.sum($0.baseAddress!, count: $0.count)) }
        XCTAssertEqual(withUnsafeBytes(of: &folded) { Array($0) }, [0xDD, 0xF2])
    }

    /// Odd lengths, every length from 0 to 40 and a long payload: the same sum as 16-bit words
    /// taken in network order, the last byte padded.
    func testSumMatchesThePlainWayForEveryLength() {
        var state: UInt32 = 0x1234_5678
        for length in Array(0...40) + [1499, 65_507] {
            let bytes = (0..<length).map { _ -> UInt8 in
                state = state &* 1_103_515_245 &+ 12345
                return UInt8(truncatingIfNeeded: state >> 16)
            }
            var folded = bytes.withUnsafeBytes { SpoofedHeader.fold(SpoofedHeader.sum($0.baseAddress ?? UnsafeRawPointer(bitPattern: 8)!, count: $0.count)) }
            let networkOrder = withUnsafeBytes(of: &folded) { UInt16($0[0]) << 8 | UInt16($0[1]) }
            XCTAssertEqual(networkOrder, Self.referenceSum(bytes), "length \(length)")
        }
    }

    /// 198.18.1.2:40000 -> 198.18.3.2:2055 with "udprelayd": the UDP checksum is 0xba9e.
    func testIPv4CopyIsTheClientsDatagram() throws {
        let payload = Array("udprelayd".utf8)
        let p = try XCTUnwrap(
            SpoofedHeader.packet(
                client: SocketAddress(parsing: "198.18.1.2:40000"), collector: SocketAddress(parsing: "198.18.3.2:2055"), payload: payload))
        XCTAssertEqual(p.count, 28 + payload.count)
        XCTAssertEqual(p[0], 0x45, "version 4, 20-byte header")
        XCTAssertEqual(Array(p[2..<4]), [0, 37], "total length")
        XCTAssertEqual(Array(p[6..<8]), [0, 0], "DF clear, not a fragment")
        XCTAssertEqual(p[8], 64, "TTL")
        XCTAssertEqual(p[9], 17, "UDP")
        XCTAssertEqual(Array(p[12..<16]), [198, 18, 1, 2], "source: the client")
        XCTAssertEqual(Array(p[16..<20]), [198, 18, 3, 2], "destination: the collector")
        XCTAssertEqual(Array(p[20..<28]), [0x9C, 0x40, 0x08, 0x07, 0, 17, 0xBA, 0x9E], "ports 40000 -> 2055, length 17, checksum")
        XCTAssertEqual(Array(p[28...]), payload)
    }

    /// [2001:db8:1::2]:40001 -> [2001:db8:3::2]:2055 with "hello, collector": the checksum is
    /// 0xece1.
    func testIPv6CopyIsTheClientsDatagram() throws {
        let payload = Array("hello, collector".utf8)
        let p = try XCTUnwrap(
            SpoofedHeader.packet(
                client: SocketAddress(parsing: "[2001:db8:1::2]:40001"), collector: SocketAddress(parsing: "[2001:db8:3::2]:2055"),
                payload: payload))
        XCTAssertEqual(p.count, 48 + payload.count)
        XCTAssertEqual(Array(p[0..<4]), [0x60, 0, 0, 0], "version 6, no class or flow label")
        XCTAssertEqual(Array(p[4..<8]), [0, 24, 17, 64], "payload length, next header UDP, hop limit")
        XCTAssertEqual(Array(p[8..<24]), [0x20, 0x01, 0x0D, 0xB8, 0, 1] + Array(repeating: 0, count: 9) + [2])
        XCTAssertEqual(Array(p[24..<40]), [0x20, 0x01, 0x0D, 0xB8, 0, 3] + Array(repeating: 0, count: 9) + [2])
        XCTAssertEqual(Array(p[40..<48]), [0x9C, 0x41, 0x08, 0x07, 0, 24, 0xEC, 0xE1])
        XCTAssertEqual(Array(p[48...]), payload)
    }

    /// Summed over the pseudo-header and the whole UDP datagram, a correct checksum gives
    /// 0xffff: so for many ports, addresses and lengths of both families.
    func testChecksumVerifiesForManyDatagrams() throws {
        let pairs = [
            ("198.18.0.1", "198.19.255.254"), ("198.18.200.9", "198.18.0.255"),
            ("[2001:db8::1]", "[2001:db8:ffff::fe]"), ("[2001:db8:aa::12]", "[2001:db8::2]"),
        ]
        var state: UInt32 = 7
        for (client, collector) in pairs {
            for length in [0, 1, 2, 3, 7, 64, 511, 1400] {
                state = state &* 1_103_515_245 &+ 12345
                let sport = UInt16(truncatingIfNeeded: state >> 8) | 1
                let payload = (0..<length).map { UInt8(truncatingIfNeeded: Int($0) &* 31 &+ Int(state >> 24)) }
                let c = try SocketAddress(parsing: "\(client):\(sport)")
                let d = try SocketAddress(parsing: "\(collector):\(UInt16(truncatingIfNeeded: state >> 4) | 1)")
                let p = try XCTUnwrap(SpoofedHeader.packet(client: c, collector: d, payload: payload))
                XCTAssertEqual(Self.verify(p), 0xFFFF, "\(c) -> \(d), \(length) bytes")
            }
        }
    }

    /// A checksum that computes to 0 is sent as 0xffff (0 would mean "none", which IPv6 does
    /// not allow): a two-byte payload equal to the checksum of the zero payload makes the sum
    /// 0xffff.
    func testAZeroChecksumIsSentAsAllOnes() throws {
        for (client, collector) in [("198.18.1.2:5", "198.18.3.2:6"), ("[2001:db8::5]:5", "[2001:db8::6]:6")] {
            let c = try SocketAddress(parsing: client), d = try SocketAddress(parsing: collector)
            let zero = try XCTUnwrap(SpoofedHeader.packet(client: c, collector: d, payload: [0, 0]))
            let at = zero.count - 4
            let p = try XCTUnwrap(SpoofedHeader.packet(client: c, collector: d, payload: [zero[at], zero[at + 1]]))
            XCTAssertEqual(Array(p[(p.count - 4)..<(p.count - 2)]), [0xFF, 0xFF], client)
            XCTAssertEqual(Self.verify(p), 0xFFFF)
        }
    }

    /// An IPv4-mapped client (a dual-stack socket's view of an IPv4 client) is sent as the
    /// IPv4 client it is; an IPv4 client towards an IPv6 collector, and an IPv6 client towards
    /// an IPv4 one, get no copy.
    func testFamilies() throws {
        let v4 = try SocketAddress(parsing: "198.18.1.2:40000")
        let mapped = try SocketAddress(parsing: "[::ffff:198.18.1.2]:40000")
        let v6 = try SocketAddress(parsing: "[2001:db8:1::2]:40000")
        let collector4 = try SocketAddress(parsing: "198.18.3.2:2055")
        let collector6 = try SocketAddress(parsing: "[2001:db8:3::2]:2055")
        let payload: [UInt8] = [1, 2, 3]
        XCTAssertEqual(
            SpoofedHeader.packet(client: mapped, collector: collector4, payload: payload),
            SpoofedHeader.packet(client: v4, collector: collector4, payload: payload))
        XCTAssertNotNil(SpoofedHeader.packet(client: v4, collector: collector4, payload: payload))
        XCTAssertNil(SpoofedHeader.packet(client: v4, collector: collector6, payload: payload))
        XCTAssertNil(SpoofedHeader.packet(client: mapped, collector: collector6, payload: payload))
        XCTAssertNil(SpoofedHeader.packet(client: v6, collector: collector4, payload: payload))
    }

    /// The one's complement sum of `bytes` as 16-bit words in network order, folded.
    static func referenceSum(_ bytes: [UInt8]) -> UInt16 {
        var s: UInt32 = 0
        var i = 0
        while i < bytes.count {
            s += UInt32(bytes[i]) << 8 | (i + 1 < bytes.count ? UInt32(bytes[i + 1]) : 0)
            s = (s & 0xFFFF) + (s >> 16)
            i += 2
        }
        return UInt16(s)
    }

    /// The sum over a packet's pseudo-header and UDP datagram (checksum included).
    static func verify(_ p: [UInt8]) -> UInt16 {
        let v6 = p[0] >> 4 == 6
        let ip = v6 ? 40 : 20
        let udp = Array(p[ip...])
        let addresses = v6 ? Array(p[8..<40]) : Array(p[12..<20])
        let length = UInt16(udp.count)
        let pseudo = addresses + [0, 0, 0, 17] + (v6 ? [0, 0] : []) + [UInt8(length >> 8), UInt8(length & 0xFF)]
        return referenceSum(pseudo + udp)
    }
}
