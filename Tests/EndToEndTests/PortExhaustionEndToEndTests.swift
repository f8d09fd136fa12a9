import Foundation
import TestSupport
import UDPRelayConfig
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// A relay that runs out of local ports for session sockets says so once, keeps its existing
/// sessions, and does not blame the upstream. Runs in a network namespace of its own whose
/// ephemeral port range is 8 ports, so the host's range is never touched.
final class PortExhaustionEndToEndTests: XCTestCase {
    /// Runs `body` on a thread of its own in a new network namespace (loopback up, ephemeral
    /// port range `portRange`): the daemon it starts and the sockets it opens live there, and
    /// the host's port range is never touched. Skips where namespaces cannot be made (not root).
    static func inNetworkNamespace(portRange: String, timeout: Double = 120, _ body: @escaping @Sendable () throws -> Void) throws {
        guard getuid() == 0 else { throw XCTSkip("needs root for a network namespace (CI runs as root)") }
        let hostRange = try String(contentsOfFile: "/proc/sys/net/ipv4/ip_local_port_range", encoding: .utf8)
        final class Outcome: @unchecked Sendable {
            // @unchecked: written by the namespace thread before `done` is signalled, read after.
            var skipReason: String?
            var error: Error?
        }
        let outcome = Outcome()
        let done = DispatchSemaphore(value: 0)
        let thread = Thread {
            defer { done.signal() }
            guard Namespaces.unshare(Namespaces.newNetwork) else {
                outcome.skipReason = "cannot create a network namespace: errno \(errno)"
                return
            }
            guard Namespaces.bringLoopbackUp() else {
                outcome.skipReason = "cannot bring lo up: errno \(errno)"
                return
            }
            do {
                try portRange.write(toFile: "/proc/sys/net/ipv4/ip_local_port_range", atomically: false, encoding: .utf8)
            } catch {
                outcome.skipReason = "cannot set the namespace's port range: \(error)"
                return
            }
            do { try body() } catch { outcome.error = error }
        }
        thread.start()
        XCTAssertEqual(done.wait(timeout: .now() + timeout), .success, "the namespace thread finished")
        XCTAssertEqual(
            try String(contentsOfFile: "/proc/sys/net/ipv4/ip_local_port_range", encoding: .utf8), hostRange,
            "the host's port range is untouched")
        if let reason = outcome.skipReason { throw XCTSkip(reason) }
        if let error = outcome.error { throw error }
    }

    func testRunningOutOfLocalPortsIsLoggedOnceAndDoesNotMarkTheUpstreamDown() throws {
        let loopback: UInt32 = 0x7F00_0001
        final class Outcome: @unchecked Sendable {
            // @unchecked: written by the namespace thread, read after it finished.
            var served: [Int] = []
            var servedAgain: [Int] = []
            var servedLate: [Int] = []
            var exitCode: Int32?
            var log: [String] = []
        }
        let outcome = Outcome()
        try Self.inNetworkNamespace(portRange: "40000 40007") {
            // Every fixed port is outside 40000-40007, so all 8 are left for sessions.
            let d = try DaemonProcess(
                config: """
                    [status]
                    listen = off
                    [listener up]
                    listen = 127.0.0.1:20001
                    [listener fwd]
                    listen = 127.0.0.1:20000
                    mode = forward
                    upstream = 127.0.0.1:20001
                    max_sessions = 100
                    """)
            _ = try d.waitUntilReady()
            let relay = SocketAddress(ip: .v4(loopback), port: 20000)
            let clients = try (0..<20).map { try UDPClient(bind: SocketAddress(ip: .v4(loopback), port: UInt16(30000 + $0))) }
            for (i, c) in clients.enumerated() { c.send(Array("hello \(i)".utf8), to: relay) }
            // Collect replies on all clients at once until none has come for a second.
            var fds = clients.map { pollfd(fd: $0.fd, events: Int16(POLLIN), revents: 0) }
            while poll(&fds, nfds_t(fds.count), 1000) > 0 {
                for k in fds.indices where fds[k].revents != 0 {
                    fds[k] = pollfd(fd: -1, events: 0, revents: 0)  // one reply per client
                    if clients[k].receive(timeout: 0)?.bytes == Array("hello \(k)".utf8) { outcome.served.append(k) }
                }
            }
            outcome.served.sort()
            for i in outcome.served {
                clients[i].send(Array("again \(i)".utf8), to: relay)
                if clients[i].receive(timeout: 1)?.bytes == Array("again \(i)".utf8) { outcome.servedAgain.append(i) }
            }
            outcome.exitCode = d.stop()
            outcome.log = d.log
            // A reply that came after the one-second lull above is in its client's socket
            // now that the daemon has exited: that client had a session too.
            outcome.servedLate = clients.indices.filter { k in
                !outcome.served.contains(k) && clients[k].receive(timeout: 0)?.bytes == Array("hello \(k)".utf8)
            }
        }
        // The range has 8 ports; the daemon may hold one or two of them itself.
        XCTAssertTrue((1...8).contains(outcome.served.count), "\(outcome.served.count) clients served")
        XCTAssertEqual(outcome.servedAgain, outcome.served, "existing sessions keep working")
        XCTAssertEqual(outcome.exitCode, 0)
        let log = outcome.log.joined(separator: "\n")
        let warnings = outcome.log.filter { $0.contains("cannot open session sockets") }
        XCTAssertEqual(warnings.count, 1, "logged once: \(log)")
        XCTAssertTrue(warnings.first?.contains("ip_local_port_range") == true, log)
        XCTAssertFalse(log.contains("upstream down"), "running out of local ports is not the upstream's fault")
        let totals = try XCTUnwrap(outcome.log.first { $0.contains(" totals ") && DaemonProcess.field("listener.name", in: $0) == "fwd" })
        let sessions = outcome.served.count + outcome.servedLate.count
        XCTAssertEqual(DaemonProcess.field("sessions_created", in: totals), "\(sessions)", totals)
        XCTAssertEqual(DaemonProcess.field("session_errors", in: totals), "\(20 - sessions)", totals)
        let upstream = try XCTUnwrap(outcome.log.first { $0.contains("upstream totals") && DaemonProcess.field("listener.name", in: $0) == "fwd" })
        XCTAssertEqual(DaemonProcess.field("failures", in: upstream), "0", upstream)
    }
}
