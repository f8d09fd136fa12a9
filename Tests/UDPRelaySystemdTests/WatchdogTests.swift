import Foundation
import Logging
import TestSupport
import XCTest

@testable import UDPRelaySystemd

#if canImport(Glibc)
import Glibc
#endif

final class WatchdogTests: XCTestCase {
    override func tearDown() {
        unsetenv("NOTIFY_SOCKET")
        unsetenv("WATCHDOG_USEC")
        unsetenv("WATCHDOG_PID")
    }

    func testIntervalComesFromTheEnvironment() {
        unsetenv("WATCHDOG_USEC")
        XCTAssertNil(WatchdogService.configuredInterval())
        setenv("WATCHDOG_USEC", "4000000", 1)
        setenv("WATCHDOG_PID", "\(getpid())", 1)
        XCTAssertEqual(WatchdogService.configuredInterval(), .seconds(4))
        setenv("WATCHDOG_PID", "1", 1)
        XCTAssertNil(WatchdogService.configuredInterval(), "a watchdog meant for another process is not ours")
        let w = WatchdogService(interval: .seconds(10), notifier: SystemdNotifier(logger: Logger(label: "t")), logger: Logger(label: "t")) { _ in [] }
        XCTAssertEqual(w.period, .seconds(5))
        XCTAssertEqual(w.probeTimeout, .seconds(1))
    }

    /// Pings only while the probe passes: a wedged queue must end in a restart.
    func testPingsOnlyWhileTheProbePasses() async throws {
        let sock = try NotifySocket()
        setenv("NOTIFY_SOCKET", sock.path, 1)
        let healthy = Flag(true)
        // Signalled each time the service runs a probe that fails.
        let failedProbe = DispatchSemaphore(value: 0)
        let w = WatchdogService(
            interval: .milliseconds(200), notifier: SystemdNotifier(logger: Logger(label: "t")),
            logger: Logger(label: "t")
        ) { _ in
            if healthy.value { return [] }
            failedProbe.signal()
            return ["listener 'x' queue did not answer"]
        }
        let task = Task { try await w.run() }
        defer { task.cancel() }
        XCTAssertEqual(sock.receive(timeout: 2), "WATCHDOG=1")
        XCTAssertEqual(sock.receive(timeout: 2), "WATCHDOG=1")
        healthy.value = false
        // A ping whose probe passed just before may still be sent; once the service has run a
        // failing probe, that ping (sent before it, in the same loop) is in the socket.
        XCTAssertEqual(failedProbe.wait(timeout: .now() + 5), .success)
        while sock.receive(timeout: 0) != nil {}
        XCTAssertNil(sock.receive(timeout: 0.6), "no ping while the datapath does not answer")
        healthy.value = true
        XCTAssertEqual(sock.receive(timeout: 2), "WATCHDOG=1", "pings resume when it answers again")
    }
}
