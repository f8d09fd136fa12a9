import Foundation
import TestSupport
import UDPRelayConfig
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// An upstream that echoes every datagram `delay` seconds after it arrived, as a slow DNS
/// server would: replies are still on their way after the relay has closed the session.
final class DelayedEchoServer: @unchecked Sendable {
    // @unchecked: `stopped` is guarded by `lock`; the rest is immutable or thread-confined.
    let address: SocketAddress
    private let client: UDPClient
    private let lock = NSLock()
    private var stopped = false
    private let finished = DispatchSemaphore(value: 0)

    init(bind: SocketAddress = SocketAddress(ip: .v4(0x7F00_0001), port: 0), delay: Double) throws {
        client = try UDPClient(bind: bind)
        address = client.localAddress
        let fd = client.fd
        Thread.detachNewThread { [self] in
            var due: [(at: Date, bytes: [UInt8], to: SocketAddress)] = []
            while !isStopped {
                let wait = due.first.map { max(0, $0.at.timeIntervalSinceNow) } ?? 0.05
                var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                if poll(&pfd, 1, Int32(min(wait, 0.05) * 1000)) > 0 {
                    while let d = client.receive(timeout: 0) { due.append((Date().addingTimeInterval(delay), d.bytes, d.from)) }
                }
                while let first = due.first, first.at <= Date() {
                    client.send(first.bytes, to: first.to)
                    due.removeFirst()
                }
            }
            finished.signal()
        }
    }

    private var isStopped: Bool {
        lock.lock()
        defer { lock.unlock() }
        return stopped
    }

    func stop() {
        lock.lock()
        let was = stopped
        stopped = true
        lock.unlock()
        if !was { finished.wait() }
    }

    deinit { stop() }
}

/// A reply reaches only the client whose datagram caused it, even when a relay runs short of
/// local ports or of room for held sockets while replies to closed sessions are on their way
/// (before, held sockets were closed early and their ports given to new
/// sessions, which then received the earlier clients' replies). Each test runs in a network
/// namespace of its own with a narrow ephemeral port range, so ports are reused at once.
final class MisdeliveryEndToEndTests: XCTestCase {
    struct Outcome {
        var served = 0
        var misdelivered: [String] = []
        var log: [String] = []
        var exitCode: Int32?
    }

    /// `clients` clients (fixed ports outside the range) each send one datagram per round to a
    /// forward relay whose upstream answers after 300 ms; every reply is checked against the
    /// client that got it.
    func run(portRange: String, maxSessions: Int, clients count: Int, rounds: Int) throws -> Outcome {
        final class Box: @unchecked Sendable {
            // @unchecked: written by the namespace thread, read after it finished.
            var outcome = Outcome()
        }
        let box = Box()
        let loopback: UInt32 = 0x7F00_0001
        try PortExhaustionEndToEndTests.inNetworkNamespace(portRange: portRange) {
            let upstream = try DelayedEchoServer(bind: SocketAddress(ip: .v4(loopback), port: 20001), delay: 0.3)
            defer { upstream.stop() }
            let d = try DaemonProcess(
                config: """
                    [status]
                    listen = off
                    [listener fwd]
                    listen = 127.0.0.1:20000
                    mode = forward
                    upstream = 127.0.0.1:20001
                    max_sessions = \(maxSessions)
                    """)
            _ = try d.waitUntilReady()
            let relay = SocketAddress(ip: .v4(loopback), port: 20000)
            let clients = try (0..<count).map { try UDPClient(bind: SocketAddress(ip: .v4(loopback), port: UInt16(30000 + $0))) }
            for round in 0..<rounds {
                for (k, c) in clients.enumerated() { c.send(Array("\(k) \(round)".utf8), to: relay) }
                // Replies come 300 ms later; collect until none has come for a second.
                var fds = clients.map { pollfd(fd: $0.fd, events: Int16(POLLIN), revents: 0) }
                while poll(&fds, nfds_t(fds.count), 1000) > 0 {
                    for k in fds.indices where fds[k].revents != 0 {
                        fds[k].revents = 0
                        while let reply = clients[k].receive(timeout: 0) {
                            let text = String(decoding: reply.bytes, as: UTF8.self)
                            if text.split(separator: " ").first.map(String.init) == "\(k)" {
                                box.outcome.served += 1
                            } else {
                                box.outcome.misdelivered.append("client \(k) got '\(text)'")
                            }
                        }
                    }
                }
            }
            box.outcome.exitCode = d.stop()
            box.outcome.log = d.log
        }
        return box.outcome
    }

    func check(_ o: Outcome, hint: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let log = o.log.joined(separator: "\n")
        XCTAssertEqual(
            o.misdelivered.count, 0,
            "no client gets another client's reply (of \(o.served + o.misdelivered.count)): "
                + o.misdelivered.prefix(8).joined(separator: ", "), file: file, line: line)
        XCTAssertGreaterThan(o.served, 0, "clients with a session get their replies", file: file, line: line)
        XCTAssertEqual(o.exitCode, 0, file: file, line: line)
        let totals = try XCTUnwrap(
            o.log.first { $0.contains(" totals ") && DaemonProcess.field("listener.name", in: $0) == "fwd" },
            log, file: file, line: line)
        let refused = Int(DaemonProcess.field("drop.no_session", in: totals) ?? "") ?? 0
        XCTAssertGreaterThan(
            refused, 0, "new clients were refused rather than given a port still in use: \(totals)",
            file: file, line: line)
        XCTAssertEqual(DaemonProcess.field("session_errors", in: totals), "\(refused)", totals, file: file, line: line)
        let warnings = o.log.filter { $0.contains("cannot open session sockets") }
        XCTAssertFalse(warnings.isEmpty, log, file: file, line: line)
        XCTAssertTrue(warnings.allSatisfy { $0.contains(hint) }, "\(warnings)", file: file, line: line)
    }

    /// 32 local ports for 200 clients and 16 sessions: ports run out while held sockets wait
    /// for late replies (measured before the fix: 65 of 81 replies to the wrong client).
    func testNoMisdeliveredReplyWhenLocalPortsRunOut() throws {
        let o = try run(portRange: "40000 40031", maxSessions: 16, clients: 200, rounds: 5)
        try check(o, hint: "ip_local_port_range")
    }

    /// Ports to spare but more sessions closed within the hold than there is room to hold
    /// (16 live + 256 held): before the fix the oldest held socket was closed early.
    func testNoMisdeliveredReplyWhenHeldSocketsFillTheirRoom() throws {
        let o = try run(portRange: "40000 40299", maxSessions: 16, clients: 400, rounds: 3)
        try check(o, hint: "each keeps its socket")
    }
}
