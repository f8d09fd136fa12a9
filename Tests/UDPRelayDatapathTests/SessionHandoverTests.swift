import Foundation
import Logging
import TestSupport
import UDPRelayConfig
import XCTest

@testable import UDPRelayDatapath

#if canImport(Glibc)
import Glibc
#endif

/// Relay sessions handed from one worker to another, as a reload that rebuilds a listener (or
/// a restart) does: the upstream keeps seeing the same source port, and replies keep reaching
/// the client. Two datapaths stand for the old and the new listener.
final class SessionHandoverTests: XCTestCase, ConfigFileTests {
    /// A running forward listener `fwd` over `upstreams`, and its one worker.
    func startRelay(_ upstreams: [SocketAddress], listen: String = "127.0.0.1:0", extra: String = "") throws -> (Datapath, Listener, RelayWorker) {
        let list = upstreams.map { "\($0)" }.joined(separator: ", ")
        let text = "[listener fwd]\nlisten = \(listen)\nmode = forward\nupstream = \(list)\n" + extra
        let datapath = try Datapath(configuration: try configuration(text), logger: Logger(label: "test"))
        datapath.startBlocking()
        let listener = try XCTUnwrap(datapath.listener(named: "fwd"))
        XCTAssertEqual(listener.workers.count, 1)
        return (datapath, listener, try XCTUnwrap(listener.workers.first as? RelayWorker))
    }

    /// Stops `datapath` with its worker's live sessions handed over instead of closed.
    func stopHandingOver(_ datapath: Datapath, _ worker: RelayWorker) -> [HandedOverSession] {
        let handed = LockedBox<[HandedOverSession]>([])
        worker.handSessionsOverAtStop(socket: 0) { handed.value = $0 }
        datapath.stopBlocking()
        return handed.value
    }

    /// Whether a socket can bind 127.0.0.1:`port` right now (false while a session has it).
    func portIsFree(_ port: UInt16) -> Bool {
        guard let fd = try? UDPSocket.bound(to: SocketAddress(ip: .v4(0x7F00_0001), port: port)) else { return false }
        close(fd)
        return true
    }

    func text(_ bytes: [UInt8]?) -> String? { bytes.map { String(decoding: $0, as: UTF8.self) } }

    func testASessionHandedToANewWorkerKeepsItsUpstreamPortAndItsClient() throws {
        let upstream = try UpstreamServer(reply: { Array("re:".utf8) + $0 })
        let (old, oldListener, oldWorker) = try startRelay([upstream.address])
        let client = try UDPClient()
        client.send(Array("one".utf8), to: oldListener.boundAddresses[0])
        XCTAssertEqual(text(client.receive()?.bytes), "re:one")
        let port = try XCTUnwrap(upstream.datagrams.first).from.port

        let handed = stopHandingOver(old, oldWorker)
        XCTAssertEqual(handed.count, 1)
        let entry = try XCTUnwrap(handed.first).entry
        XCTAssertEqual(entry.listener, "fwd")
        XCTAssertEqual(entry.client, client.localAddress)
        XCTAssertEqual(entry.upstream, upstream.address)
        XCTAssertEqual(entry.requests, 1)
        XCTAssertEqual(entry.replies, 1)
        XCTAssertLessThan(entry.idleMilliseconds, 5_000)
        XCTAssertEqual(oldListener.counters()[.sessionsActive], 0)
        XCTAssertEqual(oldListener.counters()[.sessionsCreated], 1)
        XCTAssertFalse(portIsFree(port), "stopping the old listener left the handed session's socket open")

        let (new, newListener, newWorker) = try startRelay([upstream.address])
        defer { new.stopBlocking() }
        XCTAssertEqual(newWorker.takeOver(handed), RelayWorker.Adoption(adopted: 1))
        XCTAssertEqual(newListener.counters()[.sessionsActive], 1)

        client.send(Array("two".utf8), to: newListener.boundAddresses[0])
        let reply = try XCTUnwrap(client.receive(), "the reply reaches the same client")
        XCTAssertEqual(text(reply.bytes), "re:two")
        XCTAssertEqual(reply.from, newListener.boundAddresses[0])
        XCTAssertEqual(upstream.datagrams.map(\.from.port), [port, port], "the upstream sees the same source port")

        // Counters balance: one session, created once (by the old worker), live in the new one.
        let counters = newListener.counters()
        XCTAssertEqual(counters[.sessionsCreated], 0, "adopted, not created")
        XCTAssertEqual(counters[.sessionsActive], 1)
        XCTAssertEqual(counters[.receivedPackets], 1)
        XCTAssertTrue(waitUntil(5) { newListener.counters()[.sentPackets] == 1 })
        for c: Counter in [.sessionsExpired, .sessionsEvicted, .sessionsClosed, .sessionsFailed, .sessionErrors, .dropNoSession] {
            XCTAssertEqual(counters[c], 0, "\(c)")
        }
        let up = try XCTUnwrap(newListener.upstreamSnapshots().first).counters
        XCTAssertEqual(up[.sentPackets], 1)
        XCTAssertEqual(up[.receivedPackets], 1)
        XCTAssertEqual(up[.sessions], 0, "its upstream gave it no new session")

        // Stopping the new listener closes the adopted session like its own.
        new.stopBlocking()
        XCTAssertTrue(portIsFree(port))
    }

    func testAnAdoptedSessionExpiresOnTheNewTimeoutCountingItsIdleTime() throws {
        let upstream = try UpstreamServer(reply: nil)
        let (old, oldListener, oldWorker) = try startRelay([upstream.address])
        let client = try UDPClient()
        client.send([1], to: oldListener.boundAddresses[0])
        XCTAssertEqual(upstream.waitForCount(1), 1)
        var handed = stopHandingOver(old, oldWorker)
        XCTAssertEqual(handed.count, 1)
        // Idle for 10 s already: a reload to session_timeout = 5s expires it at once.
        handed[0].entry.idleMilliseconds = 10_000
        let (new, newListener, newWorker) = try startRelay([upstream.address], extra: "session_timeout = 5s\n")
        defer { new.stopBlocking() }
        XCTAssertEqual(newWorker.takeOver(handed).adopted, 1)
        XCTAssertTrue(waitUntil(3) { newListener.counters()[.sessionsExpired] == 1 }, "expired on its idle time, not 5 s after adoption")
        XCTAssertEqual(newListener.counters()[.sessionsActive], 0)
    }

    func testASessionWhoseUpstreamWasRemovedIsClosedAndCounted() throws {
        let removed = try UpstreamServer(), kept = try UpstreamServer()
        let (old, oldListener, oldWorker) = try startRelay([removed.address])
        let client = try UDPClient()
        client.send([1], to: oldListener.boundAddresses[0])
        XCTAssertNotNil(client.receive())
        let port = try XCTUnwrap(removed.datagrams.first).from.port
        let handed = stopHandingOver(old, oldWorker)

        // The reload replaced the upstream list.
        let (new, newListener, newWorker) = try startRelay([kept.address])
        defer { new.stopBlocking() }
        XCTAssertEqual(newWorker.takeOver(handed), RelayWorker.Adoption(upstreamRemoved: 1))
        XCTAssertEqual(newListener.counters()[.sessionsClosed], 1)
        XCTAssertEqual(newListener.counters()[.sessionsActive], 0)
        XCTAssertTrue(portIsFree(port), "its socket is closed")

        client.send([2], to: newListener.boundAddresses[0])
        XCTAssertNotNil(client.receive(), "the client's next datagram opens a session on an upstream that is there")
        XCTAssertEqual(kept.datagrams.count, 1)
        XCTAssertEqual(removed.datagrams.count, 1)
        XCTAssertEqual(newListener.counters()[.sessionsCreated], 1)
    }

    func testDescriptorsThatAreNotTheSessionsSocketAreRefusedAndCounted() throws {
        let upstream = try UpstreamServer(), elsewhere = try UpstreamServer()
        let (new, newListener, newWorker) = try startRelay([upstream.address])
        defer { new.stopBlocking() }
        let client = try UDPClient()
        func entry(_ client: SocketAddress) -> SessionArchive.Entry {
            SessionArchive.Entry(
                listener: "fwd", socket: 0, client: client, local: nil, interface: 0, upstream: upstream.address,
                idleMilliseconds: 0, requests: 1, replies: 0)
        }
        // A UDP socket connected to another address than the entry's upstream.
        let connectedElsewhere = try UDPSocket.open(family: AF_INET)
        try UDPSocket.connect(connectedElsewhere, to: elsewhere.address)
        let elsewherePort = try UDPSocket.localAddress(connectedElsewhere).port
        // A UDP socket connected to nothing, a pipe, and no descriptor at all.
        let unconnected = try UDPSocket.bound(to: SocketAddress(ip: .v4(0x7F00_0001), port: 0))
        let unconnectedPort = try UDPSocket.localAddress(unconnected).port
        var pipeEnds: [Int32] = [0, 0]
        XCTAssertEqual(pipe(&pipeEnds), 0)
        // A socket connected to the right upstream, for an IPv6 client on this IPv4 listener.
        let otherFamily = try UDPSocket.open(family: AF_INET)
        try UDPSocket.connect(otherFamily, to: upstream.address)
        let otherFamilyPort = try UDPSocket.localAddress(otherFamily).port
        let v6Client = SocketAddress(ip: .v6(high: 0, low: 1), port: 4242)

        let adoption = newWorker.takeOver([
            HandedOverSession(entry: entry(client.localAddress), fd: connectedElsewhere),
            HandedOverSession(entry: entry(SocketAddress(ip: .v4(0x7F00_0001), port: 1001)), fd: unconnected),
            HandedOverSession(entry: entry(SocketAddress(ip: .v4(0x7F00_0001), port: 1002)), fd: pipeEnds[1]),
            HandedOverSession(entry: entry(SocketAddress(ip: .v4(0x7F00_0001), port: 1003)), fd: -1),
            HandedOverSession(entry: entry(v6Client), fd: otherFamily),
        ])
        XCTAssertEqual(adoption, RelayWorker.Adoption(unusable: 5))
        XCTAssertEqual(newListener.counters()[.sessionErrors], 5)
        XCTAssertEqual(newListener.counters()[.sessionsActive], 0)
        XCTAssertTrue(portIsFree(elsewherePort) && portIsFree(unconnectedPort) && portIsFree(otherFamilyPort), "each socket is closed")
        var byte: UInt8 = 0
        XCTAssertEqual(read(pipeEnds[0], &byte, 1), 0, "the pipe's write end is closed: its reader sees the end")
        close(pipeEnds[0])

        // The worker serves on: the client gets a session of its own.
        client.send([7], to: newListener.boundAddresses[0])
        XCTAssertEqual(client.receive()?.bytes, [7])
        XCTAssertEqual(upstream.datagrams.count, 1)
        XCTAssertEqual(elsewhere.datagrams.count, 0)
        XCTAssertEqual(newListener.counters()[.sessionsCreated], 1)
    }

    func testBeyondMaxSessionsTheLeastRecentlyUsedAreClosedAndCounted() throws {
        let upstream = try UpstreamServer()
        let (old, oldListener, oldWorker) = try startRelay([upstream.address])
        let clients = try (0..<3).map { _ in try UDPClient() }
        for c in clients {
            c.send([1], to: oldListener.boundAddresses[0])
            XCTAssertNotNil(c.receive())
        }
        var handed = stopHandingOver(old, oldWorker)
        XCTAssertEqual(handed.count, 3)
        // Make the order certain: client 0 idle longest, client 2 least.
        for i in handed.indices {
            let n = try XCTUnwrap(clients.firstIndex { $0.localAddress == handed[i].entry.client })
            handed[i].entry.idleMilliseconds = UInt32(3 - n) * 100
        }
        let (new, newListener, newWorker) = try startRelay([upstream.address], extra: "max_sessions = 2\n")
        defer { new.stopBlocking() }
        XCTAssertEqual(newWorker.takeOver(handed), RelayWorker.Adoption(adopted: 2, noRoom: 1))
        XCTAssertEqual(newListener.counters()[.sessionsEvicted], 1)
        XCTAssertEqual(newListener.counters()[.sessionsActive], 2)
        let ports = upstream.datagrams.map(\.from.port)
        XCTAssertTrue(portIsFree(ports[0]), "client 0's session, the least recently used, is closed")
        for i in 1...2 {
            clients[i].send([2], to: newListener.boundAddresses[0])
            XCTAssertNotNil(clients[i].receive())
            XCTAssertEqual(upstream.datagrams.last?.from.port, ports[i], "client \(i) keeps its session")
        }
    }

    func testOnAWildcardListenerRepliesStillLeaveFromTheAddressTheClientSentTo() throws {
        let upstream = try UpstreamServer()
        let (old, oldListener, oldWorker) = try startRelay([upstream.address], listen: "0.0.0.0:0")
        let client = try UDPClient()
        // 127.0.0.2, not the address a reply to 127.0.0.1 would leave from by itself.
        let second = SocketAddress(ip: .v4(0x7F00_0002), port: oldListener.boundAddresses[0].port)
        client.send([1], to: second)
        XCTAssertEqual(client.receive()?.from, second)
        let handed = stopHandingOver(old, oldWorker)
        XCTAssertEqual(handed.first?.entry.local?.ip, second.ip, "the address the client sent to")
        XCTAssertNotEqual(handed.first?.entry.interface, 0)

        // The new listener on the same port, as a reload keeps it (the old socket is closed).
        let (new, newListener, newWorker) = try startRelay([upstream.address], listen: "0.0.0.0:\(second.port)")
        defer { new.stopBlocking() }
        XCTAssertEqual(newWorker.takeOver(handed).adopted, 1)
        let port = try XCTUnwrap(upstream.datagrams.first).from.port
        client.send([2], to: second)
        XCTAssertEqual(client.receive()?.from, second, "the reply leaves from the address the client sent to")
        XCTAssertEqual(upstream.datagrams.last?.from.port, port, "through the adopted session")
        XCTAssertEqual(newListener.counters()[.sessionsCreated], 0)
    }

    func testAnIPv6SessionIsFoundByItsClientsNextDatagram() throws {
        let upstream = try UpstreamServer(ipv6: true)
        let (old, oldListener, oldWorker) = try startRelay([upstream.address], listen: "[::1]:0")
        let client = try UDPClient(ipv6: true)
        client.send([1], to: oldListener.boundAddresses[0])
        XCTAssertNotNil(client.receive())
        let handed = stopHandingOver(old, oldWorker)
        let (new, newListener, newWorker) = try startRelay([upstream.address], listen: "[::1]:0")
        defer { new.stopBlocking() }
        XCTAssertEqual(newWorker.takeOver(handed).adopted, 1)
        client.send([2], to: newListener.boundAddresses[0])
        XCTAssertEqual(client.receive()?.bytes, [2])
        XCTAssertEqual(Set(upstream.datagrams.map(\.from)).count, 1, "one session, one source port")
        XCTAssertEqual(newListener.counters()[.sessionsCreated], 0)
    }

    func testSessionsCarriedThroughTheArchiveAreTakenOverToo() throws {
        // A restart: the entries go through the sealed memfd, the sockets beside it.
        let upstream = try UpstreamServer()
        let (old, oldListener, oldWorker) = try startRelay([upstream.address])
        let clients = try (0..<2).map { _ in try UDPClient() }
        for c in clients {
            c.send([1], to: oldListener.boundAddresses[0])
            XCTAssertNotNil(c.receive())
        }
        let handed = stopHandingOver(old, oldWorker)
        let memfd = try SessionArchive(entries: handed.map(\.entry)).sealedMemoryFile()
        defer { close(memfd) }
        let archive = try SessionArchive(sealedMemoryFile: memfd)
        let restored = zip(archive.entries, handed).map { HandedOverSession(entry: $0, fd: $1.fd) }

        let (new, newListener, newWorker) = try startRelay([upstream.address])
        defer { new.stopBlocking() }
        XCTAssertEqual(newWorker.takeOver(restored).adopted, 2)
        let ports = upstream.datagrams.map(\.from.port)
        for (i, c) in clients.enumerated() {
            c.send([2], to: newListener.boundAddresses[0])
            XCTAssertEqual(c.receive()?.bytes, [2], "client \(i) gets its reply")
            XCTAssertEqual(upstream.datagrams.last?.from.port, ports[i], "client \(i) keeps its upstream source port")
        }
    }
}
