import Logging
import TestSupport
import UDPRelayConfig
import XCTest

@testable import UDPRelayDatapath

#if canImport(Glibc)
import Glibc
#endif

/// `SocketDescriptor`: a descriptor closes exactly once, unless handed over; the datapath's
/// error paths leave nothing open and its owners never close a descriptor twice.
final class SocketDescriptorTests: XCTestCase, ConfigFileTests {
    let loopback = SocketAddress(ip: .v4(0x7F00_0001), port: 0)

    func isOpen(_ fd: Int32) -> Bool { fcntl(fd, F_GETFD) != -1 }

    /// Descriptors open in this process now.
    func openDescriptors() throws -> Int {
        try FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count
    }

    func testClosesWhenItGoesOutOfScope() throws {
        let fd = try Syscall.datagramSocket(family: AF_INET)
        do {
            let socket = SocketDescriptor(fd)
            XCTAssertEqual(socket.rawValue, fd)
            XCTAssertTrue(isOpen(fd))
        }
        XCTAssertFalse(isOpen(fd))
    }

    func testCloseClosesAtOnceAndNotAgainAtTheEndOfScope() throws {
        let fd = try Syscall.datagramSocket(family: AF_INET)
        let other = try Syscall.datagramSocket(family: AF_INET)
        defer {
            close(other)
            close(fd)
        }
        do {
            let socket = SocketDescriptor(fd)
            socket.close()
            XCTAssertFalse(isOpen(fd))
            // Someone else gets the same number: the old owner must not close it again.
            XCTAssertEqual(dup2(other, fd), fd)
        }
        XCTAssertTrue(isOpen(fd), "the descriptor was closed a second time")
    }

    func testTakeHandsOverWithoutClosing() throws {
        let fd = try Syscall.datagramSocket(family: AF_INET)
        defer { close(fd) }
        let taken: Int32
        do {
            let socket = SocketDescriptor(fd)
            taken = socket.take()
        }
        XCTAssertEqual(taken, fd)
        XCTAssertTrue(isOpen(fd), "take() must leave the descriptor open for its new owner")
    }

    func testFailedBindLeavesNoDescriptorOpen() throws {
        let first = try UDPSocket.bound(to: loopback)
        defer { close(first) }
        let taken = try UDPSocket.localAddress(first)
        let before = try openDescriptors()
        for _ in 0..<20 {
            XCTAssertThrowsError(try UDPSocket.bound(to: taken)) { error in
                XCTAssertEqual(error as? SyscallError, SyscallError(call: "bind", errno: EADDRINUSE))
            }
        }
        XCTAssertEqual(try openDescriptors(), before)
    }

    func testListenerThatFailsHalfwayClosesEverySocketItOpened() throws {
        let first = try UDPSocket.bound(to: loopback)
        defer { close(first) }
        let taken = try UDPSocket.localAddress(first)
        // The first address gets its three sockets and workers (each with an epoll set), then
        // the second cannot bind.
        let lc = try XCTUnwrap(
            try configuration(
                """
                [listener x]
                listen = 127.0.0.1:0, 127.0.0.1:\(taken.port)
                workers = 3
                """
            ).listeners.first)
        let before = try openDescriptors()
        XCTAssertThrowsError(try Listener(lc, logger: Logger(label: "test"))) { error in
            XCTAssertEqual((error as? BindError)?.underlying.errno, EADDRINUSE)
        }
        XCTAssertEqual(try openDescriptors(), before)
    }

    func testReloadAfterStopClosesNoDescriptorItDoesNotOwn() throws {
        let datapath = try Datapath(
            configuration: try configuration("[listener a]\nlisten = 127.0.0.1:0\n"),
            logger: Logger(label: "test"))
        let old = Set(datapath.listeners.flatMap(\.workers).flatMap { [$0.fd, $0.waitSet.fd] })
        datapath.startBlocking()
        datapath.stopBlocking()
        // The stopped listener's numbers are free again: take them (the kernel hands out the
        // lowest free number first).
        var mine: [Int32] = []
        defer { for fd in mine { close(fd) } }
        while !old.isSubset(of: mine), mine.count < 256 {
            mine.append(try Syscall.datagramSocket(family: AF_INET))
        }
        XCTAssertTrue(old.isSubset(of: mine))
        // The reload replaces listener "a", which has been closed already by `stop`.
        try datapath.applyBlocking(try configuration("[listener b]\nlisten = 127.0.0.1:0\n"))
        defer { for l in datapath.listeners { l.discard() } }
        for fd in mine {
            XCTAssertTrue(isOpen(fd), "descriptor \(fd), no longer the datapath's, was closed by the reload")
        }
    }
}
