import Foundation
import Logging
import XCTest
#if canImport(Glibc)
import Glibc
#endif
import TestSupport
@testable import UDPRelaySystemd

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
        let w = WatchdogService(interval: .milliseconds(200), notifier: SystemdNotifier(logger: Logger(label: "t")),
                                logger: Logger(label: "t")) { _ in
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

final class SocketActivationTests: XCTestCase {
    func testSocketsAreGroupedByListenerName() throws {
        let sockets = [SocketActivation.InheritedSocket(fd: 3, name: "echo"), .init(fd: 4, name: "echo"), .init(fd: 5, name: "small")]
        let byName = try SocketActivation.assign(sockets, toListeners: ["echo", "small", "plain"], configFile: "/etc/u.ini")
        XCTAssertEqual(byName, ["echo": [3, 4], "small": [5]])
    }

    func testAnUnknownNameIsAClearError() {
        let sockets = [SocketActivation.InheritedSocket(fd: 3, name: "udprelayd.socket")]
        XCTAssertThrowsError(try SocketActivation.assign(sockets, toListeners: ["echo", "small"], configFile: "/etc/u.ini")) { error in
            XCTAssertEqual("\(error)", "socket 'udprelayd.socket' passed by systemd (fd 3) matches no [listener udprelayd.socket] in /etc/u.ini (listeners: echo, small); set FileDescriptorName= in the .socket unit to a listener name")
        }
    }

    func testNoSocketsWithoutListenFds() throws {
        unsetenv("LISTEN_FDS")
        XCTAssertEqual(try SocketActivation.takeInheritedSockets(), [])
    }
}

final class JournalTests: XCTestCase {
    func testJournalStreamMatchesTheDescriptor() throws {
        let fd = open("/dev/null", O_WRONLY)
        defer { close(fd) }
        var st = stat()
        XCTAssertEqual(fstat(fd, &st), 0)
        XCTAssertTrue(Journal.matches(journalStream: "\(st.st_dev):\(st.st_ino)", fd: fd))
        XCTAssertFalse(Journal.matches(journalStream: "\(st.st_dev):\(st.st_ino + 1)", fd: fd))
        XCTAssertFalse(Journal.matches(journalStream: "garbage", fd: fd))
    }

    func testPrioritiesAndFieldNames() {
        XCTAssertEqual(Journal.priority(.debug), 7)
        XCTAssertEqual(Journal.priority(.info), 6)
        XCTAssertEqual(Journal.priority(.notice), 5)
        XCTAssertEqual(Journal.priority(.warning), 4)
        XCTAssertEqual(Journal.priority(.error), 3)
        XCTAssertEqual(Journal.priority(.critical), 2)
        XCTAssertEqual(Journal.fieldName("listener.address"), "UDPRELAYD_LISTENER_ADDRESS")
        XCTAssertEqual(Journal.shortFields["listener.name"], "LISTENER")
        XCTAssertEqual(Journal.shortFields["peer.address"], "PEER")
    }
}

final class StatusLineTests: XCTestCase {
    func testRendersListenersRatesGenerationAndReload() {
        let a = StatusLine.Sample(received: 100, sent: 90, dropped: 10, at: 10)
        let b = StatusLine.Sample(received: 400, sent: 390, dropped: 10, at: 12)
        let rates = StatusLine.rates(from: a, to: b)
        XCTAssertEqual(rates.received, 150)
        var line = StatusLine(listeners: 2, sockets: 3, generation: 1)
        XCTAssertEqual(line.render(rates: rates), "2 listeners (3 sockets), 150 pkt/s in, 150 pkt/s out, 0 drops/s; config gen 1")
        line.generation = 2
        line.lastReload = (ok: true, at: "19:40:01Z", firstError: nil, errorCount: 0)
        XCTAssertEqual(line.render(rates: nil), "2 listeners (3 sockets); config gen 2, reloaded 19:40:01Z")
        line.lastReload = (ok: false, at: "19:41:07Z", firstError: "u.ini:4: [listener a] mode: bad", errorCount: 2)
        XCTAssertEqual(line.render(rates: nil), "2 listeners (3 sockets); config gen 2, RELOAD FAILED 19:41:07Z: u.ini:4: [listener a] mode: bad (+1 more)")
    }

    func testSessionsAreShownForRelayListeners() {
        XCTAssertEqual(StatusLine(listeners: 1, sockets: 1, sessions: 3, generation: 1).render(rates: nil),
                       "1 listener (1 socket), 3 sessions; config gen 1")
    }

    func testCountersGoingBackwardsAreNotNegativeRates() {
        let r = StatusLine.rates(from: .init(received: 500, sent: 500, dropped: 0, at: 1), to: .init(received: 20, sent: 20, dropped: 0, at: 2))
        XCTAssertEqual(r.received, 0)
        XCTAssertEqual(StatusLine(listeners: 1, sockets: 1, generation: 1).render(rates: (0.25, 1234.4, 0)),
                       "1 listener (1 socket), 0.2 pkt/s in, 1234 pkt/s out, 0 drops/s; config gen 1")
    }
}

/// A flag shared with a probe closure.
final class Flag: @unchecked Sendable {
    // @unchecked: guarded by `lock`.
    private let lock = NSLock()
    private var v: Bool
    init(_ v: Bool) { self.v = v }
    var value: Bool {
        get { lock.lock(); defer { lock.unlock() }; return v }
        set { lock.lock(); v = newValue; lock.unlock() }
    }
}
