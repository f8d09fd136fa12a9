import Foundation
import Logging
import TestSupport
import UDPRelayConfig
import XCTest

@testable import UDPRelayDatapath

#if canImport(Glibc)
import Glibc
#endif

/// What the datapath does for continuity: a restart (listener sockets from systemd's store,
/// sessions from the previous process) and a reload that rebuilds a listener, both in process.
/// Under systemd the store carries the descriptors between processes (scripts/systemd-e2e.sh).
final class ContinuityTests: XCTestCase, ConfigFileTests {
    func text(_ bytes: [UInt8]?) -> String? { bytes.map { String(decoding: $0, as: UTF8.self) } }

    func forward(_ listen: String, to upstream: SocketAddress, extra: String = "") -> String {
        "[listener fwd]\nlisten = \(listen)\nmode = forward\nupstream = \(upstream)\n" + extra
    }

    /// Duplicates of the datapath's own sockets, by address: what the store holds for it.
    func storeCopy(_ datapath: Datapath) -> [SocketAddress: [Int32]] {
        var out: [SocketAddress: [Int32]] = [:]
        for g in datapath.ownSocketGroups() { out[g.address] = g.fds.map { dup($0) } }
        return out
    }

    func testARestartReadsTheDatagramsThatArrivedMeanwhileAndContinuesTheSessions() async throws {
        let upstream = try UpstreamServer(reply: { Array("re:".utf8) + $0 })
        let first = try Datapath(configuration: try configuration(forward("127.0.0.1:0", to: upstream.address)), logger: Logger(label: "test"))
        await first.start()
        let address = try XCTUnwrap(first.listener(named: "fwd")).boundAddresses[0]
        let client = try UDPClient()
        client.send(Array("one".utf8), to: address)
        XCTAssertEqual(text(client.receive()?.bytes), "re:one")
        let port = try XCTUnwrap(upstream.datagrams.first).from.port

        // The previous process: its sockets stay in the store, its sessions are handed over.
        let store = storeCopy(first)
        let handed = await first.stopHandingOverSessions()
        XCTAssertEqual(handed.count, 1)
        defer { for fds in store.values { for fd in fds { close(fd) } } }
        // Sent while no process serves: it waits in the stored socket.
        client.send(Array("two".utf8), to: address)
        // Through the archive, as between processes.
        let archive = try SessionArchive(decoding: SessionArchive(entries: handed.map(\.entry)).encoded())
        let carried = zip(archive.entries, handed).map { HandedOverSession(entry: $0, fd: $1.fd) }

        // The next process: the file now names the port the first one was given.
        let next = try Datapath(
            configuration: try configuration(forward("\(address)", to: upstream.address)), logger: Logger(label: "test"),
            stored: store)
        let taken = await next.takeOver(carried)
        XCTAssertEqual(taken.adopted, 1)
        XCTAssertEqual(taken.refused, 0)
        await next.start()
        XCTAssertEqual(text(client.receive()?.bytes), "re:two", "the datagram sent during the restart is served")
        client.send(Array("three".utf8), to: address)
        XCTAssertEqual(text(client.receive()?.bytes), "re:three")
        XCTAssertEqual(upstream.waitForCount(3), 3)
        XCTAssertEqual(Set(upstream.datagrams.map(\.from.port)), [port], "the upstream sees the same source port throughout")
        let c = try XCTUnwrap(next.listener(named: "fwd")).counters()
        XCTAssertEqual(c[.sessionsActive], 1)
        XCTAssertEqual(c[.sessionsCreated], 0, "continued, not created again")
        await next.stop()
    }

    func testStoredSocketsOfAnAddressNoLongerConfiguredAreNotServed() async throws {
        let stray = try UDPSocket.bound(to: SocketAddress(ip: .v4(0x7F00_0001), port: 0))
        defer { close(stray) }
        let strayAddress = try UDPSocket.localAddress(stray)
        let datapath = try Datapath(
            configuration: try configuration("[listener echo]\nlisten = 127.0.0.1:0\n"), logger: Logger(label: "test"),
            stored: [strayAddress: [stray]])
        await datapath.start()
        XCTAssertFalse(datapath.ownSocketGroups().contains { $0.address == strayAddress })
        await datapath.stop()
    }

    func testAReloadThatRebuildsAForwardListenerKeepsItsSessionsAndCounters() async throws {
        let upstream = try UpstreamServer(reply: { Array("re:".utf8) + $0 })
        let datapath = try Datapath(
            configuration: try configuration(forward("127.0.0.1:0", to: upstream.address, extra: "workers = 2\n")),
            logger: Logger(label: "test"))
        await datapath.start()
        let address = try XCTUnwrap(datapath.listener(named: "fwd")).boundAddresses[0]
        let clients = try (0..<8).map { _ in try UDPClient() }
        for (i, c) in clients.enumerated() {
            c.send(Array("a\(i)".utf8), to: address)
            XCTAssertEqual(text(c.receive()?.bytes), "re:a\(i)")
        }
        let ports = Dictionary(uniqueKeysWithValues: upstream.datagrams.map { (text($0.bytes)!, $0.from.port) })
        let before = try XCTUnwrap(datapath.listener(named: "fwd")).counters()

        // Changed: the timeout, a rate limit and the workers stay; the listener is rebuilt.
        let changes = try await datapath.apply(
            try configuration(
                forward(
                    "\(address)", to: upstream.address,
                    extra: "workers = 2\nsession_timeout = 90s\nrate_limit = 5000/s\n")))
        XCTAssertEqual(changes.changed, ["fwd"])
        for (i, c) in clients.enumerated() {
            c.send(Array("b\(i)".utf8), to: address)
            XCTAssertEqual(text(c.receive()?.bytes), "re:b\(i)")
        }
        XCTAssertEqual(upstream.waitForCount(16), 16)
        for d in upstream.datagrams where text(d.bytes)!.hasPrefix("b") {
            let i = text(d.bytes)!.dropFirst()
            XCTAssertEqual(d.from.port, ports["a\(i)"], "client \(i) keeps its upstream source port across the reload")
        }
        let after = try XCTUnwrap(datapath.listener(named: "fwd")).counters()
        XCTAssertEqual(after[.receivedPackets], before[.receivedPackets] + 8, "counters continue")
        XCTAssertEqual(after[.sessionsCreated], before[.sessionsCreated], "no session opened again")
        XCTAssertEqual(after[.sessionsActive], 8)
        await datapath.stop()
    }

    func testAReloadThatRemovesTheUpstreamOfASessionClosesAndCountsIt() async throws {
        let kept = try (0..<2).map { _ in try UpstreamServer(reply: { $0 }) }
        let removed = try UpstreamServer(reply: { $0 })
        func balance(_ listen: String, _ ups: [UpstreamServer]) -> String {
            "[listener fwd]\nlisten = \(listen)\nmode = balance\nbalance = round-robin\nupstream = \(ups.map { "\($0.address)" }.joined(separator: ", "))\n"
        }
        let datapath = try Datapath(configuration: try configuration(balance("127.0.0.1:0", kept + [removed])), logger: Logger(label: "test"))
        await datapath.start()
        let address = try XCTUnwrap(datapath.listener(named: "fwd")).boundAddresses[0]
        let clients = try (0..<3).map { _ in try UDPClient() }
        for c in clients {
            c.send(Array("x".utf8), to: address)
            XCTAssertNotNil(c.receive())
        }
        XCTAssertEqual((kept + [removed]).map(\.datagrams.count), [1, 1, 1])
        let closedBefore = try XCTUnwrap(datapath.listener(named: "fwd")).counters()[.sessionsClosed]

        try await datapath.apply(try configuration(balance("\(address)", kept)))
        let c = try XCTUnwrap(datapath.listener(named: "fwd")).counters()
        XCTAssertEqual(c[.sessionsActive], 2, "the sessions on the kept upstreams continue")
        XCTAssertEqual(c[.sessionsClosed], closedBefore + 1, "the one on the removed upstream is closed and counted")
        await datapath.stop()
    }
}
