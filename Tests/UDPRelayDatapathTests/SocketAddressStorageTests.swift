import XCTest
#if canImport(Glibc)
import Glibc
#endif
import UDPRelayConfig
@testable import UDPRelayDatapath

/// The one reader and writer of kernel socket addresses (`SocketAddress+Storage.swift`).
final class SocketAddressStorageTests: XCTestCase {
    func testOffsetsAreLinuxs() {
        XCTAssertEqual(MemoryLayout<sockaddr_in>.offset(of: \.sin_family), SocketAddress.Offset.family)
        XCTAssertEqual(MemoryLayout<sockaddr_in>.offset(of: \.sin_port), SocketAddress.Offset.port)
        XCTAssertEqual(MemoryLayout<sockaddr_in>.offset(of: \.sin_addr), SocketAddress.Offset.ipv4Address)
        XCTAssertEqual(MemoryLayout<sockaddr_in6>.offset(of: \.sin6_family), SocketAddress.Offset.family)
        XCTAssertEqual(MemoryLayout<sockaddr_in6>.offset(of: \.sin6_port), SocketAddress.Offset.port)
        XCTAssertEqual(MemoryLayout<sockaddr_in6>.offset(of: \.sin6_addr), SocketAddress.Offset.ipv6Address)
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
                let address = raw.baseAddress! + (ip.isIPv6 ? SocketAddress.Offset.ipv6Address : SocketAddress.Offset.ipv4Address)
                return inet_ntop(family, address, &buffer, socklen_t(buffer.count)).map { String(cString: $0) }
            }
            XCTAssertEqual(printed, text)
            XCTAssertEqual(family, ip.isIPv6 ? AF_INET6 : AF_INET)
            XCTAssertEqual(Int(length), ip.isIPv6 ? MemoryLayout<sockaddr_in6>.size : MemoryLayout<sockaddr_in>.size)
            XCTAssertEqual(UInt16(bigEndian: withUnsafeBytes(of: &storage) { $0.loadUnaligned(fromByteOffset: 2, as: UInt16.self) }), 65000)
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
