import Foundation
import Logging
import TestSupport
import UDPRelayConfig
import XCTest

@testable import UDPRelayDatapath

#if canImport(Glibc)
import Glibc
#endif

/// The upstream state the datapath reads without a lock has one owner: a mark-down decided
/// later is never replaced by one decided earlier, whichever worker queue stores last.
final class UpstreamFlagsTests: XCTestCase {
    /// Two writers, the older mark-down stored after the newer one: the newer stays. (Before,
    /// `recordFailure` stored its time with a plain store after releasing the lock, so the
    /// older time won and the upstream took sessions again while its health said down.)
    func testAnOlderMarkDownStoredAfterANewerOneLeavesTheNewer() {
        let flags = UpstreamFlags(count: 2)
        flags.extendDownUntil(0, to: 2_000)
        flags.extendDownUntil(0, to: 1_000)
        XCTAssertEqual(flags.downUntil[0], 2_000)
        XCTAssertTrue(flags.isDown(0, now: 1_500), "still down between the older and the newer end")
        XCTAssertFalse(flags.isUp(0, now: 1_500))
        XCTAssertEqual(flags.downUntil[1], 0, "the other upstream is untouched")
    }

    /// Workers on two threads record failures at times that interleave: the time the datapath
    /// reads is the one the health state machine holds, after every mix of orders.
    func testConcurrentFailuresLeaveTheReadTimeEqualToTheHealthState() throws {
        let lc = ListenerConfiguration(
            name: "r", listen: [SocketAddress(ip: .v4(0x7F00_0001), port: 0)], mode: .forward,
            upstreams: [try UpstreamEndpoint(parsing: "127.0.0.1:9")],
            health: HealthSettings(maxFails: 1, failTimeout: .nanoseconds(10)))
        let table = UpstreamTable(configuration: lc, workers: 2, logger: Logger(label: "test") { _ in SwiftLogNoOpLogHandler() })
        defer {
            let done = DispatchGroup()
            table.stop(done: done)
            done.wait()
        }
        let writersDone = [Flag(), Flag()], wentBack = LockedBox<(UInt64, UInt64)?>(nil)
        DispatchQueue.concurrentPerform(iterations: 3) { thread in
            guard thread < 2 else {
                // A reader on the datapath: the end of the mark-down it sees never moves back.
                var last: UInt64 = 0
                for _ in 0..<10_000_000 where !writersDone.allSatisfy(\.value) {
                    let seen = table.flags.downUntil[0]
                    if seen < last, wentBack.value == nil { wentBack.value = (last, seen) }
                    last = max(last, seen)
                }
                return
            }
            // Each worker's clock runs on its own: the times of the two interleave, as `now`
            // read by two queues at different moments does.
            for k in 0..<20_000 {
                table.recordFailure(0, now: UInt64(k * 20 + thread * 15), errno: ECONNREFUSED)
            }
            writersDone[thread].value = true
        }
        XCTAssertNil(wentBack.value, "the down-until time the datapath reads went back")
        let health = table.lock.withLockedValue { $0.health[0].downUntil }
        XCTAssertEqual(table.flags.downUntil[0], health)
    }

    /// Two workers' failures reach the health state in the reverse order of their clocks (each
    /// read its clock before it took the table's lock): with max_fails = 2 they still mark the
    /// upstream down. (Before, the older failure looked like one a whole window after the newer,
    /// restarted the count, and the upstream kept taking sessions.)
    func testFailuresRecordedOutOfClockOrderStillMarkTheUpstreamDown() throws {
        let lc = ListenerConfiguration(
            name: "r", listen: [SocketAddress(ip: .v4(0x7F00_0001), port: 0)], mode: .forward,
            upstreams: [try UpstreamEndpoint(parsing: "127.0.0.1:9")],
            health: HealthSettings(maxFails: 2, failTimeout: .seconds(10)))
        let table = UpstreamTable(configuration: lc, workers: 2, logger: Logger(label: "test") { _ in SwiftLogNoOpLogHandler() })
        defer {
            let done = DispatchGroup()
            table.stop(done: done)
            done.wait()
        }
        let t = SystemClock.monotonicNanos()
        table.recordFailure(0, now: t + 20_000, errno: ECONNREFUSED)  // the later clock took the lock first
        XCTAssertFalse(table.isDown(0, now: t + 30_000), "one failure of two")
        table.recordFailure(0, now: t, errno: ECONNREFUSED)
        XCTAssertTrue(table.isDown(0, now: t + 30_000), "two failures within fail_timeout mark it down")
        XCTAssertFalse(table.isUp(0, now: t + 30_000))

        var health = HealthState(maxFails: 2, failTimeout: 1_000)
        XCTAssertFalse(health.recordFailure(now: 5_000))
        XCTAssertTrue(health.recordFailure(now: 4_990), "an older failure counts inside the window")
        XCTAssertEqual(health.downUntil, 5_990)
    }
}
