import UDPRelayConfig
import XCTest

@testable import UDPRelayDatapath

#if canImport(Glibc)
import Glibc
#endif

/// The one reader and writer of kernel socket addresses (`SocketAddress+Storage.swift`).
final class SocketAddressStorageTests: XCTestCase {
    func testOffsetsAreLinuxs() {
        XCTAssertEqual(MemoryLayout<sockaddr_in>.offset(of: \.sin_family), RawSockaddr.familyOffset)
        XCTAssertEqual(MemoryLayout<sockaddr_in>.offset(of: \.sin_port), RawSockaddr.portOffset)
        XCTAssertEqual(MemoryLayout<sockaddr_in>.offset(of: \.sin_addr), RawSockaddr.ipv4Offset)
        XCTAssertEqual(MemoryLayout<sockaddr_in6>.offset(of: \.sin6_family), RawSockaddr.familyOffset)
        XCTAssertEqual(MemoryLayout<sockaddr_in6>.offset(of: \.sin6_port), RawSockaddr.portOffset)
        XCTAssertEqual(MemoryLayout<sockaddr_in6>.offset(of: \.sin6_addr), RawSockaddr.ipv6Offset)
        XCTAssertEqual(MemoryLayout<sockaddr_in6>.offset(of: \.sin6_scope_id), RawSockaddr.scopeOffset)
    }

    /// What the C library writes for `text`, read by the datapath's reader.
    func readBack(_ family: Int32, _ text: String, port: UInt16) -> SocketAddress? {
        var storage = sockaddr_storage()
        withUnsafeMutableBytes(of: &storage) { raw in
            if family == AF_INET {
                var sin = sockaddr_in()
                sin.sin_family = sa_family_t(AF_INET)
                sin.sin_port = port.bigEndian
                _ = inet_pton(AF_INET, text, &sin.sin_addr)
                raw.storeBytes(of: sin, as: sockaddr_in.self)
            } else {
                var sin6 = sockaddr_in6()
                sin6.sin6_family = sa_family_t(AF_INET6)
                sin6.sin6_port = port.bigEndian
                _ = inet_pton(AF_INET6, text, &sin6.sin6_addr)
                raw.storeBytes(of: sin6, as: sockaddr_in6.self)
            }
        }
        return SocketAddress(storage: storage)
    }

    func testReadsWhatTheCLibraryWrites() {
        XCTAssertEqual(readBack(AF_INET, "192.0.2.7", port: 5353)?.description, "192.0.2.7:5353")
        XCTAssertEqual(readBack(AF_INET6, "2001:db8::1:2", port: 443)?.description, "[2001:db8::1:2]:443")
        XCTAssertEqual(readBack(AF_INET6, "::ffff:198.18.0.1", port: 1)?.ip, IPAddress(literal: "::ffff:198.18.0.1"))
    }

    func testWritesWhatTheCLibraryReads() throws {
        for text in ["198.18.3.4", "2001:db8:ffff::8"] {
            let ip = try XCTUnwrap(IPAddress(literal: text))
            var (storage, length) = SocketAddress(ip: ip, port: 65000).storage()
            var buffer = [CChar](repeating: 0, count: 64)
            let family = Int32(storage.ss_family)
            let printed = withUnsafeBytes(of: &storage) { raw -> String? in
                let address = raw.baseAddress! + (ip.isIPv6 ? RawSockaddr.ipv6Offset : RawSockaddr.ipv4Offset)
                return inet_ntop(family, address, &buffer, socklen_t(buffer.count)).map { String(cString: $0) }
            }
            XCTAssertEqual(printed, text)
            XCTAssertEqual(family, ip.isIPv6 ? AF_INET6 : AF_INET)
            XCTAssertEqual(Int(length), ip.isIPv6 ? MemoryLayout<sockaddr_in6>.size : MemoryLayout<sockaddr_in>.size)
            XCTAssertEqual(UInt16(bigEndian: withUnsafeBytes(of: &storage) { $0.loadUnaligned(fromByteOffset: 2, as: UInt16.self) }), 65000)
        }
    }

    func testRawFieldsAreTheStructFieldsAsStored() {
        var sin6 = sockaddr_in6()
        sin6.sin6_family = sa_family_t(AF_INET6)
        sin6.sin6_port = UInt16(5353).bigEndian
        sin6.sin6_scope_id = 7
        _ = inet_pton(AF_INET6, "fe80::1:2:3:4", &sin6.sin6_addr)
        let in6 = sin6
        withUnsafeBytes(of: in6) { raw in
            let p = raw.baseAddress!
            XCTAssertEqual(RawSockaddr.family(p), AF_INET6)
            XCTAssertEqual(RawSockaddr.port(p), in6.sin6_port)
            XCTAssertEqual(RawSockaddr.scope(p), 7)
            let (high, low) = RawSockaddr.ipv6(p)
            withUnsafeBytes(of: in6.sin6_addr) { a in
                XCTAssertEqual(high, a.loadUnaligned(as: UInt64.self))
                XCTAssertEqual(low, a.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
            }
        }
        var sin = sockaddr_in()
        sin.sin_family = sa_family_t(AF_INET)
        sin.sin_port = UInt16(53).bigEndian
        _ = inet_pton(AF_INET, "198.18.0.9", &sin.sin_addr)
        let in4 = sin
        withUnsafeBytes(of: in4) { raw in
            XCTAssertEqual(RawSockaddr.family(raw.baseAddress!), AF_INET)
            XCTAssertEqual(RawSockaddr.port(raw.baseAddress!), in4.sin_port)
            XCTAssertEqual(RawSockaddr.ipv4(raw.baseAddress!), in4.sin_addr.s_addr)
        }
    }

    func testReadsAnAddressAtAnyAlignmentAndRefusesOtherFamilies() throws {
        let address = SocketAddress(ip: try XCTUnwrap(IPAddress(literal: "2001:db8::9")), port: 9)
        var (storage, _) = address.storage()
        var bytes = [UInt8](repeating: 0, count: MemoryLayout<sockaddr_storage>.size + 1)
        withUnsafeBytes(of: &storage) { for (i, b) in $0.enumerated() { bytes[i + 1] = b } }
        XCTAssertEqual(bytes.withUnsafeBytes { SocketAddress(sockaddr: $0.baseAddress! + 1) }, address)

        var unix = sockaddr_storage()
        unix.ss_family = sa_family_t(AF_UNIX)
        XCTAssertNil(SocketAddress(storage: unix))
    }
}
