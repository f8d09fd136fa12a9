import CUDPRelay
import Logging
import TestSupport
import UDPRelayConfig
import XCTest

@testable import UDPRelayDatapath

#if canImport(Glibc)
import Glibc
#endif

final class DatapathTests: XCTestCase {
    func testSyscallMapsEAGAINToWouldBlockAndNamesTheCallOnError() throws {
        let fd = try UDPSocket.bound(to: SocketAddress(ip: .v4(0x7F00_0001), port: 0))
        defer { close(fd) }
        var byte: UInt8 = 0
        let r = try syscall("recv") { recv(fd, &byte, 1, 0) }
        guard case .wouldBlock = r else { return XCTFail("an empty non-blocking socket must report wouldBlock") }

        XCTAssertThrowsError(
            try syscallNoWait("connect") { () -> Int32 in
                var (s, l) = SocketAddress(ip: .v6(high: 0, low: 1), port: 9).storage()
                return withUnsafePointer(to: &s) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, l) } }
            }
        ) { error in
            let e = error as! SyscallError
            XCTAssertEqual(e.call, "connect")
            XCTAssertEqual(e.errno, EAFNOSUPPORT)
            XCTAssertTrue(e.description.hasPrefix("connect failed: "), e.description)
        }
    }

    func testBindReportsAddressInUse() throws {
        let first = try UDPSocket.bound(to: SocketAddress(ip: .v4(0x7F00_0001), port: 0))
        defer { close(first) }
        let taken = try UDPSocket.localAddress(first)
        XCTAssertNotEqual(taken.port, 0)
        XCTAssertThrowsError(try Listener(ListenerConfiguration(name: "x", listen: [taken]), logger: Logger(label: "test"))) { error in
            let e = error as! BindError
            XCTAssertEqual(e.listener, "x")
            XCTAssertEqual(e.underlying.errno, EADDRINUSE)
            XCTAssertEqual(e.underlying.call, "bind")
        }
    }

    func testSocketBuffersAreApplied() throws {
        let fd = try UDPSocket.bound(to: SocketAddress(ip: .v4(0x7F00_0001), port: 0))
        defer { close(fd) }
        let small = UDPSocket.setBuffers(fd, receive: 8192, send: 8192)
        let large = UDPSocket.setBuffers(fd, receive: 1 << 20, send: 1 << 20)
        XCTAssertGreaterThan(large.receive, small.receive)
        XCTAssertGreaterThan(large.send, small.send)
    }

    func testErrorPolicyCountsPerDatagramErrors() {
        XCTAssertEqual(ErrorPolicy.sendDrop(errno: ECONNREFUSED), .dropRefused)
        XCTAssertEqual(ErrorPolicy.sendDrop(errno: ENOBUFS), .dropSendBufferFull)
        XCTAssertEqual(ErrorPolicy.sendDrop(errno: EAGAIN), .dropSendBufferFull)
        XCTAssertEqual(ErrorPolicy.sendDrop(errno: EHOSTUNREACH), .dropSendError)
        XCTAssertEqual(ErrorPolicy.sendDrop(errno: EMSGSIZE), .dropSendError)
    }

    func testCountersSumAcrossWorkersAndStayMonotonic() {
        let a = CounterSet(), b = CounterSet()
        a.add(.receivedPackets, 3)
        b.add(.receivedPackets, 4)
        b.add(.dropTooLarge)
        let sum = a.snapshot() + b.snapshot()
        XCTAssertEqual(sum[.receivedPackets], 7)
        XCTAssertEqual(sum.dropped, 1)
        a.add(.receivedPackets, UInt64.max - 3)
        XCTAssertEqual(a.value(.receivedPackets), UInt64.max)
    }

    /// In-process: a listener echoes a batch larger than one recvmmsg and counts it exactly.
    func testListenerEchoesAndCountsInProcess() throws {
        let config = try ConfigLoader.parse("[listener t]\nlisten = 127.0.0.1:0, [::1]:0\nmax_datagram = 512\n", file: "t.ini")
        let datapath = try Datapath(configuration: config, logger: Logger(label: "test"))
        datapath.startBlocking()
        defer { datapath.stopBlocking() }
        let listener = try XCTUnwrap(datapath.listener(named: "t"))
        let v4 = listener.boundAddresses[0]
        let client = try UDPClient()
        let count = 150  // more than two batches of 64
        for i in 0..<count { client.send(payload(100, seed: UInt64(i)), to: v4) }
        client.send(payload(513, seed: 999), to: v4)
        let replies = client.receiveMany(count, idle: 3)
        XCTAssertEqual(Set(replies), Set((0..<count).map { payload(100, seed: UInt64($0)) }))
        // The oversized datagram may reach the socket after the read that returned the last
        // echoed one, and its read event may be queued after a ping: wait until it is counted.
        let deadline = Date().addingTimeInterval(10)
        while listener.counters()[.receivedPackets] < UInt64(count + 1) && Date() < deadline { usleep(1000) }
        // Received counters move before the replies are sent, sent counters after: a ping
        // queued now runs after the block that counted the last datagram has finished.
        let probe = DispatchSemaphore(value: 0)
        listener.workers[0].ping { probe.signal() }
        XCTAssertEqual(probe.wait(timeout: .now() + 5), .success)
        let c = listener.counters()
        XCTAssertEqual(c[.receivedPackets], UInt64(count + 1))
        XCTAssertEqual(c[.sentPackets], UInt64(count))
        XCTAssertEqual(c[.sentBytes], UInt64(count * 100))
        XCTAssertEqual(c[.dropTooLarge], 1)
    }
}
