import Foundation
import TestSupport
import UDPRelayConfig
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// The real daemon and the system resolver: a hostname with two addresses is two upstreams,
/// and when one address leaves the answer its sessions continue until they idle out while new
/// clients go elsewhere. The daemon runs in network and mount namespaces the test makes, where
/// /etc/hosts (with `hosts: files` in nsswitch.conf) is the test's own file, rewritten in place
/// to change the answer: the machine's resolver is never asked.
final class HostnameAddressesEndToEndTests: XCTestCase {
    func testAHostnameIsOneUpstreamPerAddressAndARemovedAddressDrains() throws {
        guard getuid() == 0 else { throw XCTSkip("needs root for network and mount namespaces (CI runs as root)") }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("udprelayd-hosts-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let files = [
            ("hosts", "/etc/hosts", "127.0.0.1 localhost\n127.0.0.2 svc.test\n127.0.0.3 svc.test\n"),
            ("nsswitch.conf", "/etc/nsswitch.conf", "hosts: files\n"),
            ("host.conf", "/etc/host.conf", "multi on\n"),
        ]
        for (name, _, text) in files { try text.write(toFile: dir.appendingPathComponent(name).path, atomically: true, encoding: .utf8) }
        final class Outcome: @unchecked Sendable {
            // @unchecked: written by the namespace thread before `done` is signalled, read after.
            var skipReason: String?
            var error: Error?
            var firstReplies: [String] = []
            var leftLine: String?
            var drainedReplies: [String] = []
            var samePorts = false
            var newReplies: [String] = []
            var removedLine: String?
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
            // Private mounts, so the bind mounts below stay in this namespace.
            let msBind: UInt = 4096, msRec: UInt = 16384, msPrivate: UInt = 1 << 18
            guard mount(nil, "/", nil, msRec | msPrivate, nil) == 0 else {
                outcome.skipReason = "cannot make / private: errno \(errno)"
                return
            }
            for (name, target, _) in files {
                guard mount(dir.appendingPathComponent(name).path, target, nil, msBind, nil) == 0 else {
                    outcome.skipReason = "cannot bind-mount \(target): errno \(errno)"
                    return
                }
            }
            do {
                let port: UInt16 = 7000
                let a = try UpstreamServer(bind: SocketAddress(ip: .v4(0x7F00_0001), port: port), reply: { Array("a:".utf8) + $0 })
                let b = try UpstreamServer(bind: SocketAddress(ip: .v4(0x7F00_0002), port: port), reply: { Array("b:".utf8) + $0 })
                let c = try UpstreamServer(bind: SocketAddress(ip: .v4(0x7F00_0003), port: port), reply: { Array("c:".utf8) + $0 })
                defer { _ = (a, b, c) }
                let d = try DaemonProcess(
                    config: """
                        [status]
                        listen = off
                        [listener lb]
                        listen = 127.0.0.1:20000
                        mode = balance
                        upstream = svc.test:\(port), 127.0.0.1:\(port)
                        resolve_interval = 1s
                        session_timeout = 2s
                        """)
                defer { d.stop() }
                _ = try d.waitUntilReady(timeout: 60)
                let relay = SocketAddress(ip: .v4(0x7F00_0001), port: 20000)
                func ask(_ client: UDPClient, _ text: String) -> String {
                    client.send(Array(text.utf8), to: relay)
                    return client.receive().map { String(decoding: $0.bytes, as: UTF8.self) } ?? "(none)"
                }
                // Round-robin over .2, .3 and the literal .1.
                let clients = try (0..<6).map { _ in try UDPClient() }
                outcome.firstReplies = clients.enumerated().map { ask($1, "k\($0)") }
                let onC = clients.indices.filter { outcome.firstReplies[$0].hasPrefix("c:") }
                let portsOnC = Set(c.datagrams.map(\.from.port))

                // .3 leaves the answer: the file is rewritten in place (the bind mount holds its inode).
                let mark = d.log.count
                let hosts = try FileHandle(forWritingTo: dir.appendingPathComponent("hosts"))
                try hosts.truncate(atOffset: 0)
                try hosts.write(contentsOf: Data("127.0.0.1 localhost\n127.0.0.2 svc.test\n".utf8))
                try hosts.close()
                outcome.leftLine = d.waitForLine(containing: "left the answer", after: mark, timeout: 20)
                outcome.drainedReplies = onC.map { ask(clients[$0], "m\($0)") }
                outcome.samePorts = !onC.isEmpty && Set(c.datagrams.map(\.from.port)) == portsOnC
                outcome.newReplies = try (0..<4).map { ask(try UDPClient(), "n\($0)") }
                outcome.removedLine = d.waitForLine(containing: "drained and removed", after: mark, timeout: 30)
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
        XCTAssertEqual(outcome.firstReplies.map { $0.prefix(2) }.sorted(), ["a:", "a:", "b:", "b:", "c:", "c:"], "both addresses of the name serve: \(log)")
        XCTAssertNotNil(outcome.leftLine, log)
        XCTAssertEqual(outcome.drainedReplies.count, 2)
        XCTAssertTrue(outcome.drainedReplies.allSatisfy { $0.hasPrefix("c:m") }, "sessions on the removed address continue: \(outcome.drainedReplies)")
        XCTAssertTrue(outcome.samePorts, "from the same source ports")
        XCTAssertFalse(outcome.newReplies.contains { $0.hasPrefix("c:") }, "no new client on the removed address: \(outcome.newReplies)")
        XCTAssertFalse(outcome.newReplies.contains("(none)"), "\(outcome.newReplies)")
        XCTAssertNotNil(outcome.removedLine, "the address goes once its sessions idled out: \(log)")
    }
}
