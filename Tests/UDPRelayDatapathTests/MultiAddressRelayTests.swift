import Foundation
import Logging
import TestSupport
import UDPRelayConfig
import XCTest

@testable import UDPRelayDatapath

#if canImport(Glibc)
import Glibc
#endif

/// A balance listener over a hostname whose records are loopback addresses (127.0.0.1, .2, .3,
/// one upstream server on each, the same port), with an injected resolver the test changes:
/// clients spread over every address; after the answer shrinks, the sessions on the address
/// that left keep their upstream (same source port) until they idle out, no new session lands
/// there, and its row goes once they have ended. A reload's handover keeps such sessions too.
final class MultiAddressRelayTests: XCTestCase {
    func text(_ bytes: [UInt8]?) -> String? { bytes.map { String(decoding: $0, as: UTF8.self) } }

    /// Servers on 127.0.0.1, .2 and .3 sharing one port, answering "a:", "b:", "c:" + payload.
    func servers() throws -> [UpstreamServer] {
        for _ in 0..<10 {
            let a = try UpstreamServer(reply: { Array("a:".utf8) + $0 })
            let port = a.address.port
            guard let b = try? UpstreamServer(bind: SocketAddress(ip: .v4(0x7F00_0002), port: port), reply: { Array("b:".utf8) + $0 }),
                let c = try? UpstreamServer(bind: SocketAddress(ip: .v4(0x7F00_0003), port: port), reply: { Array("c:".utf8) + $0 })
            else { continue }
            return [a, b, c]
        }
        throw XCTSkip("no port free on 127.0.0.1, .2 and .3 at once in 10 tries")
    }

    func configuration(port: UInt16, timeout: Duration = .seconds(60)) throws -> ListenerConfiguration {
        ListenerConfiguration(
            name: "lb", listen: [SocketAddress(ip: .v4(0x7F00_0001), port: 0)], mode: .balance,
            upstreams: [try UpstreamEndpoint(parsing: "svc.test:\(port)")], balance: .roundRobin,
            sessions: SessionSettings(timeout: timeout))
    }

    func start(_ lc: ListenerConfiguration, _ dns: SettableResolver) throws -> Listener {
        let l = try Listener(lc, logger: Logger(label: "test"), resolver: { dns.resolve($0, $1) })
        let loop = LocalAddresses.context([l])
        for w in l.workers { w.setLoopContext(loop) }
        let registered = DispatchGroup()
        l.start(registered: registered)
        registered.wait()
        return l
    }

    func stop(_ l: Listener) {
        let done = DispatchGroup()
        l.stop(done: done)
        done.wait()
    }

    /// The live sessions of the listener's worker, as `/sessions` describes them.
    func liveSessions(_ l: Listener) -> [LiveSession] {
        let worker = l.workers[0] as! RelayWorker
        let found = LockedBox<[LiveSession]>([])
        let done = DispatchSemaphore(value: 0)
        worker.liveSessions(limit: 1000) { sessions, now in
            found.value = sessions.map { worker.describe($0.session, lastUsed: $0.lastUsed, now: now) }
            done.signal()
        }
        _ = done.wait(timeout: .now() + 5)
        return found.value
    }

    /// The row of `address` (`127.0.0.2`) in the listener's upstreams, nil when it has none.
    func row(_ l: Listener, _ ip: String) -> UpstreamSnapshot? {
        l.upstreamSnapshots().first { $0.address.map { "\($0.ip)" } == ip }
    }

    func testSessionsOnAnAddressThatLeftTheAnswerKeepTheirUpstreamUntilTheyIdleOut() throws {
        let s = try servers()
        let port = s[0].address.port
        let dns = SettableResolver(["127.0.0.1", "127.0.0.2", "127.0.0.3"])
        let l = try start(configuration(port: port, timeout: .milliseconds(800)), dns)
        defer { stop(l) }
        let address = l.boundAddresses[0]
        XCTAssertEqual(
            l.upstreamSnapshots().map { "\($0.endpoint) \($0.address!)" },
            ["127.0.0.1", "127.0.0.2", "127.0.0.3"].map { "svc.test:\(port) \($0):\(port)" })

        // Nine clients spread over the three addresses.
        let clients = try (0..<9).map { _ in try UDPClient() }
        var on: [String: [Int]] = [:]
        for (i, c) in clients.enumerated() {
            c.send(Array("k\(i)".utf8), to: address)
            let reply = try XCTUnwrap(text(c.receive()?.bytes), "client \(i) got no reply")
            on[String(reply.prefix(1)), default: []].append(i)
        }
        XCTAssertEqual(on.mapValues(\.count), ["a": 3, "b": 3, "c": 3], "round-robin over every address")
        let onB = try XCTUnwrap(on["b"])
        func portsOnB(_ prefix: String) -> [Int: UInt16] {
            Dictionary(
                s[1].datagrams.compactMap { d in
                    let t = String(decoding: d.bytes, as: UTF8.self)
                    guard t.hasPrefix(prefix), let i = Int(t.dropFirst(prefix.count)) else { return nil }
                    return (i, d.from.port)
                }, uniquingKeysWith: { a, _ in a })
        }
        let firstPorts = portsOnB("k")
        XCTAssertEqual(Set(firstPorts.keys), Set(onB))

        // The answer shrinks: .2 leaves it.
        dns.set(["127.0.0.1", "127.0.0.3"])
        try XCTUnwrap(l.upstreams).resolveNames().wait()
        let draining = try XCTUnwrap(row(l, "127.0.0.2"))
        XCTAssertTrue(draining.draining && draining.removed, "\(draining)")
        XCTAssertEqual(draining.counters[.sessionsActive], 3)

        // Its sessions continue, from the same source ports.
        for i in onB {
            clients[i].send(Array("m\(i)".utf8), to: address)
            XCTAssertEqual(text(clients[i].receive()?.bytes), "b:m\(i)", "client \(i) keeps its upstream")
        }
        XCTAssertEqual(portsOnB("m"), firstPorts, "the upstream sees the same source port")
        // /sessions names the address each session uses, the drained one included.
        let byClient = Dictionary(uniqueKeysWithValues: liveSessions(l).compactMap { s in s.client.map { ($0.port, s) } })
        for (i, c) in clients.enumerated() {
            let session = try XCTUnwrap(byClient[c.localAddress.port], "client \(i) has no live session")
            XCTAssertEqual(session.upstream, "svc.test:\(port)")
            let ip = onB.contains(i) ? "127.0.0.2" : (on["a"]!.contains(i) ? "127.0.0.1" : "127.0.0.3")
            XCTAssertEqual(session.upstreamAddress.map { "\($0)" }, "\(ip):\(port)", "client \(i)")
        }

        // New clients never land there.
        let before = s[1].datagrams.count
        for j in 0..<8 {
            let c = try UDPClient()
            c.send(Array("n\(j)".utf8), to: address)
            let reply = try XCTUnwrap(text(c.receive()?.bytes))
            XCTAssertTrue(reply.hasPrefix("a:") || reply.hasPrefix("c:"), "new client \(j) went to \(reply)")
        }
        XCTAssertEqual(s[1].datagrams.count, before, "no new session on the removed address")

        // Once its sessions idle out (session_timeout), its row goes.
        let deadline = Date().addingTimeInterval(15)
        while row(l, "127.0.0.2") != nil && Date() < deadline { usleep(20_000) }
        XCTAssertNil(row(l, "127.0.0.2"), "the drained address leaves the table: \(l.upstreamSnapshots())")
        XCTAssertEqual(l.upstreamSnapshots().compactMap { $0.address.map { "\($0.ip)" } }, ["127.0.0.1", "127.0.0.3"])
    }

    /// Health probes go to every address of the name, and stop for one that left the answer.
    func testHealthProbesEachAddress() throws {
        let s = try servers()
        let dns = SettableResolver(["127.0.0.1", "127.0.0.2", "127.0.0.3"])
        let lc = ListenerConfiguration(
            name: "lb", listen: [SocketAddress(ip: .v4(0x7F00_0001), port: 0)], mode: .balance,
            upstreams: [try UpstreamEndpoint(parsing: "svc.test:\(s[0].address.port)")],
            health: HealthSettings(probe: Array("ping".utf8), interval: .milliseconds(50)))
        let t = UpstreamTable(configuration: lc, workers: 1, logger: Logger(label: "test"), resolver: { dns.resolve($0, $1) })
        t.awaitInitialResolution()
        t.start()
        defer {
            let done = DispatchGroup()
            t.stop(done: done)
            done.wait()
        }
        for (k, server) in s.enumerated() { XCTAssertGreaterThanOrEqual(server.waitForCount(2), 2, "address \(k + 1) is probed") }
        let deadline = Date().addingTimeInterval(10)
        while t.snapshot().contains(where: { $0.counters[.probesAnswered] == 0 }) && Date() < deadline { usleep(10_000) }
        XCTAssertEqual(t.snapshot().map { $0.counters[.probesAnswered] > 0 }, [true, true, true], "each address's own probes answered")

        dns.set(["127.0.0.1", "127.0.0.3"])
        t.resolveNames().wait()
        let left = s[1].datagrams.count
        let others = (s[0].datagrams.count, s[2].datagrams.count)
        XCTAssertGreaterThanOrEqual(s[0].waitForCount(others.0 + 3), others.0 + 3)
        XCTAssertGreaterThanOrEqual(s[2].waitForCount(others.1 + 3), others.1 + 3)
        XCTAssertLessThanOrEqual(s[1].datagrams.count, left + 1, "no more probes to the address that left (one may have been on its way)")
    }

    func testAReloadHandsOverSessionsOnAnAddressTheNameNoLongerHas() throws {
        let s = try servers()
        let port = s[0].address.port
        let dns = SettableResolver(["127.0.0.1", "127.0.0.2"])
        let old = try start(configuration(port: port), dns)
        let address = old.boundAddresses[0]
        let clients = try (0..<4).map { _ in try UDPClient() }
        var onB: [Int] = []
        for (i, c) in clients.enumerated() {
            c.send(Array("k\(i)".utf8), to: address)
            if try XCTUnwrap(text(c.receive()?.bytes)).hasPrefix("b:") { onB.append(i) }
        }
        XCTAssertEqual(onB.count, 2)
        let ports = Set(s[1].datagrams.map(\.from.port))

        // The old listener stops handing its sessions over; the new one's name has only .1.
        let handed = LockedBox<[HandedOverSession]>([])
        let oldWorker = try XCTUnwrap(old.workers.first as? RelayWorker)
        oldWorker.handSessionsOverAtStop(socket: 0) { handed.value = $0 }
        stop(old)
        XCTAssertEqual(handed.value.count, 4)
        dns.set(["127.0.0.1"])
        let lc = try configuration(port: port)
        let new = try Listener(lc, sockets: [.bind(address)], logger: Logger(label: "test"), resolver: { dns.resolve($0, $1) })
        let loop = LocalAddresses.context([new])
        for w in new.workers { w.setLoopContext(loop) }
        let registered = DispatchGroup()
        new.start(registered: registered)
        registered.wait()
        defer { stop(new) }
        let newWorker = try XCTUnwrap(new.workers.first as? RelayWorker)
        XCTAssertEqual(newWorker.takeOver(handed.value), RelayWorker.Adoption(adopted: 4), "none cut as upstream_removed")

        let b = try XCTUnwrap(row(new, "127.0.0.2"), "the address the name no longer has drains")
        XCTAssertTrue(b.removed && b.draining)
        XCTAssertEqual(b.counters[.sessionsActive], 2)
        for i in onB {
            clients[i].send(Array("m\(i)".utf8), to: address)
            XCTAssertEqual(text(clients[i].receive()?.bytes), "b:m\(i)")
        }
        XCTAssertEqual(Set(s[1].datagrams.map(\.from.port)), ports, "same source ports after the reload")
        let c = try UDPClient()
        c.send(Array("new".utf8), to: address)
        XCTAssertEqual(text(c.receive()?.bytes), "a:new", "a new client goes to the address the name has")
    }
}
