import UDPRelayConfig
import XCTest

@testable import UDPRelayDatapath

#if canImport(Glibc)
import Glibc
#endif

/// Reading PROXY protocol v2 headers (`accept_proxy_protocol`): the headers are written by hand
/// from HAProxy's proxy-protocol.txt, section 2.2, and every class of malformed header is
/// refused without reading past the datagram.
final class ProxyHeaderParserTests: XCTestCase {
    static let signature: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]

    /// PROXY, INET over DGRAM: 198.18.0.1:1111 -> 203.0.113.9:53.
    static let ipv4: [UInt8] =
        signature + [0x21, 0x12, 0x00, 0x0C, 198, 18, 0, 1, 203, 0, 113, 9, 0x04, 0x57, 0x00, 0x35]

    /// PROXY, INET6 over DGRAM: [2001:db8::1]:1234 -> [2001:db8::53]:853.
    static let ipv6: [UInt8] =
        signature + [0x21, 0x22, 0x00, 0x24]
        + [0x20, 0x01, 0x0D, 0xB8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01]
        + [0x20, 0x01, 0x0D, 0xB8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x53] + [0x04, 0xD2, 0x03, 0x55]

    /// LOCAL, UNSPEC, nothing follows.
    static let local: [UInt8] = signature + [0x20, 0x00, 0x00, 0x00]

    /// What `parse` returns for `bytes`: the header length and the source it wrote, or nil
    /// (malformed). The bytes are copied into a buffer of exactly their size, so that AddressSanitizer
    /// would catch a read past them.
    static func parse(_ bytes: [UInt8]) -> (length: Int, source: SocketAddress?)? {
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: max(bytes.count, 1), alignment: 1)
        defer { buffer.deallocate() }
        bytes.withUnsafeBytes { if let b = $0.baseAddress { buffer.copyMemory(from: b, byteCount: bytes.count) } }
        var out = sockaddr_storage()
        out.ss_family = 0xFFFF
        let length = withUnsafeMutableBytes(of: &out) { ProxyHeaderParser.parse(buffer, count: bytes.count, source: $0.baseAddress!) }
        guard length != ProxyHeaderParser.malformed else { return nil }
        if out.ss_family == 0 { return (length, nil) }
        return (length, withUnsafeBytes(of: &out) { SocketAddress(sockaddr: $0.baseAddress!) })
    }

    func testIPv4ProxyHeaderGivesTheClientAndItsLength() throws {
        let r = try XCTUnwrap(Self.parse(Self.ipv4 + Array("payload".utf8)))
        XCTAssertEqual(r.length, 28)
        XCTAssertEqual(r.source, try SocketAddress(parsing: "198.18.0.1:1111"))
    }

    func testIPv6ProxyHeaderGivesTheClientAndItsLength() throws {
        let r = try XCTUnwrap(Self.parse(Self.ipv6 + [1, 2, 3]))
        XCTAssertEqual(r.length, 52)
        XCTAssertEqual(r.source, try SocketAddress(parsing: "[2001:db8::1]:1234"))
    }

    /// LOCAL: no client; the datagram's real source stands. Whatever follows within the length
    /// (here an INET address block a sender may leave in) is skipped.
    func testLocalHeaderHasNoClient() throws {
        let bare = try XCTUnwrap(Self.parse(Self.local + [9]))
        XCTAssertEqual(bare.length, 16)
        XCTAssertNil(bare.source)
        var withAddresses = Self.ipv4
        withAddresses[12] = 0x20
        let skipped = try XCTUnwrap(Self.parse(withAddresses))
        XCTAssertEqual(skipped.length, 28)
        XCTAssertNil(skipped.source)
    }

    /// The header's own output is read back as the same client: the writer and the reader agree.
    func testWhatTheRelayWritesItReads() throws {
        for (s, d) in [("198.51.100.7:54321", "203.0.113.9:53"), ("[2001:db8::7]:5", "[2001:db8::9]:6")] {
            let header = ProxyProtocolV2.header(source: try SocketAddress(parsing: s), destination: try SocketAddress(parsing: d))
            let r = try XCTUnwrap(Self.parse(header + [0x42]))
            XCTAssertEqual(r.length, header.count)
            XCTAssertEqual(r.source, try SocketAddress(parsing: s))
        }
        XCTAssertEqual(Self.parse(ProxyProtocolV2.localHeader)?.length, 16)
    }

    /// TLVs (here a PP2_TYPE_AUTHORITY and a PP2_TYPE_NOOP) are skipped by their lengths; the
    /// payload starts after the last.
    func testTLVsAreSkipped() throws {
        let tlvs: [UInt8] = [0x02, 0x00, 0x03, 0x61, 0x62, 0x63, 0x04, 0x00, 0x00]
        var header = Self.ipv4 + tlvs
        header[15] = UInt8(12 + tlvs.count)
        let r = try XCTUnwrap(Self.parse(header + Array("q".utf8)))
        XCTAssertEqual(r.length, 28 + tlvs.count)
        XCTAssertEqual(r.source, try SocketAddress(parsing: "198.18.0.1:1111"))
    }

    func testMalformedHeadersAreRefused() {
        var cases: [(String, [UInt8])] = []
        var bad = Self.ipv4
        bad[11] = 0x0B
        cases.append(("bad signature", bad))
        cases.append(("no header at all", Array("plain DNS query bytes, longer than sixteen".utf8)))
        bad = Self.ipv4
        bad[12] = 0x11
        cases.append(("version 1", bad))
        bad = Self.ipv4
        bad[12] = 0x23
        cases.append(("command 3", bad))
        bad = Self.ipv4
        bad[13] = 0x32
        cases.append(("family UNIX", bad))
        bad = Self.ipv4
        bad[13] = 0x11
        cases.append(("STREAM transport", bad))
        bad = Self.ipv4
        bad[13] = 0x02
        cases.append(("PROXY with UNSPEC", bad))
        bad = Self.ipv4
        bad[15] = 0x0D
        cases.append(("length past the end", bad))
        bad = Self.local
        bad[15] = 0x01
        cases.append(("LOCAL length past the end", bad))
        bad = Array(Self.ipv4[..<20])
        bad[15] = 0x04
        cases.append(("INET address block too short", bad))
        bad = Self.ipv4
        bad[13] = 0x22
        cases.append(("INET6 address block too short", bad))
        var tlv = Self.ipv4 + [0x02, 0x00, 0x05, 0x61]
        tlv[15] = 16
        cases.append(("TLV past the length", tlv))
        tlv = Self.ipv4 + [0x02, 0x00]
        tlv[15] = 14
        cases.append(("TLV header cut short", tlv))
        for n in 0..<Self.ipv6.count { cases.append(("IPv6 header cut at \(n)", Array(Self.ipv6[..<n]))) }
        cases.append(("empty", []))
        for (name, bytes) in cases {
            XCTAssertNil(Self.parse(bytes), name)
        }
    }
}
