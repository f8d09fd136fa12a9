import Foundation
import Logging
import TestSupport
import UDPRelayConfig
import XCTest

@testable import UDPRelayDatapath

#if canImport(Glibc)
import Glibc
#endif

/// `/sessions` from the datapath's side: each worker copies its most recently used live
/// sessions, at most `limit`, and `Datapath.liveSessions` merges them, most recent first.
final class LiveSessionsTests: XCTestCase, ConfigFileTests {
    static let ms: UInt64 = 1_000_000

    func key(_ i: Int) -> ClientKey { ClientKey(high: UInt64(0x0A00_0000 + i), low: 0, rest: UInt64(AF_INET) | 5353 << 16) }

    func testTheTableGivesItsMostRecentlyUsedLiveSessionsUpToTheLimit() throws {
        var next: Int32 = 100
        var t = SessionTable(
            settings: SessionSettings(timeout: .seconds(60), maxSessions: 4), holdNanos: 2_000 * Self.ms, closer: { _ in })
        for i in 0..<5 {
            if t.isFull { _ = t.evictLeastRecentlyUsed(now: UInt64(i) * Self.ms) }
            next += 1
            _ = try t.open(Session(fd: next, key: key(i), upstream: 0), now: UInt64(i) * Self.ms) { (_: UInt64) throws(SyscallError) in }
        }
        // Client 0 was evicted for client 4; client 2 is used again; client 3 closes.
        XCTAssertNotNil(t.lookup(key(2), now: 10 * Self.ms))
        t.close(try XCTUnwrap(t.slot(of: key(3))), reason: .expired, now: 11 * Self.ms)

        let all = t.mostRecentSessions(limit: 10)
        XCTAssertEqual(all.map { $0.session.key }, [key(2), key(4), key(1)], "live only, most recent first")
        XCTAssertEqual(all.map { $0.lastUsed }, [10 * Self.ms, 4 * Self.ms, 1 * Self.ms])
        XCTAssertEqual(t.mostRecentSessions(limit: 2).map { $0.session.key }, [key(2), key(4)], "at most the limit")
        XCTAssertEqual(t.mostRecentSessions(limit: 0).count, 0)
    }

    func testTheDatapathMergesItsWorkersMostRecentFirstWithCountsEachWay() async throws {
        let upstream = try UpstreamServer()
        defer { upstream.stop() }
        let text = """
            [listener fwd]
            listen = 127.0.0.1:0
            mode = forward
            workers = 2
            upstream = \(upstream.address)
            [listener other]
            listen = 127.0.0.1:0
            mode = forward
            upstream = \(upstream.address)
            [listener plain]
            listen = 127.0.0.1:0
            """
        let datapath = try Datapath(configuration: try configuration(text), logger: Logger(label: "t") { _ in SwiftLogNoOpLogHandler() })
        datapath.startBlocking()
        defer { datapath.stopBlocking() }
        let fwd = try XCTUnwrap(datapath.listener(named: "fwd")).boundAddresses[0]
        let other = try XCTUnwrap(datapath.listener(named: "other")).boundAddresses[0]

        // Six clients of `fwd` (spread over its two workers by the kernel), one of `other`;
        // client k sends k + 1 datagrams of 10 bytes, each echoed, in order.
        var clients: [UDPClient] = []
        for k in 0..<6 {
            let c = try UDPClient()
            for _ in 0...k {
                c.send(Array(repeating: 7, count: 10), to: fwd)
                XCTAssertNotNil(c.receive(), "client \(k) is answered")
            }
            clients.append(c)
        }
        let lone = try UDPClient()
        XCTAssertEqual(echo(lone, other, "x"), "x")

        let all = await datapath.liveSessions(limit: 100)
        XCTAssertEqual(all.unanswered, [])
        XCTAssertEqual(all.sessions.count, 7)
        XCTAssertEqual(all.sessions.first?.client, lone.localAddress, "the most recent first, whichever listener")
        let mine = await datapath.liveSessions(listener: "fwd", limit: 100)
        XCTAssertEqual(mine.sessions.map(\.client), clients.reversed().map(\.localAddress), "most recently active first, across both workers")
        for (k, s) in mine.sessions.reversed().enumerated() {
            XCTAssertEqual([s.requests, s.requestBytes, s.replies, s.replyBytes], [UInt64(k + 1), UInt64(10 * (k + 1)), UInt64(k + 1), UInt64(10 * (k + 1))])
            XCTAssertEqual(s.listener, "fwd")
            XCTAssertEqual(s.upstream, "\(upstream.address)")
            XCTAssertLessThan(s.idleNanos, 60_000_000_000)
            XCTAssertGreaterThanOrEqual(s.ageNanos, s.idleNanos)
        }
        let two = await datapath.liveSessions(listener: "fwd", limit: 2)
        XCTAssertEqual(two.sessions.map(\.client), [clients[5], clients[4]].map(\.localAddress), "the two most recent")
        let echoOnly = await datapath.liveSessions(listener: "plain", limit: 100)
        XCTAssertEqual(echoOnly.sessions.count + echoOnly.unanswered.count, 0, "an echo listener keeps no sessions")
    }

    func testAWorkerThatDoesNotAnswerInTimeIsNamedAndTheOthersAnswer() async throws {
        let upstream = try UpstreamServer()
        defer { upstream.stop() }
        let text = """
            [listener busy]
            listen = 127.0.0.1:0
            mode = forward
            upstream = \(upstream.address)
            [listener free]
            listen = 127.0.0.1:0
            mode = forward
            upstream = \(upstream.address)
            """
        let datapath = try Datapath(configuration: try configuration(text), logger: Logger(label: "t") { _ in SwiftLogNoOpLogHandler() })
        await datapath.start()
        let free = try XCTUnwrap(datapath.listener(named: "free"))
        let client = try UDPClient()
        XCTAssertEqual(echo(client, free.boundAddresses[0], "x"), "x")
        // The busy listener's queue is held until the answer is in (or 10 s, bounded).
        let release = DispatchSemaphore(value: 0)
        let busy = try XCTUnwrap(datapath.listener(named: "busy"))
        busy.workers[0].queue.async { _ = release.wait(timeout: .now() + 10) }

        let started = ContinuousClock.now
        let found = await datapath.liveSessions(limit: 10, timeout: .milliseconds(100))
        let waited = ContinuousClock.now - started
        release.signal()
        XCTAssertEqual(found.unanswered, ["listener 'busy' queue for \(busy.boundAddresses[0]) did not answer within 0.1 seconds"])
        XCTAssertEqual(found.sessions.map(\.client), [client.localAddress], "the answering worker's sessions are there")
        XCTAssertLessThan(waited, .seconds(2), "the deadline, not the busy queue, ends the wait")
        await datapath.stop()
    }
}
