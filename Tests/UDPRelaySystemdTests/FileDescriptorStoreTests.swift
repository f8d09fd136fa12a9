import CUDPRelay
import Foundation
import Logging
import TestSupport
import XCTest

@testable import UDPRelaySystemd

#if canImport(Glibc)
import Glibc
#endif

final class FileDescriptorStoreTests: XCTestCase {
    override func tearDown() {
        unsetenv("NOTIFY_SOCKET")
    }

    /// A UDP socket on 127.0.0.1 with a kernel-chosen port, and that port.
    private func boundUDPSocket() throws -> (fd: Int32, port: UInt16) {
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        XCTAssertGreaterThanOrEqual(fd, 0)
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        try withUnsafeMutablePointer(to: &a) { p in
            try p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sp in
                guard bind(fd, sp, len) == 0, getsockname(fd, sp, &len) == 0 else { throw POSIXError(.EADDRNOTAVAIL) }
            }
        }
        return (fd, UInt16(bigEndian: a.sin_port))
    }

    private func port(of fd: Int32) -> UInt16? {
        var a = sockaddr_in()
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let rc = withUnsafeMutablePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        return rc == 0 ? UInt16(bigEndian: a.sin_port) : nil
    }

    func testListenerSocketsReachTheStoreUnderTheirAddressName() throws {
        let sock = try NotifySocket()
        setenv("NOTIFY_SOCKET", sock.path, 1)
        let notifier = SystemdNotifier(logger: Logger(label: "test"))
        let a = try boundUDPSocket(), b = try boundUDPSocket()
        defer {
            close(a.fd)
            close(b.fd)
        }
        let name = FileDescriptorStore.listenerName(address: "127.0.0.1:\(a.port)")
        XCTAssertTrue(notifier.store([a.fd, b.fd], name: name))
        let got = try XCTUnwrap(sock.receiveWithDescriptors())
        defer { for fd in got.fds { close(fd) } }
        XCTAssertEqual(got.message, "FDSTORE=1\nFDNAME=listen/127.0.0.1.\(a.port)")
        // What systemd receives are the same sockets (duplicates of them), in order.
        XCTAssertEqual(got.fds.map { port(of: $0) }, [a.port, b.port])

        XCTAssertTrue(notifier.removeStored(name: name))
        let removed = try XCTUnwrap(sock.receiveWithDescriptors())
        XCTAssertEqual(removed.message, "FDSTOREREMOVE=1\nFDNAME=listen/127.0.0.1.\(a.port)")
        XCTAssertEqual(removed.fds, [])
    }

    func testStoreNamesAreValidFDNAMEsAndTellListenerSocketsApart() {
        let v6 = FileDescriptorStore.listenerName(address: "[2001:db8::1]:5353")
        XCTAssertEqual(v6, "listen/[2001.db8..1].5353")
        XCTAssertTrue(FileDescriptorStore.isValidName(v6), "systemd refuses ':' in FDNAME=")
        XCTAssertTrue(FileDescriptorStore.isListenerName(v6))
        XCTAssertFalse(FileDescriptorStore.isListenerName("dns"), "a .socket unit's FileDescriptorName= is a listener name")
        XCTAssertFalse(FileDescriptorStore.isValidName("a:b"))
        XCTAssertFalse(FileDescriptorStore.isValidName(""))
        XCTAssertFalse(FileDescriptorStore.isValidName(String(repeating: "x", count: 256)))
    }

    func testWithoutNotifySocketNothingIsStored() throws {
        unsetenv("NOTIFY_SOCKET")
        let notifier = SystemdNotifier(logger: Logger(label: "test"))
        let a = try boundUDPSocket()
        defer { close(a.fd) }
        XCTAssertFalse(notifier.store([a.fd], name: FileDescriptorStore.listenerName(address: "127.0.0.1:\(a.port)")))
        XCTAssertNotNil(port(of: a.fd), "the daemon's own socket stays open")
    }
}
