import TestSupport
import UDPRelayConfig
import XCTest

@testable import UDPRelayDatapath

#if canImport(Glibc)
import Glibc
#endif

/// `SpoofedSender` on loopback (any 127.0.0.0/8 source is delivered there): the copies reach
/// ordinary UDP sockets from the addresses and ports recorded as their clients, each collector
/// gets only the copies of its family, and a collector's socket is reconnected in place for an
/// address of the same family and replaced for the other. Raw sockets need CAP_NET_RAW.
final class SpoofedSenderTests: XCTestCase {
    /// Payloads and client addresses kept alive for the sender's pointers.
    final class Batch {
        var clients: [UnsafeMutablePointer<sockaddr_storage>] = []
        var payloads: [UnsafeMutableRawPointer] = []

        func add(to sender: inout SpoofedSender, client: SocketAddress, payload: [UInt8]) {
            let c = UnsafeMutablePointer<sockaddr_storage>.allocate(capacity: 1)
            c.initialize(to: client.storage().0)
            let p = UnsafeMutableRawPointer.allocate(byteCount: max(payload.count, 1), alignment: 8)
            payload.withUnsafeBytes { p.copyMemory(from: $0.baseAddress!, byteCount: payload.count) }
            clients.append(c)
            payloads.append(p)
            sender.add(client: UnsafeRawPointer(c), payload: iovec(iov_base: p, iov_len: payload.count))
        }

        deinit {
            for c in clients { c.deallocate() }
            for p in payloads { p.deallocate() }
        }
    }

    func testCopiesArriveFromTheirClientsAndOnlyTowardsTheirFamily() throws {
        try XCTSkipUnless(getuid() == 0, "raw sockets need CAP_NET_RAW (run as root)")
        let collector4 = try UDPClient(bind: SocketAddress(parsing: "127.0.0.1:0"))
        let collector6 = try UDPClient(bind: SocketAddress(parsing: "[::1]:0"))
        var sender = SpoofedSender(capacity: 4, collectors: 2, sendBuffer: 1 << 20)
        defer { sender.deallocate() }
        try sender.connect(0, to: collector4.localAddress)
        try sender.connect(1, to: collector6.localAddress)

        let batch = Batch()
        sender.reset()
        batch.add(to: &sender, client: try SocketAddress(parsing: "127.0.0.5:4242"), payload: Array("first".utf8))
        batch.add(to: &sender, client: try SocketAddress(parsing: "[::1]:4243"), payload: Array("second, v6".utf8))
        batch.add(to: &sender, client: try SocketAddress(parsing: "127.0.0.6:4244"), payload: Array("third, odd".utf8))
        var drops: [Int32] = []
        let to4 = sender.send(toCollector: 0) { err, _ in drops.append(err) }
        let to6 = sender.send(toCollector: 1) { err, _ in drops.append(err) }
        XCTAssertEqual(drops, [])
        XCTAssertEqual([to4.sent, to4.mismatched, Int(to4.bytes)], [2, 1, 15], "payload bytes, not the headers")
        XCTAssertEqual([to6.sent, to6.mismatched, Int(to6.bytes)], [1, 2, 10])

        let a = try XCTUnwrap(collector4.receive()), b = try XCTUnwrap(collector4.receive())
        XCTAssertEqual(a.bytes, Array("first".utf8))
        XCTAssertEqual(a.from, try SocketAddress(parsing: "127.0.0.5:4242"))
        XCTAssertEqual(b.bytes, Array("third, odd".utf8))
        XCTAssertEqual(b.from, try SocketAddress(parsing: "127.0.0.6:4244"))
        let c = try XCTUnwrap(collector6.receive())
        XCTAssertEqual(c.bytes, Array("second, v6".utf8))
        XCTAssertEqual(c.from, try SocketAddress(parsing: "[::1]:4243"))
        XCTAssertNil(collector4.receive(timeout: 0.2), "nothing else")
    }

    func testAnotherAddressOfTheSameFamilyKeepsTheSocketAndTheOtherFamilyReplacesIt() throws {
        try XCTSkipUnless(getuid() == 0, "raw sockets need CAP_NET_RAW (run as root)")
        var sender = SpoofedSender(capacity: 1, collectors: 1, sendBuffer: 65536)
        defer { sender.deallocate() }
        try sender.connect(0, to: SocketAddress(parsing: "127.0.0.1:9"))
        let first = sender.fds[0]
        XCTAssertGreaterThanOrEqual(first, 0)
        try sender.connect(0, to: SocketAddress(parsing: "127.0.0.2:9"))
        XCTAssertEqual(sender.fds[0], first, "reconnected in place")
        XCTAssertEqual(try Syscall.peerAddress(first), try SocketAddress(parsing: "127.0.0.2:9"))
        try sender.connect(0, to: SocketAddress(parsing: "[::1]:9"))
        XCTAssertGreaterThanOrEqual(sender.fds[0], 0)
        XCTAssertEqual(try Syscall.localAddress(sender.fds[0]).ip.isIPv6, true, "an IPv6 socket replaced the IPv4 one")
        sender.closeAll()
        XCTAssertEqual(sender.fds, [-1])
    }
}
