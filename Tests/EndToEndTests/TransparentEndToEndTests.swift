import Foundation
import TestSupport
import UDPRelayConfig
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// `transparent = yes` end to end, in three network namespaces the test makes: clients, the
/// relay and the upstream, joined by two veth pairs, with addresses from 198.18.0.0/15 and
/// 2001:db8::/32 only and no route anywhere else. The relay namespace has the policy routing of
/// the README's recipe ("Keeping the client's address"); the upstream's route back to the
/// clients goes through the relay. Sockets are made in their namespace by a thread that enters
/// it (they keep it), and the daemon is started from a thread in the relay's.
final class TransparentEndToEndTests: XCTestCase {
    static let clientV4 = "198.18.1.2", relayClientSideV4 = "198.18.1.1"
    static let relayUpstreamSideV4 = "198.18.2.1", upstreamV4 = "198.18.2.2"
    static let clientV6 = "2001:db8:1::2", relayClientSideV6 = "2001:db8:1::1"
    static let relayUpstreamSideV6 = "2001:db8:2::1", upstreamV6 = "2001:db8:2::2"

    /// The three namespaces, made and joined; `remove()` deletes them (and so the veths).
    struct Topology {
        let client: String, relay: String, upstream: String

        init() throws {
            let tag = "\(getpid())-\(UInt32.random(in: 0...UInt32.max) % 100_000)"
            client = "udprelayd-tc-\(tag)"
            relay = "udprelayd-tr-\(tag)"
            upstream = "udprelayd-tu-\(tag)"
            for ns in [client, relay, upstream] { try Self.ip(["netns", "add", ns]) }
            let (c, r, u) = (client, relay, upstream)
            let t = TransparentEndToEndTests.self
            let commands: [[String]] = [
                ["link", "add", "tc0", "netns", c, "type", "veth", "peer", "name", "tr0", "netns", r],
                ["link", "add", "tr1", "netns", r, "type", "veth", "peer", "name", "tu0", "netns", u],
                ["-n", c, "addr", "add", "\(t.clientV4)/24", "dev", "tc0"],
                ["-n", c, "addr", "add", "\(t.clientV6)/64", "dev", "tc0", "nodad"],
                ["-n", r, "addr", "add", "\(t.relayClientSideV4)/24", "dev", "tr0"],
                ["-n", r, "addr", "add", "\(t.relayClientSideV6)/64", "dev", "tr0", "nodad"],
                ["-n", r, "addr", "add", "\(t.relayUpstreamSideV4)/24", "dev", "tr1"],
                ["-n", r, "addr", "add", "\(t.relayUpstreamSideV6)/64", "dev", "tr1", "nodad"],
                ["-n", u, "addr", "add", "\(t.upstreamV4)/24", "dev", "tu0"],
                ["-n", u, "addr", "add", "\(t.upstreamV6)/64", "dev", "tu0", "nodad"],
                ["-n", c, "link", "set", "lo", "up"], ["-n", c, "link", "set", "tc0", "up"],
                ["-n", r, "link", "set", "lo", "up"], ["-n", r, "link", "set", "tr0", "up"], ["-n", r, "link", "set", "tr1", "up"],
                ["-n", u, "link", "set", "lo", "up"], ["-n", u, "link", "set", "tu0", "up"],
                // The upstream answers the clients through the relay.
                ["-n", u, "route", "add", "198.18.1.0/24", "via", t.relayUpstreamSideV4],
                ["-n", u, "-6", "route", "add", "2001:db8:1::/64", "via", t.relayUpstreamSideV6],
                // The README's recipe: what the upstream sends is delivered on this host, to
                // the session socket bound to the client's address and port.
                ["-n", r, "rule", "add", "from", t.upstreamV4, "lookup", "100"],
                ["-n", r, "route", "add", "local", "0.0.0.0/0", "dev", "lo", "table", "100"],
                ["-n", r, "-6", "rule", "add", "from", t.upstreamV6, "lookup", "100"],
                ["-n", r, "-6", "route", "add", "local", "::/0", "dev", "lo", "table", "100"],
            ]
            do {
                for command in commands { try Self.ip(command) }
            } catch {
                remove()
                throw error
            }
        }

        func remove() {
            for ns in [client, relay, upstream] { try? Self.ip(["netns", "del", ns]) }
        }

        /// Runs `ip ARGS`; throws with its stderr when it fails.
        static func ip(_ arguments: [String]) throws {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
            p.arguments = arguments
            let err = Pipe()
            p.standardError = err
            p.standardOutput = FileHandle.nullDevice
            try p.run()
            p.waitUntilExit()
            guard p.terminationStatus == 0 else {
                let text = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
                throw TopologyError(text: "ip \(arguments.joined(separator: " ")): \(text)")
            }
        }
    }

    struct TopologyError: Error, CustomStringConvertible {
        let text: String
        var description: String { text }
    }

    /// Runs `body` on a thread of its own (entering namespaces changes only that thread), within
    /// `timeout` seconds.
    static func onOwnThread(timeout: Double = 120, _ body: @escaping @Sendable () throws -> Void) throws {
        final class Outcome: @unchecked Sendable {
            // @unchecked: written by the thread before `done` is signalled, read after.
            var error: Error?
        }
        let outcome = Outcome()
        let done = DispatchSemaphore(value: 0)
        let thread = Thread {
            defer { done.signal() }
            do { try body() } catch { outcome.error = error }
        }
        thread.start()
        guard done.wait(timeout: .now() + timeout) == .success else {
            XCTFail("the namespace thread did not finish in \(timeout) s")
            return
        }
        if let error = outcome.error { throw error }
    }

    static func enter(_ name: String) throws {
        guard Namespaces.enter(named: name) else { throw TopologyError(text: "setns into \(name): errno \(errno)") }
    }

    static func config(_ listeners: String) -> String {
        "[status]\nlisten = off\n" + listeners
    }

    /// Clients over IPv4 and IPv6 through two transparent listeners: the upstream records each
    /// client's exact address and port, every reply reaches its client, and 1,000 datagrams
    /// from 50 clients (20 each, in rounds of one per client) lose none.
    func testUpstreamSeesEachClientsAddressAndPortAndRepliesComeBack() throws {
        guard getuid() == 0 else { throw XCTSkip("needs root to make network namespaces and to bind clients' addresses (CI runs as root)") }
        let topology = try Topology()
        defer { topology.remove() }
        try Self.onOwnThread {
            try Self.enter(topology.upstream)
            let up4 = try UpstreamServer(bind: SocketAddress(parsing: "\(Self.upstreamV4):0"))
            let up6 = try UpstreamServer(bind: SocketAddress(parsing: "[\(Self.upstreamV6)]:0"))
            defer {
                up4.stop()
                up6.stop()
            }
            try Self.enter(topology.client)
            let clients4 = try (0..<25).map { _ in try UDPClient(bind: SocketAddress(parsing: "\(Self.clientV4):0")) }
            let clients6 = try (0..<25).map { _ in try UDPClient(bind: SocketAddress(parsing: "[\(Self.clientV6)]:0")) }
            try Self.enter(topology.relay)
            let d = try DaemonProcess(
                config: Self.config(
                    """
                    [listener t4]
                    listen = \(Self.relayClientSideV4):0
                    mode = forward
                    upstream = \(up4.address)
                    transparent = yes
                    [listener t6]
                    listen = [\(Self.relayClientSideV6)]:0
                    mode = forward
                    upstream = \(up6.address)
                    transparent = yes
                    """))
            defer { d.stop() }
            let bound = try d.waitUntilReady()
            let relay4 = try XCTUnwrap(bound["t4"]?.first)
            let relay6 = try XCTUnwrap(bound["t6"]?.first)

            let clients = clients4.map { ($0, relay4) } + clients6.map { ($0, relay6) }
            var replies = 0
            var wrong: [String] = []
            let deadline = Date().addingTimeInterval(60)
            for round in 0..<20 where Date() < deadline {
                for (i, (client, relay)) in clients.enumerated() { client.send(Array("c\(i) r\(round)".utf8), to: relay) }
                for (i, (client, relay)) in clients.enumerated() {
                    guard let reply = client.receive(timeout: 5) else { continue }
                    replies += 1
                    if reply.bytes != Array("c\(i) r\(round)".utf8) || reply.from != relay {
                        wrong.append("client \(i): \(String(decoding: reply.bytes, as: UTF8.self)) from \(reply.from)")
                    }
                }
            }
            XCTAssertEqual(replies, 1000, "every reply reached its client")
            XCTAssertEqual(wrong, [], "each reply came to the client that asked, from the address it sent to")
            XCTAssertEqual(up4.waitForCount(500, timeout: 5) + up6.waitForCount(500, timeout: 5), 1000, "the upstreams got every datagram")
            XCTAssertEqual(up4.sources, Set(clients4.map(\.localAddress)), "the IPv4 upstream saw each client's own address and port")
            XCTAssertEqual(up6.sources, Set(clients6.map(\.localAddress)), "the IPv6 upstream saw each client's own address and port")
            XCTAssertEqual(d.stop(), 0)
            let totals = d.log.filter { $0.contains(" totals ") && DaemonProcess.field("listener.name", in: $0)?.hasPrefix("t") == true }
            XCTAssertEqual(totals.compactMap { DaemonProcess.field("session_errors", in: $0) }, ["0", "0"], totals.joined(separator: "\n"))
        }
    }

    /// A client whose session was evicted comes back while that session's socket is held (it
    /// has the client's address and port): the held socket is released for it and the client
    /// is served at once, with its own address. The same client through a second transparent
    /// listener to the same upstream cannot have a second socket with that address and port:
    /// it is refused, counted as a session error and logged, and the daemon keeps serving.
    /// `/status` and `/metrics` say the listener is transparent.
    func testAReturningClientIsServedDuringTheHoldAndASecondListenerForTheSameClientIsRefused() throws {
        guard getuid() == 0 else { throw XCTSkip("needs root to make network namespaces and to bind clients' addresses (CI runs as root)") }
        let topology = try Topology()
        defer { topology.remove() }
        try Self.onOwnThread {
            try Self.enter(topology.upstream)
            let up = try UpstreamServer(bind: SocketAddress(parsing: "\(Self.upstreamV4):0"))
            defer { up.stop() }
            try Self.enter(topology.client)
            let a = try UDPClient(bind: SocketAddress(parsing: "\(Self.clientV4):0"))
            let b = try UDPClient(bind: SocketAddress(parsing: "\(Self.clientV4):0"))
            try Self.enter(topology.relay)
            let d = try DaemonProcess(
                config: "[status]\nlisten = 127.0.0.1:0\n"
                    + """
                    [listener one]
                    listen = \(Self.relayClientSideV4):0
                    mode = forward
                    upstream = \(up.address)
                    transparent = yes
                    max_sessions = 1
                    workers = 1
                    [listener two]
                    listen = \(Self.relayClientSideV4):0
                    mode = forward
                    upstream = \(up.address)
                    transparent = yes
                    """,
                arguments: ["--log-level", "debug"])
            defer { d.stop() }
            let bound = try d.waitUntilReady()
            let one = try XCTUnwrap(bound["one"]?.first)
            let two = try XCTUnwrap(bound["two"]?.first)
            // From this thread, in the relay's namespace, where the endpoint listens.
            let statusLine = try XCTUnwrap(d.log.first { $0.contains(" status listening ") })
            let status = try SocketAddress(parsing: try XCTUnwrap(DaemonProcess.field("address", in: statusLine)))
            XCTAssertEqual(try Self.listenerStatus(status, "one")["transparent"] as? Bool, true)
            XCTAssertTrue(try Self.httpBody("/metrics", from: status).contains("\nudprelayd_listener_transparent{listener=\"one\"} 1\n"))

            a.send(Array("a1".utf8), to: one)
            XCTAssertEqual(a.receive()?.bytes, Array("a1".utf8))
            b.send(Array("b1".utf8), to: one)  // evicts a's session: its socket is held
            XCTAssertEqual(b.receive()?.bytes, Array("b1".utf8))
            a.send(Array("a2".utf8), to: one)  // well within the 2 s hold
            XCTAssertEqual(a.receive()?.bytes, Array("a2".utf8), "the returning client is served during its old socket's hold")
            XCTAssertEqual(up.datagrams.map(\.from), [a.localAddress, b.localAddress, a.localAddress])

            // b has a live session through `one`; through `two` to the same upstream it would
            // need the same address, port and peer.
            b.send(Array("b2".utf8), to: two)
            XCTAssertNotNil(
                d.waitForLine(containing: "cannot bind a transparent session socket to the client's address"),
                "the refusal is logged")
            XCTAssertNil(b.receive(timeout: 0.5), "no reply through the second listener")
            a.send(Array("a3".utf8), to: one)
            XCTAssertEqual(a.receive()?.bytes, Array("a3".utf8), "the daemon keeps serving")
            XCTAssertEqual(d.stop(), 0)
            let totals = try XCTUnwrap(d.log.first { $0.contains(" totals ") && DaemonProcess.field("listener.name", in: $0) == "two" })
            XCTAssertEqual(DaemonProcess.field("session_errors", in: totals), "1", totals)
        }
    }

    /// Without CAP_NET_ADMIN (all capabilities dropped with setpriv when the runner is root;
    /// as it is otherwise) the daemon refuses a transparent listener, naming the file, line,
    /// listener and what is missing: exit 78 at --check-config and at start. Needs no namespace.
    func testWithoutCapNetAdminTheDaemonRefusesWithTheDocumentedMessage() throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("udprelayd-transparent-\(UUID().uuidString).ini").path
        try Self.config(
            """
            [listener keep]
            listen = 127.0.0.1:0
            mode = forward
            upstream = 127.0.0.1:53
            transparent = yes
            """
        ).write(toFile: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: file) }
        let expected = "\(file):7: [listener keep] transparent: transparent = yes needs CAP_NET_ADMIN"
        for arguments in [["--check-config"], []] {
            let run = try Self.runWithoutCapabilities(["--config", file] + arguments)
            XCTAssertEqual(run.status, 78, "\(arguments): \(run.stderr)")
            XCTAssertTrue(run.stderr.contains(expected), "\(arguments): \(run.stderr)")
            XCTAssertTrue(run.stderr.contains("systemd/transparent.conf"), run.stderr)
        }
    }

    /// Runs the daemon with no capabilities at all, within 20 s: its exit status and stderr.
    static func runWithoutCapabilities(_ arguments: [String]) throws -> (status: Int32, stderr: String) {
        let p = Process()
        if getuid() == 0 {
            p.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
            p.arguments = ["--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all", "--", DaemonProcess.binary.path] + arguments
        } else {
            p.executableURL = DaemonProcess.binary
            p.arguments = arguments
        }
        let err = Pipe()
        p.standardError = err
        p.standardOutput = FileHandle.nullDevice
        p.standardInput = FileHandle.nullDevice
        let done = DispatchSemaphore(value: 0)
        p.terminationHandler = { _ in done.signal() }
        try p.run()
        // Its few lines fit in the pipe: read them once it has exited.
        if done.wait(timeout: .now() + 20) == .timedOut {
            kill(p.processIdentifier, SIGKILL)
            done.wait()
        }
        p.waitUntilExit()
        let text = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        return (p.terminationStatus, text)
    }
}
