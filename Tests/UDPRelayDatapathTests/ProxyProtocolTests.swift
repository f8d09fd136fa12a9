import UDPRelayConfig
import XCTest

@testable import UDPRelayDatapath

#if canImport(Glibc)
import Glibc
#endif

/// PROXY protocol v2 headers, byte for byte as HAProxy's proxy-protocol.txt (section 2.2)
/// lays them out: the expected arrays are written by hand from the specification.
final class ProxyProtocolTests: XCTestCase {
    static let signature: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]

    /// 198.51.100.7:54321 -> 203.0.113.9:53: TCP/UDP over IPv4 is 12 address bytes.
    static let ipv4Expected: [UInt8] =
        signature + [
            0x21,  // version 2, command PROXY
            0x12,  // AF_INET, DGRAM
            0x00, 0x0C,  // 12 bytes follow
            198, 51, 100, 7,  // source address
            203, 0, 113, 9,  // destination address
            0xD4, 0x31,  // source port 54321
            0x00, 0x35,  // destination port 53
        ]

    func testIPv4Header() throws {
        let header = ProxyProtocolV2.header(
            source: try SocketAddress(parsing: "198.51.100.7:54321"), destination: try SocketAddress(parsing: "203.0.113.9:53"))
        XCTAssertEqual(header, Self.ipv4Expected)
        XCTAssertEqual(header.count, ProxyProtocolV2.inetSize)
    }

    func testIPv6Header() throws {
        let header = ProxyProtocolV2.header(
            source: try SocketAddress(parsing: "[2001:db8::1]:1234"), destination: try SocketAddress(parsing: "[2001:db8::53]:853"))
        let expected: [UInt8] =
            Self.signature + [
                0x21,  // version 2, command PROXY
                0x22,  // AF_INET6, DGRAM
                0x00, 0x24,  // 36 bytes follow
                0x20, 0x01, 0x0D, 0xB8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01,  // source 2001:db8::1
                0x20, 0x01, 0x0D, 0xB8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x53,  // destination 2001:db8::53
                0x04, 0xD2,  // source port 1234
                0x03, 0x55,  // destination port 853
            ]
        XCTAssertEqual(header, expected)
        XCTAssertEqual(header.count, ProxyProtocolV2.inet6Size)
    }

    /// A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d: they are IPv4 clients, and
    /// the receiver gets an INET header as from an IPv4 socket.
    func testMappedAddressesGiveAnIPv4Header() throws {
        let header = ProxyProtocolV2.header(
            source: try SocketAddress(parsing: "[::ffff:198.51.100.7]:54321"),
            destination: try SocketAddress(parsing: "[::ffff:203.0.113.9]:53"))
        XCTAssertEqual(header, Self.ipv4Expected)
    }

    /// A worker's headers: the source from a received message, the listener's own address and
    /// port as destination when the message has no packet info, sent as the first of two
    /// iovecs in front of the payload (which is not copied).
    func testHeadersGoInFrontOfThePayloadWithoutCopyingIt() throws {
        let listener = try SocketAddress(parsing: "203.0.113.9:53")
        let headers = ProxyHeaders(capacity: 4, listener: listener)
        defer { headers.deallocate() }
        var (client, clientLength) = try SocketAddress(parsing: "198.51.100.7:54321").storage()
        var payload: [UInt8] = Array("query".utf8)
        try payload.withUnsafeMutableBytes { p in
            try withUnsafeMutablePointer(to: &client) { name in
                var payloadVector = iovec(iov_base: p.baseAddress, iov_len: p.count)
                try withUnsafeMutablePointer(to: &payloadVector) { vector in
                    var message = msghdr()
                    message.msg_name = UnsafeMutableRawPointer(name)
                    message.msg_namelen = clientLength
                    message.msg_iov = vector
                    message.msg_iovlen = 1
                    headers.write(3, from: message)
                    headers.prepend(3, to: &message, slot: 1)
                    XCTAssertEqual(message.msg_iovlen, 2)
                    let first = message.msg_iov[0], second = message.msg_iov[1]
                    let bytes = Array(UnsafeRawBufferPointer(start: first.iov_base, count: first.iov_len))
                    XCTAssertEqual(bytes, Self.ipv4Expected)
                    XCTAssertEqual(second.iov_base, p.baseAddress)
                    XCTAssertEqual(second.iov_len, 5)
                    // The message's own iovec is left as it was, for the next send.
                    XCTAssertEqual(try XCTUnwrap(vector.pointee.iov_base), p.baseAddress)
                }
            }
        }
    }
}
