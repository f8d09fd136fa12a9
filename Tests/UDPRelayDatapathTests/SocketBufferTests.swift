import Foundation
import Logging
import TestSupport
import UDPRelayConfig
import XCTest

@testable import UDPRelayDatapath

#if canImport(Glibc)
import Glibc
#endif

/// Relay session sockets get the listener's `rcvbuf`/`sndbuf`, and datagrams the kernel drops
/// for a full receive buffer are counted (`receive_buffer_full`) on listener and session
/// sockets.
final class SocketBufferTests: XCTestCase, ConfigFileTests {
    static let largest = 65507

    /// Runs `body` while the worker's queue is blocked, so the worker reads nothing meanwhile
    /// and a burst piles up in the kernel's receive buffer as it would behind a busy worker.
    func whileStalled(_ worker: SocketWorker, _ body: () -> Void) {
        let blocked = DispatchSemaphore(value: 0), release = DispatchSemaphore(value: 0)
        worker.queue.async {
            blocked.signal()
            release.wait()
        }
        blocked.wait()
        body()
        release.signal()
    }

    func start(_ text: String, name: String) throws -> (Datapath, Listener) {
        let datapath = try Datapath(
            configuration: try configuration(text),
            logger: Logger(label: "test"))
        datapath.startBlocking()
        return (datapath, try XCTUnwrap(datapath.listener(named: name)))
    }

    /// A forward relay to a test-driven upstream; the client's first datagram opens the
    /// session. Returns the upstream's view of the session's address.
    func relay(extra: String) throws -> (Datapath, Listener, UDPClient, UDPClient, SocketAddress) {
        let upstream = try UDPClient()
        let (datapath, fwd) = try start(
            """
            [listener fwd]
            listen = 127.0.0.1:0
            mode = forward
            upstream = \(upstream.localAddress)
            \(extra)
            """, name: "fwd")
        let client = try UDPClient()
        client.send(Array("request".utf8), to: fwd.boundAddresses[0])
        let session = try XCTUnwrap(upstream.receive(), "the request reaches the upstream").from
        return (datapath, fwd, client, upstream, session)
    }

    func testBurstOfLargestRepliesCrossesASessionWithTheListenersBuffer() throws {
        // Without CAP_NET_ADMIN the kernel caps the 4 MiB at net.core.rmem_max (208 KiB by default).
        guard getuid() == 0 else { throw XCTSkip("needs root for SO_RCVBUFFORCE (CI runs as root)") }
        let (datapath, fwd, client, upstream, session) = try relay(extra: "")  // rcvbuf = 4MiB by default
        defer { datapath.stopBlocking() }
        whileStalled(fwd.workers[0]) {
            for i in 0..<50 { upstream.send(payload(Self.largest, seed: UInt64(i)), to: session) }
        }
        let replies = client.receiveMany(50)
        XCTAssertEqual(replies.count, 50, "no reply lost in the session socket (the kernel default holds 3 of them)")
        XCTAssertEqual(replies.first, payload(Self.largest, seed: 0))
        XCTAssertEqual(fwd.counters()[.dropReceiveBufferFull], 0)
    }

    func testRepliesTheKernelDropsOnASessionSocketAreCounted() throws {
        // The smallest buffer: one large reply fits, the rest of a burst is dropped.
        let (datapath, fwd, client, upstream, session) = try relay(extra: "rcvbuf = 4KiB")
        defer { datapath.stopBlocking() }
        whileStalled(fwd.workers[0]) {
            for i in 0..<50 { upstream.send(payload(Self.largest, seed: UInt64(i)), to: session) }
        }
        let delivered = client.receiveMany(50, idle: 1).count
        XCTAssertLessThan(delivered, 50, "the burst overflows a 4 KiB buffer")
        // The kernel reports the count with the next datagram the socket receives.
        upstream.send(Array("tail".utf8), to: session)
        XCTAssertEqual(client.receive().map(\.bytes), Array("tail".utf8))
        XCTAssertTrue(
            waitUntil(5) { fwd.counters()[.dropReceiveBufferFull] == UInt64(50 - delivered) },
            "\(fwd.counters()[.dropReceiveBufferFull]) counted, \(50 - delivered) lost")
    }

    func testDatagramsTheKernelDropsOnAListenerSocketAreCounted() throws {
        let (datapath, echo) = try start(
            """
            [listener e]
            listen = 127.0.0.1:0
            max_datagram = 65507
            rcvbuf = 4KiB
            """, name: "e")
        defer { datapath.stopBlocking() }
        let client = try UDPClient()
        whileStalled(echo.workers[0]) {
            for i in 0..<50 { client.send(payload(Self.largest, seed: UInt64(i)), to: echo.boundAddresses[0]) }
        }
        let echoed = client.receiveMany(50, idle: 1).count
        XCTAssertLessThan(echoed, 50, "the burst overflows a 4 KiB buffer")
        client.send(Array("tail".utf8), to: echo.boundAddresses[0])
        XCTAssertEqual(client.receive().map(\.bytes), Array("tail".utf8))
        XCTAssertTrue(
            waitUntil(5) { echo.counters()[.dropReceiveBufferFull] == UInt64(50 - echoed) },
            "\(echo.counters()[.dropReceiveBufferFull]) counted, \(50 - echoed) lost")
    }
}
