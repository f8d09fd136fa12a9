import CUDPRelay
import UDPRelayConfig
import XCTest

@testable import UDPRelayDatapath

#if canImport(Glibc)
import Glibc
#endif

/// The named wrappers of `Syscall.swift`: each names its call in errors and keeps the
/// non-blocking contract (`.wouldBlock`, not an error, on an empty socket).
final class SyscallTests: XCTestCase {
    let loopback = SocketAddress(ip: .v4(0x7F00_0001), port: 0)

    func testSendAndReceiveOnConnectedSockets() throws {
        let receiver = SocketDescriptor(try Syscall.datagramSocket(family: AF_INET))
        let sender = SocketDescriptor(try Syscall.datagramSocket(family: AF_INET))
        try Syscall.bind(receiver.rawValue, to: loopback)
        let address = try Syscall.localAddress(receiver.rawValue)
        let (rfd, sfd) = (receiver.rawValue, sender.rawValue)
        XCTAssertNotEqual(address.port, 0)
        var buffer = [UInt8](repeating: 0, count: 16)
        guard case .wouldBlock = try buffer.withUnsafeMutableBytes({ b throws(SyscallError) in try Syscall.recv(rfd, into: b) }) else {
            return XCTFail("an empty non-blocking socket must report wouldBlock")
        }

        try Syscall.connect(sfd, to: address)
        let payload: [UInt8] = [1, 2, 3]
        guard case .done(3) = try payload.withUnsafeBytes({ b throws(SyscallError) in try Syscall.send(sfd, b) }) else {
            return XCTFail("send did not take the datagram")
        }
        let ready = Syscall.epollWaitOnce(rfd)
        XCTAssertTrue(ready)
        guard case .done(let n) = try buffer.withUnsafeMutableBytes({ b throws(SyscallError) in try Syscall.recv(rfd, into: b) }) else {
            return XCTFail("the datagram did not arrive")
        }
        XCTAssertEqual(Array(buffer[0..<n]), payload)
    }

    func testErrorsNameTheCall() throws {
        let first = SocketDescriptor(try Syscall.datagramSocket(family: AF_INET))
        try Syscall.bind(first.rawValue, to: loopback)
        let taken = try Syscall.localAddress(first.rawValue)
        let second = SocketDescriptor(try Syscall.datagramSocket(family: AF_INET))
        XCTAssertThrowsError(try Syscall.bind(second.rawValue, to: taken)) { error in
            XCTAssertEqual(error as? SyscallError, SyscallError(call: "bind", errno: EADDRINUSE))
        }
        XCTAssertThrowsError(try Syscall.connect(second.rawValue, to: SocketAddress(ip: .v6(high: 0, low: 1), port: 9))) { error in
            XCTAssertEqual(error as? SyscallError, SyscallError(call: "connect", errno: EAFNOSUPPORT))
        }
    }

    /// The peer of a connected socket (what a handed-over session socket is checked against),
    /// none before `connect`; `connectedSocket` opens one connected, and the flags a descriptor
    /// from elsewhere gets are set.
    func testPeerAddressAndDescriptorFlags() throws {
        let receiver = SocketDescriptor(try Syscall.datagramSocket(family: AF_INET))
        try Syscall.bind(receiver.rawValue, to: loopback)
        let address = try Syscall.localAddress(receiver.rawValue)
        XCTAssertThrowsError(try Syscall.peerAddress(receiver.rawValue)) { error in
            XCTAssertEqual(error as? SyscallError, SyscallError(call: "getpeername", errno: ENOTCONN))
        }
        let connected = try UDPSocket.connectedSocket(to: address)
        XCTAssertEqual(try Syscall.peerAddress(connected.rawValue), address)
        XCTAssertEqual(RelayWorker.peerAddress(connected.rawValue), address)

        // A plain blocking socket without close-on-exec, as another process might hand over.
        let plain = SocketDescriptor(Glibc.socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0))
        XCTAssertGreaterThanOrEqual(plain.rawValue, 0)
        XCTAssertEqual(fcntl(plain.rawValue, F_GETFL) & O_NONBLOCK, 0)
        XCTAssertEqual(fcntl(plain.rawValue, F_GETFD) & FD_CLOEXEC, 0)
        try Syscall.connect(plain.rawValue, to: address)
        XCTAssertTrue(RelayWorker.isSessionSocket(plain.rawValue, connectedTo: address))
        XCTAssertNotEqual(fcntl(plain.rawValue, F_GETFL) & O_NONBLOCK, 0)
        XCTAssertNotEqual(fcntl(plain.rawValue, F_GETFD) & FD_CLOEXEC, 0)
        XCTAssertFalse(RelayWorker.isSessionSocket(receiver.rawValue, connectedTo: address), "not connected")
    }
}

extension Syscall {
    /// Waits up to 5 s for `fd` to be readable, in a wait set of its own.
    static func epollWaitOnce(_ fd: Int32) -> Bool {
        guard let epfd = try? Syscall.epollCreate() else { return false }
        let set = SocketDescriptor(epfd)
        guard (try? Syscall.epollAdd(set.rawValue, fd, tag: 7)) != nil else { return false }
        let ready = UnsafeMutablePointer<cur_ready>.allocate(capacity: 1)
        defer { ready.deallocate() }
        guard case .done(1)? = try? Syscall.epollWait(set.rawValue, ready, capacity: 1, timeout: 5000) else { return false }
        return ready.pointee.tag == 7
    }
}
