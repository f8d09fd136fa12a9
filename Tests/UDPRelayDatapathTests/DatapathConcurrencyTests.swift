import Foundation
import Logging
import TestSupport
import UDPRelayConfig
import XCTest

@testable import UDPRelayDatapath

/// `start`, `stop`, `apply` and `probe` suspend instead of blocking a Swift-concurrency thread: the
/// cooperative pool has as many threads as cores (two here), so a stop that waited on a
/// DispatchGroup for a busy worker queue held one of them for as long.
final class DatapathConcurrencyTests: XCTestCase, ConfigFileTests {
    func testStopsWaitingForBusyQueuesLeaveTheCooperativePoolFree() async throws {
        // More stops than the pool has threads, each waiting for a worker queue that is busy
        // until `release` is signalled 3 s from now (on a Dispatch queue, not the pool).
        let count = ProcessInfo.processInfo.activeProcessorCount + 1
        let release = DispatchSemaphore(value: 0)
        var stops: [Task<Void, Never>] = []
        for _ in 0..<count {
            let datapath = try Datapath(
                configuration: try configuration("[listener a]\nlisten = 127.0.0.1:0\n"),
                logger: Logger(label: "test"))
            await datapath.start()
            datapath.listener(named: "a")!.workers[0].queue.async { release.wait() }
            stops.append(Task { await datapath.stop() })
        }
        DispatchQueue.global().asyncAfter(deadline: .now() + 3) { for _ in 0..<count { release.signal() } }
        // Work on the pool goes on meanwhile (a blocked pool would run it only after release).
        let started = ContinuousClock.now
        let answer = await Task.detached { 6 * 7 }.value
        let waited = ContinuousClock.now - started
        XCTAssertEqual(answer, 42)
        XCTAssertLessThan(waited, .seconds(1), "a task waited \(waited) for a thread of the cooperative pool")
        for stop in stops { await stop.value }
    }

    func testReloadsWaitingForABusyQueueLeaveTheCooperativePoolFree() async throws {
        // More reloads than the pool has threads: the first waits to drain a worker queue that
        // is busy until `release` is signalled 3 s from now, the others wait for the first.
        let count = ProcessInfo.processInfo.activeProcessorCount + 1
        let datapath = try Datapath(
            configuration: try configuration("[listener a]\nlisten = 127.0.0.1:0\n"),
            logger: Logger(label: "test"))
        await datapath.start()
        let release = DispatchSemaphore(value: 0)
        datapath.listener(named: "a")!.workers[0].queue.async { release.wait() }
        var reloads: [Task<Void, Never>] = []
        for i in 0..<count {
            let next = try configuration("[listener r\(i)]\nlisten = 127.0.0.1:0\n")
            reloads.append(Task { _ = try? await datapath.apply(next) })
        }
        DispatchQueue.global().asyncAfter(deadline: .now() + 3) { release.signal() }
        // Work on the pool goes on meanwhile (a blocked pool would run it only after release).
        let started = ContinuousClock.now
        let answer = await Task.detached { 6 * 7 }.value
        let waited = ContinuousClock.now - started
        XCTAssertEqual(answer, 42)
        XCTAssertLessThan(waited, .seconds(1), "a task waited \(waited) for a thread of the cooperative pool")
        for reload in reloads { await reload.value }
        XCTAssertEqual(datapath.listeners.count, 1)
        await datapath.stop()
    }

    func testProbeReturnsAsSoonAsEveryQueueAnswered() async throws {
        let datapath = try Datapath(
            configuration: try configuration("[listener a]\nlisten = 127.0.0.1:0\nworkers = 2\n"),
            logger: Logger(label: "test"))
        await datapath.start()
        let started = ContinuousClock.now
        let problems = await datapath.probe(timeout: .seconds(10))
        let took = ContinuousClock.now - started
        await datapath.stop()
        XCTAssertEqual(problems, [])
        XCTAssertLessThan(took, .seconds(5), "a probe of healthy queues ends when they answered, not at its timeout")
    }

    /// `stop` no longer holds the reload lock while it waits, so a reload that comes during a
    /// stop waits for the stop's sockets to close instead of closing them a second time.
    func testAReloadDuringAStopWaitsUntilTheStopHasClosedItsSockets() async throws {
        let datapath = try Datapath(
            configuration: try configuration("[listener a]\nlisten = 127.0.0.1:0\n"),
            logger: Logger(label: "test"))
        await datapath.start()
        let release = DispatchSemaphore(value: 0)
        datapath.listener(named: "a")!.workers[0].queue.async { release.wait() }
        let stop = Task { await datapath.stop() }
        XCTAssertTrue(waitUntil(5) { !datapath.running.withLockedValue { $0 } }, "the stop began")
        let released = Flag(), reloadedBeforeRelease = LockedBox<Bool?>(nil)
        let next = try configuration("[listener b]\nlisten = 127.0.0.1:0\n")
        let reload = Task {
            _ = try? await datapath.apply(next)
            reloadedBeforeRelease.value = !released.value
        }
        DispatchQueue.global().asyncAfter(deadline: .now() + 0.5) {
            released.value = true
            release.signal()
        }
        await stop.value
        await reload.value
        XCTAssertEqual(reloadedBeforeRelease.value, false, "the reload ran while the stop was still closing sockets")
    }
}
