import UDPRelayConfig
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// `SystemClock`, the one reading of time every module uses.
final class ClockTests: XCTestCase {
    func testWallClockIsTheTimeOfDay() {
        let before = time(nil)
        let wall = SystemClock.wallSeconds()
        let parts = SystemClock.wallTime()
        let after = time(nil)
        XCTAssertGreaterThanOrEqual(wall, Double(before))
        XCTAssertLessThan(wall, Double(after + 1))
        XCTAssertTrue((before...after).contains(parts.seconds), "\(parts.seconds) not in \(before)...\(after)")
        XCTAssertTrue((0..<1_000_000_000).contains(parts.nanoseconds))
    }

    func testMonotonicClocksAgreeAndNeverGoBack() {
        var last = SystemClock.monotonicNanos()
        for _ in 0..<1000 {
            let now = SystemClock.monotonicNanos()
            XCTAssertGreaterThanOrEqual(now, last)
            last = now
        }
        // The coarse clock lags the precise one by at most a tick (a few ms; 50 ms is generous).
        let coarse = SystemClock.coarseMonotonicNanos()
        let precise = SystemClock.monotonicNanos()
        XCTAssertLessThanOrEqual(coarse, precise)
        XCTAssertLessThan(precise - coarse, 50_000_000)
        let seconds = SystemClock.monotonicSeconds()
        XCTAssertEqual(seconds, Double(SystemClock.monotonicNanos()) / 1e9, accuracy: 0.05)
        // Monotonic time is not the time of day.
        XCTAssertGreaterThan(abs(seconds - SystemClock.wallSeconds()), 1_000_000)
    }
}
