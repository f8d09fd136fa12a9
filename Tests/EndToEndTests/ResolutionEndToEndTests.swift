import Foundation
import TestSupport
import UDPRelayConfig
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// Hostnames that never resolve hold neither READY nor a reload longer than the documented
/// bound (2 s; before, getaddrinfo ran in line, one name after another). The daemon
/// runs in network and mount namespaces the test makes, where /etc/resolv.conf names a DNS
/// server on loopback that never answers: the machine's own resolver is never asked.
final class ResolutionEndToEndTests: XCTestCase {
    func testUnansweredNamesHoldReadyAndReloadAtMostTheBound() throws {
        guard getuid() == 0 else { throw XCTSkip("needs root for network and mount namespaces (CI runs as root)") }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("udprelayd-resolv-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let resolvConf = dir.appendingPathComponent("resolv.conf").path
        // One try of 3 s per name: 9 names one after another took 27 s before READY.
        try "nameserver 127.0.0.1\noptions timeout:3 attempts:1\n".write(toFile: resolvConf, atomically: true, encoding: .utf8)
        final class Outcome: @unchecked Sendable {
            // @unchecked: written by the namespace thread before `done` is signalled, read after.
            var skipReason: String?
            var error: Error?
            var readyAfter: Double?
            var reloadAfter: Double?
            var reply: [UInt8]?
            var log: [String] = []
        }
        let outcome = Outcome()
        let done = DispatchSemaphore(value: 0)
        let thread = Thread {
            defer { done.signal() }
            guard Namespaces.unshare(Namespaces.newNetwork | Namespaces.newMount) else {
                outcome.skipReason = "unshare: errno \(errno)"
                return
            }
            guard Namespaces.bringLoopbackUp() else {
                outcome.skipReason = "lo up: errno \(errno)"
                return
            }
            // Private mounts, so the bind mount below stays in this namespace.
            let msBind: UInt = 4096, msRec: UInt = 16384, msPrivate: UInt = 1 << 18
            guard mount(nil, "/", nil, msRec | msPrivate, nil) == 0,
                mount(resolvConf, "/etc/resolv.conf", nil, msBind, nil) == 0
            else {
                outcome.skipReason = "cannot bind-mount /etc/resolv.conf: errno \(errno)"
                return
            }
            do {
                // The DNS server: bound, never reads, never answers.
                let silentDNS = try UDPClient(bind: SocketAddress(ip: .v4(0x7F00_0001), port: 53))
                defer { _ = silentDNS }
                let hanging = (0..<8).map { "hang-\($0).test:53" }.joined(separator: ", ")
                let config = { (extra: String) in
                    """
                    [status]
                    listen = off
                    [listener up]
                    listen = 127.0.0.1:20001
                    [listener lb]
                    listen = 127.0.0.1:20000
                    mode = balance
                    upstream = \(hanging), 127.0.0.1:20001
                    [listener fwd]
                    listen = 127.0.0.1:20002
                    mode = forward
                    upstream = \(extra)
                    """
                }
                let started = Date()
                let d = try DaemonProcess(config: config("hang-a.test:53"))
                defer { d.stop() }
                _ = try d.waitUntilReady(timeout: 60)
                outcome.readyAfter = Date().timeIntervalSince(started)
                // The literal upstream serves at once; the unresolved ones take no traffic.
                let client = try UDPClient(bind: SocketAddress(ip: .v4(0x7F00_0001), port: 30000))
                client.send(Array("hi".utf8), to: SocketAddress(ip: .v4(0x7F00_0001), port: 20000))
                outcome.reply = client.receive()?.bytes
                // A reload that rebuilds a listener with a new name that hangs too.
                try config("hang-b.test:53").write(toFile: d.configPath, atomically: true, encoding: .utf8)
                let mark = d.log.count
                let signalled = Date()
                d.signal(SIGHUP)
                if d.waitForLine(containing: "reloaded", after: mark, timeout: 60) != nil {
                    outcome.reloadAfter = Date().timeIntervalSince(signalled)
                }
                d.stop()
                outcome.log = d.log
            } catch {
                outcome.error = error
            }
        }
        thread.start()
        XCTAssertEqual(done.wait(timeout: .now() + 180), .success)
        if let reason = outcome.skipReason { throw XCTSkip(reason) }
        if let error = outcome.error { throw error }
        let log = outcome.log.joined(separator: "\n")
        // The bound is 2 s (UpstreamTable.resolveWait); the rest is process start-up.
        XCTAssertLessThan(try XCTUnwrap(outcome.readyAfter), 5, "READY within the bound, not 9 names x 3 s: \(log)")
        XCTAssertLessThan(try XCTUnwrap(outcome.reloadAfter, log), 4, "the reload within the bound: \(log)")
        XCTAssertEqual(outcome.reply, Array("hi".utf8), "the upstream that resolved serves")
        XCTAssertEqual(outcome.log.filter { $0.contains("not resolved in time") }.count, 10, log)
    }
}
