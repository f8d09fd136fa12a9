import Foundation
import Logging
import TestSupport
import UDPRelayConfig
import XCTest

@testable import UDPRelayDatapath

/// `drain` and `backup` on live traffic, and each upstream's live-session count: a reload that
/// adds `drain` keeps that upstream's sessions (same source port) and sends it no new client.
final class DrainTests: XCTestCase, ConfigFileTests {
    func text(_ bytes: [UInt8]?) -> String? { bytes.map { String(decoding: $0, as: UTF8.self) } }

    func balance(_ listen: String, _ a: UpstreamServer, _ b: UpstreamServer, bOptions: String = "") -> String {
        "[listener lb]\nlisten = \(listen)\nmode = balance\nbalance = round-robin\nupstream = \(a.address), \(b.address) \(bOptions)\n"
    }

    func sessionsActive(_ datapath: Datapath) throws -> [UInt64] {
        try XCTUnwrap(datapath.listener(named: "lb")).upstreamSnapshots().map { $0.counters[.sessionsActive] }
    }

    func testAReloadThatDrainsAnUpstreamKeepsItsSessionsAndSendsItNoNewClient() async throws {
        let a = try UpstreamServer(reply: { Array("a:".utf8) + $0 })
        let b = try UpstreamServer(reply: { Array("b:".utf8) + $0 })
        let datapath = try Datapath(configuration: try configuration(balance("127.0.0.1:0", a, b)), logger: Logger(label: "test"))
        await datapath.start()
        let address = try XCTUnwrap(datapath.listener(named: "lb")).boundAddresses[0]
        let first = try (0..<4).map { _ in try UDPClient() }
        var onB: [UDPClient] = []
        for c in first {
            c.send(Array("x".utf8), to: address)
            let reply = try XCTUnwrap(text(c.receive()?.bytes))
            if reply.hasPrefix("b:") { onB.append(c) }
        }
        XCTAssertEqual(onB.count, 2, "round-robin over two upstreams")
        XCTAssertEqual(try sessionsActive(datapath), [2, 2], "each upstream's live sessions")
        let bPorts = Set(b.datagrams.map(\.from.port))

        try await datapath.apply(try configuration(balance("\(address)", a, b, bOptions: "drain")))
        let snapshot = try XCTUnwrap(datapath.listener(named: "lb")).upstreamSnapshots()
        XCTAssertEqual(snapshot.map(\.draining), [false, true])
        XCTAssertEqual(try sessionsActive(datapath), [2, 2], "the draining upstream keeps its sessions")
        for c in onB {
            c.send(Array("y".utf8), to: address)
            XCTAssertEqual(text(c.receive()?.bytes), "b:y", "a session on the draining upstream continues")
        }
        XCTAssertEqual(b.waitForCount(4), 4)
        XCTAssertEqual(Set(b.datagrams.map(\.from.port)), bPorts, "from the same source ports")
        for _ in 0..<6 {
            let c = try UDPClient()
            c.send(Array("new".utf8), to: address)
            XCTAssertEqual(text(c.receive()?.bytes), "a:new", "no new session lands on the draining upstream")
        }
        XCTAssertEqual(try sessionsActive(datapath), [8, 2])
        await datapath.stop()
        XCTAssertEqual(try sessionsActive(datapath), [0, 0], "every session ended at stop")
    }

    func testABackupTakesNewClientsOnlyWhileNoPrimaryIsUp() async throws {
        let primary = try UpstreamServer(reply: { Array("p:".utf8) + $0 })
        let backup = try UpstreamServer(reply: { Array("b:".utf8) + $0 })
        let datapath = try Datapath(
            configuration: try configuration(balance("127.0.0.1:0", primary, backup, bOptions: "backup")),
            logger: Logger(label: "test"))
        await datapath.start()
        let address = try XCTUnwrap(datapath.listener(named: "lb")).boundAddresses[0]
        for _ in 0..<4 {
            let c = try UDPClient()
            c.send(Array("x".utf8), to: address)
            XCTAssertEqual(text(c.receive()?.bytes), "p:x", "the backup is not used while the primary is up")
        }
        XCTAssertEqual(backup.datagrams.count, 0)
        await datapath.stop()
    }
}
