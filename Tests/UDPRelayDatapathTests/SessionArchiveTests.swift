import UDPRelayConfig
import XCTest

@testable import UDPRelayDatapath

#if canImport(Glibc)
import Glibc
#endif

final class SessionArchiveTests: XCTestCase {
    private func address(_ s: String) -> SocketAddress { try! SocketAddress(parsing: s) }

    private var sample: SessionArchive {
        SessionArchive(entries: [
            .init(
                listener: "dns", socket: 0, client: address("127.0.0.1:40000"), local: nil, interface: 0,
                upstream: address("127.0.0.2:53"), idleMilliseconds: 29_500, requests: 3, replies: 2,
                ageMilliseconds: 86_400_123, requestBytes: 5_000_000_000, replyBytes: 77),
            .init(
                listener: "game-6", socket: 1, client: address("[2001:db8::7]:5000"), local: address("[2001:db8::1]:27015"),
                interface: 4, upstream: address("[::1]:27016"), idleMilliseconds: 1, requests: .max, replies: 0),
        ])
    }

    func testATableComesBackAsItWasStored() throws {
        XCTAssertEqual(try SessionArchive(decoding: sample.encoded()), sample)
        // The session log's start and byte counts too, beyond 32 bits.
        let first = try XCTUnwrap(try SessionArchive(decoding: sample.encoded()).entries.first)
        XCTAssertEqual([first.ageMilliseconds, first.requestBytes, first.replyBytes], [86_400_123, 5_000_000_000, 77])
        XCTAssertEqual(try SessionArchive(decoding: SessionArchive().encoded()), SessionArchive())
    }

    func testThroughASealedMemfdThatCannotBeChanged() throws {
        let fd = try sample.sealedMemoryFile()
        defer { close(fd) }
        XCTAssertEqual(try SessionArchive(sealedMemoryFile: fd), sample)
        var byte: UInt8 = 0
        XCTAssertEqual(pwrite(fd, &byte, 1, 0), -1, "sealed against writes")
        XCTAssertEqual(ftruncate(fd, 1), -1, "sealed against shrinking")
    }

    func testAnUnsealedFileIsRefused() throws {
        var name = Array("/tmp/udprelayd-archive-XXXXXX".utf8CString)
        let fd = mkstemp(&name)
        XCTAssertGreaterThanOrEqual(fd, 0)
        defer {
            close(fd)
            unlink(name)
        }
        let bytes = sample.encoded()
        XCTAssertEqual(bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }, bytes.count)
        XCTAssertThrowsError(try SessionArchive(sealedMemoryFile: fd)) { XCTAssertEqual($0 as? SessionArchive.DecodingError, .damaged("not a sealed memfd")) }
    }

    func testEveryDamagedByteIsNoticed() {
        let good = sample.encoded()
        for i in 0..<good.count {
            var bad = good
            bad[i] ^= 0x5a
            XCTAssertThrowsError(try SessionArchive(decoding: bad), "byte \(i) changed")
        }
        for n in 0..<good.count {
            XCTAssertThrowsError(try SessionArchive(decoding: Array(good.prefix(n))), "cut to \(n) bytes")
        }
    }

    func testAnotherFormatVersionIsRefusedBySaying() {
        var other = sample.encoded()
        other[8] = 2  // the version follows the 8-byte magic, little-endian
        XCTAssertThrowsError(try SessionArchive(decoding: other)) {
            XCTAssertEqual("\($0)", "session table format 2, this build reads format 1")
        }
        XCTAssertThrowsError(try SessionArchive(decoding: Array("hello, world".utf8))) {
            XCTAssertEqual("\($0)", "not a udprelayd session table")
        }
    }
}
