import Dispatch
import Logging
import Synchronization
import TestSupport
import UDPRelayConfig
import XCTest

@testable import UDPRelayDatapath

#if canImport(Glibc)
import Glibc
#endif

/// The worker runtime (`WaitSet`, `SocketWorker.serveTurn`): a worker that keeps its thread
/// while traffic flows must still run the other work of its queue in bounded time, serve every
/// mode, and stop cleanly in the middle of a turn.
final class ReadLoopTests: XCTestCase {
    /// From a client of its own, sends to `target` in a loop (one datagram, then its reply)
    /// until `stop` is set, at most `limit` datagrams or 20 s; counts the replies in `replies`.
    private func keepBusy(_ target: SocketAddress, stop: StopFlag, limit: Int = 200_000) -> DispatchGroup {
        let done = DispatchGroup()
        done.enter()
        DispatchQueue.global().async {
            defer { done.leave() }
            guard let client = try? UDPClient() else { return }
            let deadline = Date().addingTimeInterval(20)
            var sent = 0
            while !stop.isSet, sent < limit, Date() < deadline {
                client.send(payload(32, seed: UInt64(sent)), to: target)
                if client.receive(timeout: 1) != nil { stop.replied() }
                sent += 1
            }
        }
        return done
    }

    /// A liveness probe is a block on the worker's queue: while a client keeps the worker busy
    /// (its turn would otherwise never end), every probe is still answered within the bound of
    /// a turn (20 ms) plus scheduling slack, far inside the watchdog's.
    func testLivenessProbesAnsweredWhileTrafficFlows() throws {
        let config = try ConfigLoader.parse("[listener t]\nlisten = 127.0.0.1:0\n", file: "t.ini")
        let datapath = try Datapath(configuration: config, logger: Logger(label: "test"))
        datapath.startBlocking()
        defer { datapath.stopBlocking() }
        let listener = try XCTUnwrap(datapath.listener(named: "t"))
        let client = try UDPClient()
        client.send(payload(32, seed: 0), to: listener.boundAddresses[0])
        XCTAssertNotNil(client.receive(timeout: 5), "no echo")
        let stop = StopFlag()
        let busy = keepBusy(listener.boundAddresses[0], stop: stop)
        defer {
            stop.set()
            busy.wait()
        }
        // The loop is running before the probes start.
        let started = Date().addingTimeInterval(5)
        while stop.replies < 10 && Date() < started { usleep(1000) }
        XCTAssertGreaterThanOrEqual(stop.replies, 10, "no traffic")
        var slowest = 0.0
        for _ in 0..<20 {
            let answered = DispatchSemaphore(value: 0)
            let t0 = Date()
            listener.workers[0].ping { answered.signal() }
            XCTAssertEqual(answered.wait(timeout: .now() + 5), .success, "probe not answered while traffic flows")
            slowest = max(slowest, Date().timeIntervalSince(t0))
        }
        let before = stop.replies
        let deadline = Date().addingTimeInterval(5)
        while stop.replies == before && Date() < deadline { usleep(1000) }
        XCTAssertGreaterThan(stop.replies, before, "traffic stopped: the probes proved nothing")
        XCTAssertLessThan(slowest, 0.5, "a probe waited \(slowest) s behind a turn")
    }

    /// Stopping while a turn holds the thread: stop waits for the turn, serves what is still
    /// queued on the socket, closes it, and returns in bounded time.
    func testStopEndsATurnAndClosesTheSocket() throws {
        let config = try ConfigLoader.parse("[listener t]\nlisten = 127.0.0.1:0\n", file: "t.ini")
        let datapath = try Datapath(configuration: config, logger: Logger(label: "test"))
        datapath.startBlocking()
        let listener = try XCTUnwrap(datapath.listener(named: "t"))
        let address = listener.boundAddresses[0]
        let client = try UDPClient()
        client.send(payload(32, seed: 0), to: address)
        XCTAssertNotNil(client.receive(timeout: 5), "no echo")
        let stop = StopFlag()
        let busy = keepBusy(address, stop: stop)
        let started = Date().addingTimeInterval(5)
        while stop.replies < 10 && Date() < started { usleep(1000) }
        XCTAssertGreaterThanOrEqual(stop.replies, 10, "no traffic")
        let t0 = Date()
        datapath.stopBlocking()
        let took = Date().timeIntervalSince(t0)
        stop.set()
        busy.wait()
        XCTAssertLessThan(took, 2, "stop took \(took) s")
        // The port is free again: the socket was closed, not left to a thread still waiting.
        XCTAssertNoThrow(try UDPClient(bind: address))
    }

    /// Relay: replies reach the client through the wait set both when they wake the worker
    /// (session socket ready outside a turn) and during a turn, and many round trips in a row
    /// all come back.
    func testForwardRoundTripsThroughTheWaitSet() throws {
        let upstream = try UpstreamServer()
        let config = try ConfigLoader.parse(
            """
            [listener f]
            listen = 127.0.0.1:0
            mode = forward
            upstream = \(upstream.address)
            """, file: "t.ini")
        let datapath = try Datapath(configuration: config, logger: Logger(label: "test"))
        datapath.startBlocking()
        defer { datapath.stopBlocking() }
        let listener = try XCTUnwrap(datapath.listener(named: "f"))
        let client = try UDPClient()
        for i in 0..<300 {
            let p = payload(48, seed: UInt64(i))
            client.send(p, to: listener.boundAddresses[0])
            XCTAssertEqual(client.receive(timeout: 5)?.bytes, p, "round trip \(i)")
            // Now and then a pause longer than a turn's idle hold, so the next datagram comes
            // in through the Dispatch source again.
            if i % 100 == 99 { usleep(30_000) }
        }
    }

    /// Turns that end neither by time nor by a pause in the traffic within any test: only the
    /// doorbell and the in-turn expiry can make the queue's other work happen once one began.
    private var longTurns: DatapathTuning {
        var t = DatapathTuning()
        t.turnLimit = 60_000_000_000
        t.idleHold = 60_000_000_000
        return t
    }

    /// Work queued on a worker rings its doorbell: a probe, a `/sessions` snapshot and stop
    /// are served after the current batch, not when the turn ends, even with a turn limit of
    /// a minute and a client that never lets the turn go idle.
    func testQueuedWorkRingsTheDoorbellDuringATurn() async throws {
        let upstream = try UpstreamServer()
        let config = try ConfigLoader.parse(
            "[listener f]\nlisten = 127.0.0.1:0\nmode = forward\nupstream = \(upstream.address)\n", file: "t.ini")
        let datapath = try Datapath(configuration: config, logger: Logger(label: "test"), tuning: longTurns)
        datapath.startBlocking()
        let listener = try XCTUnwrap(datapath.listener(named: "f"))
        let address = listener.boundAddresses[0]
        let stop = StopFlag()
        let busy = keepBusy(address, stop: stop)
        defer {
            stop.set()
            busy.wait()
        }
        let started = Date().addingTimeInterval(5)
        while stop.replies < 10 && Date() < started { usleep(1000) }
        XCTAssertGreaterThanOrEqual(stop.replies, 10, "no traffic")
        var slowest = 0.0
        for _ in 0..<10 {
            let answered = DispatchSemaphore(value: 0)
            let t0 = Date()
            listener.workers[0].ping { answered.signal() }
            XCTAssertEqual(answered.wait(timeout: .now() + 5), .success, "probe not answered during a turn")
            slowest = max(slowest, Date().timeIntervalSince(t0))
        }
        XCTAssertLessThan(slowest, 0.5, "a probe waited \(slowest) s for the turn")
        // The snapshot gives up on a queue that does not answer within 200 ms.
        let found = await datapath.liveSessions(limit: 10)
        XCTAssertEqual(found.unanswered, [], "the snapshot waited for the turn")
        XCTAssertEqual(found.sessions.count, 1, "the busy client's session")
        let t1 = Date()
        datapath.stopBlocking()
        XCTAssertLessThan(Date().timeIntervalSince(t1), 2, "stop waited for the turn")
    }

    /// A relay's idle sessions expire on time while another client keeps the worker's turn
    /// going (the turn runs the expiry when it is due).
    func testSessionsExpireDuringALongTurn() throws {
        let upstream = try UpstreamServer()
        let config = try ConfigLoader.parse(
            "[listener f]\nlisten = 127.0.0.1:0\nmode = forward\nupstream = \(upstream.address)\nsession_timeout = 200ms\n",
            file: "t.ini")
        let datapath = try Datapath(configuration: config, logger: Logger(label: "test"), tuning: longTurns)
        datapath.startBlocking()
        defer { datapath.stopBlocking() }
        let listener = try XCTUnwrap(datapath.listener(named: "f"))
        let address = listener.boundAddresses[0]
        let stop = StopFlag()
        let busy = keepBusy(address, stop: stop)
        defer {
            stop.set()
            busy.wait()
        }
        let started = Date().addingTimeInterval(5)
        while stop.replies < 10 && Date() < started { usleep(1000) }
        XCTAssertGreaterThanOrEqual(stop.replies, 10, "no traffic")
        let quiet = try UDPClient()
        quiet.send([1], to: address)
        XCTAssertNotNil(quiet.receive(timeout: 5), "no reply for the quiet client")
        let t0 = Date()
        XCTAssertTrue(waitUntil(5) { listener.counters()[.sessionsExpired] >= 1 }, "the quiet client's session never expired")
        XCTAssertLessThan(Date().timeIntervalSince(t0), 1.5, "expired late")
        XCTAssertGreaterThan(stop.replies, 10)
    }
}

/// Ends a background load loop and counts its replies.
final class StopFlag: Sendable {
    private let stopped = Atomic<Bool>(false)
    private let replyCount = Atomic<Int>(0)
    var isSet: Bool { stopped.load(ordering: .relaxed) }
    func set() { stopped.store(true, ordering: .relaxed) }
    var replies: Int { replyCount.load(ordering: .relaxed) }
    func replied() { replyCount.add(1, ordering: .relaxed) }
}
