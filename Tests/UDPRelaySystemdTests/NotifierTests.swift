import Foundation
import Logging
import TestSupport
import XCTest

@testable import UDPRelaySystemd

#if canImport(Glibc)
import Glibc
#endif

final class NotifierTests: XCTestCase {
    override func tearDown() {
        unsetenv("NOTIFY_SOCKET")
    }

    func testMessagesReachTheNotifySocket() throws {
        let sock = try NotifySocket()
        setenv("NOTIFY_SOCKET", sock.path, 1)
        let n = SystemdNotifier(logger: Logger(label: "test"))
        XCTAssertTrue(n.isEnabled)
        XCTAssertTrue(n.ready(status: "2 listeners\nsecond line"))
        XCTAssertEqual(sock.receive(), "READY=1\nSTATUS=2 listeners second line")
        XCTAssertTrue(n.reloading())
        let reloading = try XCTUnwrap(sock.receive())
        XCTAssertTrue(reloading.hasPrefix("RELOADING=1\nMONOTONIC_USEC="), reloading)
        let usec = UInt64(reloading.split(separator: "=").last!)!
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        let now = UInt64(ts.tv_sec) * 1_000_000 + UInt64(ts.tv_nsec) / 1000
        XCTAssertTrue(usec <= now && now - usec < 5_000_000, "MONOTONIC_USEC is CLOCK_MONOTONIC in µs")
        XCTAssertTrue(n.stopping())
        XCTAssertEqual(sock.receive(), "STOPPING=1")
        XCTAssertTrue(n.watchdog())
        XCTAssertEqual(sock.receive(), "WATCHDOG=1")
    }

    func testWithoutNotifySocketEverythingIsANoOp() {
        unsetenv("NOTIFY_SOCKET")
        let n = SystemdNotifier(logger: Logger(label: "test"))
        XCTAssertFalse(n.isEnabled)
        XCTAssertFalse(n.ready())
        XCTAssertFalse(n.status("x"))
    }

    func testAFailedSendIsReportedNotFatal() {
        setenv("NOTIFY_SOCKET", "/nonexistent/notify", 1)
        let n = SystemdNotifier(logger: Logger(label: "test"))
        XCTAssertFalse(n.ready())
        XCTAssertFalse(n.watchdog())
    }
}
