import Foundation
import TestSupport
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// Resource exhaustion: the daemon refuses what it cannot hold and keeps serving the rest.
final class ExhaustionEndToEndTests: XCTestCase {
    func testOutOfDescriptorsRefusesNewSessionsAndKeepsExistingOnes() throws {
        let upstream = try UpstreamServer()
        addTeardownBlock { upstream.stop() }
        // 48 descriptors in all: the daemon's own (stdio, sockets, epoll, ...) leave room for a
        // few dozen sessions, fewer than the 100 clients below.
        let (d, bound) = try startDaemon(
            """
            [listener fwd]
            listen = 127.0.0.1:0
            mode = forward
            upstream = \(upstream.address)
            max_sessions = 10000
            """, fileLimit: 48)
        let relay = try XCTUnwrap(bound["fwd"]?.first)
        let clients = try (0..<100).map { _ in try UDPClient() }
        for (i, c) in clients.enumerated() { c.send(Array("hello \(i)".utf8), to: relay) }
        // Collect replies on all clients at once until none has come for half a second.
        var served: [Int] = []
        var fds = clients.map { pollfd(fd: $0.fd, events: Int16(POLLIN), revents: 0) }
        while poll(&fds, nfds_t(fds.count), 500) > 0 {
            for k in fds.indices where fds[k].revents != 0 {
                fds[k].revents = 0
                fds[k].fd = -1  // one reply per client
                let reply = clients[k].receive(timeout: 0)
                XCTAssertEqual(reply?.bytes, Array("hello \(k)".utf8))
                served.append(k)
            }
        }
        XCTAssertGreaterThan(served.count, 5, "some sessions fit under the limit")
        XCTAssertLessThan(served.count, 100, "not all 100 sessions can fit in 48 descriptors")
        // Sessions that exist keep working while new ones are refused.
        for i in served.prefix(5) {
            clients[i].send(Array("again \(i)".utf8), to: relay)
            XCTAssertEqual(clients[i].receive(timeout: 2)?.bytes, Array("again \(i)".utf8), "existing session \(i)")
        }
        XCTAssertEqual(d.stop(), 0, "the daemon survives descriptor exhaustion and exits cleanly")
        // A reply that came after the half-second lull above is in its client's socket now
        // that the daemon has exited: it was served too.
        for k in clients.indices where !served.contains(k) {
            if let reply = clients[k].receive(timeout: 0) {
                XCTAssertEqual(reply.bytes, Array("hello \(k)".utf8))
                served.append(k)
            }
        }
        let line = try XCTUnwrap(d.totals("fwd"))
        let refused = DaemonProcess.count("drop.no_session", in: line)
        XCTAssertEqual(refused, 100 - served.count, line)
    }
}
