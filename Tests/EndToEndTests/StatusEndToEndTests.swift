import Foundation
import TestSupport
import UDPRelayConfig
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// The status endpoint of the real binary, checked with curl, Python requests, jsonschema,
/// prometheus_client and headless Chromium (Tests/EndToEndTests/status_e2e.py).
final class StatusEndToEndTests: XCTestCase {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// Starts the daemon and returns it with the status address it logged.
    func start(_ config: String) throws -> (DaemonProcess, [String: [SocketAddress]], SocketAddress) {
        let d = try DaemonProcess(config: config)
        addTeardownBlock { d.stop() }
        let bound = try d.waitUntilReady()
        let line = try XCTUnwrap(d.log.first { $0.contains(" status listening ") }, d.log.joined(separator: "\n"))
        let address = try SocketAddress(parsing: try XCTUnwrap(DaemonProcess.field("address", in: line)))
        return (d, bound, address)
    }

    /// A UDP port that was free a moment ago (for an upstream that must be known before start).
    func freeUDPPort() throws -> UInt16 {
        try UDPClient().localAddress.port
    }

    func testPythonClientsCurlAndChromiumAgainstTheRealDaemon() throws {
        let upstreamPort = try freeUDPPort()
        let (daemon, bound, status) = try start(
            """
            [status]
            listen = 127.0.0.1:0
            [listener dns]
            listen = 127.0.0.1:\(upstreamPort), [::1]:0
            [listener games]
            listen = 127.0.0.1:0
            workers = 2
            [listener relay]
            mode = forward
            listen = 127.0.0.1:0
            upstream = 127.0.0.1:\(upstreamPort)
            """)
        func spec(_ name: String) -> String {
            "\(name)=" + (bound[name] ?? []).map { "\($0)" }.joined(separator: ",")
        }
        let screenshot = Self.repository.appendingPathComponent(".build/status-page.png").path
        // Bounded: the script (only it, by PID) is killed if it hangs.
        let (pythonStatus, text) = try runCommand([
            "/usr/bin/python3",  // Debian's, with the modules install-deps.sh adds (not a PATH one)
            Self.repository.appendingPathComponent("Tests/EndToEndTests/status_e2e.py").path,
            "--base", "http://\(status)",
            "--schema", Self.repository.appendingPathComponent("docs/status.schema.json").path,
            "--screenshot", screenshot,
            "--echo", spec("dns"), "--echo", spec("games"), "--relay", spec("relay"),
        ])
        print(text, terminator: "")
        XCTAssertEqual(
            pythonStatus, 0,
            "status_e2e.py failed:\n\(text)\ndaemon log (tail):\n\(daemon.log.suffix(60).joined(separator: "\n"))")
        XCTAssertTrue(FileManager.default.fileExists(atPath: screenshot))
    }

    func testStatusOffListensNowhere() throws {
        let d = try DaemonProcess(config: "[status]\nlisten = off\n[listener a]\nlisten = 127.0.0.1:0\n")
        addTeardownBlock { d.stop() }
        _ = try d.waitUntilReady()
        XCTAssertNil(d.log.first { $0.contains("status listening") })
    }

    func testTakenStatusPortStopsTheStartWithAClearMessage() throws {
        let (_, _, status) = try start("[status]\nlisten = 127.0.0.1:0\n[listener a]\nlisten = 127.0.0.1:0\n")
        let second = try DaemonProcess(config: "[status]\nlisten = \(status)\n[listener b]\nlisten = 127.0.0.1:0\n")
        XCTAssertEqual(second.waitForExit(), 1)
        let log = second.log.joined(separator: "\n")
        XCTAssertTrue(log.contains("status endpoint: cannot listen on \(status)"), log)
    }

    func testOverIPv6AndCountersSeenByCurl() throws {
        let (_, bound, status) = try start("[status]\nlisten = [::1]:0\n[listener six]\nlisten = [::1]:0\n")
        let address = try XCTUnwrap(bound["six"]?.first)
        let client = try UDPClient(ipv6: true)
        for i in 0..<5 {
            client.send(payload(100, seed: UInt64(i + 1)), to: address)
            XCTAssertNotNil(client.receive())
        }
        let received = "\nudprelayd_packets_received_total{listener=\"six\"} 5\n"
        let sent = "\nudprelayd_bytes_sent_total{listener=\"six\"} 500\n"
        // The worker counts what it sent just after the send, so the client can hold the last
        // reply a moment before the counter moves: ask again (up to 10 s) until it has.
        var curlStatus: Int32 = -1
        var text = ""
        let deadline = Date().addingTimeInterval(10)
        repeat {
            let curl = Process()
            curl.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
            curl.arguments = ["-sS", "--max-time", "10", "-g", "http://\(status)/metrics"]
            let out = Pipe()
            curl.standardOutput = out
            try curl.run()
            text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            curl.waitUntilExit()
            curlStatus = curl.terminationStatus
            if curlStatus != 0 || (text.contains(received) && text.contains(sent)) { break }
            usleep(50_000)
        } while Date() < deadline
        XCTAssertEqual(curlStatus, 0)
        XCTAssertTrue(text.contains(received), text)
        XCTAssertTrue(text.contains(sent), text)
    }
    // MARK: issue 12 item 3: SIGTERM does not wait on HTTP clients

    func testSIGTERMWithIdleKeepAliveConnectionsAndAPartialHeadExitsUnderASecond() throws {
        let notify = try NotifySocket()
        let d = try DaemonProcess(
            config: "[status]\nlisten = 127.0.0.1:0\n[listener a]\nlisten = 127.0.0.1:0\n",
            environment: ["NOTIFY_SOCKET": notify.path])
        addTeardownBlock { d.stop() }
        _ = try d.waitUntilReady()
        let line = try XCTUnwrap(d.log.first { $0.contains(" status listening ") })
        let status = try SocketAddress(parsing: try XCTUnwrap(DaemonProcess.field("address", in: line)))
        // The 64 connections the endpoint allows, each idle after one answer (a Prometheus
        // server, a browser tab), plus one that sent half a request head... 63 + 1.
        var clients: [TCPClient] = []
        for _ in 0..<63 {
            let c = try TCPClient(to: status)
            c.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            XCTAssertEqual(c.readResponse()?.hasPrefix("HTTP/1.1 200"), true)
            clients.append(c)
        }
        let partial = try TCPClient(to: status)
        partial.send("GET /metrics HTTP/1.1\r\nHost: x\r\nX-Half")
        clients.append(partial)
        let started = Date()
        d.signal(SIGTERM)
        XCTAssertEqual(d.waitForExit(timeout: 20), 0)
        let took = Date().timeIntervalSince(started)
        XCTAssertLessThan(took, 1.0 * DaemonProcess.slowdown, "stop took \(took) s with 64 status connections open")
        var seen: [String] = []
        XCTAssertNotNil(notify.wait(timeout: 1, seen: &seen) { $0.contains("STOPPING=1") }, "\(seen)")
        XCTAssertNotNil(
            d.log.first { $0.contains(" totals ") && DaemonProcess.field("listener.name", in: $0) == "a" },
            d.log.joined(separator: "\n"))
        for c in clients { XCTAssertFalse(c.readToEnd(timeout: 2).timedOut, "every connection was closed") }
    }

    // MARK: issue 12 item 4: half-closed one-liners

    func testSocatOneLinerHealthCheckIsAnsweredEveryTime() throws {
        let (_, _, status) = try start("[status]\nlisten = 127.0.0.1:0\n[listener a]\nlisten = 127.0.0.1:0\n")
        for path in ["/healthz", "/"] {
            for i in 0..<10 {
                let (code, out) = try Self.run("/bin/sh", ["-c", "printf 'GET \(path) HTTP/1.0\\r\\n\\r\\n' | socat -t 5 - TCP:\(status)"])
                XCTAssertEqual(code, 0)
                XCTAssertTrue(out.hasPrefix("HTTP/1.1 200 OK\r\n"), "\(path) try \(i): '\(out.prefix(80))'")
            }
        }
    }

    // MARK: issue 12 item 14: HTTP/2 prior knowledge

    func testCurlHTTP2PriorKnowledgeGetsAClearAnswer() throws {
        let (_, _, status) = try start("[status]\nlisten = 127.0.0.1:0\n[listener a]\nlisten = 127.0.0.1:0\n")
        let (code, out) = try Self.run("/usr/bin/curl", ["-sS", "--max-time", "10", "--http2-prior-knowledge", "http://\(status)/healthz"])
        // The refusal (HTTP_1_1_REQUIRED) makes curl retry over HTTP/1.1: it gets the answer.
        XCTAssertEqual(code, 0, out)
        XCTAssertEqual(out, "ok\n")
    }

    // MARK: issue 13 item 1: pipelining clients that never read

    func testPipeliningClientsThatNeverReadKeepTheDaemonsMemoryBounded() throws {
        let (d, bound, status) = try start("[status]\nlisten = 127.0.0.1:0\n[listener a]\nlisten = 127.0.0.1:0\n")
        let echo = try XCTUnwrap(bound["a"]?.first)
        let before = try XCTUnwrap(Self.rssKiB(d.pid))
        // Four connections, each pipelining 1.4 MB of `GET /metrics` (the issue's figure) and
        // reading nothing; sent as far as the daemon takes them, bounded in time.
        let request = Array(String(repeating: "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", count: 1000).utf8)
        var attackers: [TCPClient] = []
        for _ in 0..<4 {
            let c = try TCPClient(to: status)
            _ = fcntl(c.fd, F_SETFL, fcntl(c.fd, F_GETFL) | O_NONBLOCK)
            attackers.append(c)
        }
        let deadline = Date().addingTimeInterval(8)
        var sent = [Int](repeating: 0, count: 4)
        while Date() < deadline && sent.contains(where: { $0 < 1_400_000 }) {
            var progressed = false
            for (k, c) in attackers.enumerated() where sent[k] < 1_400_000 {
                let offset = sent[k] % request.count
                let n = request[offset...].withUnsafeBytes { Glibc.send(c.fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                if n > 0 {
                    sent[k] += n
                    progressed = true
                }
            }
            if !progressed { usleep(5000) }
        }
        // Give the daemon time to do whatever it does with what it took (bounded), then measure.
        let settle = Date().addingTimeInterval(3)
        var peak = before
        while Date() < settle {
            peak = max(peak, Self.rssKiB(d.pid) ?? 0)
            usleep(100_000)
        }
        let growthMiB = Double(peak - before) / 1024
        XCTAssertLessThan(growthMiB, 64, "RSS grew by \(growthMiB) MiB (sent \(sent) bytes)")
        // Others are served meanwhile: the endpoint and the datapath.
        let other = try TCPClient(to: status)
        other.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        XCTAssertEqual(other.readResponse()?.hasPrefix("HTTP/1.1 200"), true)
        let client = try UDPClient()
        client.send(Array("still here".utf8), to: echo)
        XCTAssertEqual(client.receive().map { String(decoding: $0.bytes, as: UTF8.self) }, "still here")
    }

    // MARK: issue 13 item 7: out of descriptors

    func testOutOfDescriptorsTheEndpointDoesNotSpinAndRecovers() throws {
        let upstream = try UpstreamServer()
        addTeardownBlock { upstream.stop() }
        // 64 descriptors; relay sessions (one socket each) take all that is left.
        let d = try DaemonProcess(
            config: """
                [status]
                listen = 127.0.0.1:0
                [listener fwd]
                listen = 127.0.0.1:0
                mode = forward
                upstream = \(upstream.address)
                session_timeout = 4s
                """, fileLimit: 64)
        addTeardownBlock { d.stop() }
        let relay = try XCTUnwrap(try d.waitUntilReady()["fwd"]?.first)
        let line = try XCTUnwrap(d.log.first { $0.contains(" status listening ") })
        let status = try SocketAddress(parsing: try XCTUnwrap(DaemonProcess.field("address", in: line)))
        // All clients at once: sessions that expire are held 2 s more and never released early,
        // so a slow one-by-one loop would see descriptors come and go.
        var clients: [UDPClient] = []
        for i in 0..<80 {
            let c = try UDPClient()
            c.send(Array("client \(i)".utf8), to: relay)
            clients.append(c)
        }
        // Replies for at most 1 s in all: the refused clients get none, and waiting for each in
        // turn could outlast the sessions (4 s) and their holds (2 s).
        let repliesBy = Date().addingTimeInterval(1)
        for c in clients { _ = c.receive(timeout: max(0.01, repliesBy.timeIntervalSinceNow)) }
        // (Counted from /proc while the daemon works: a snapshot, so only a lower bound.)
        XCTAssertGreaterThanOrEqual(Self.openDescriptors(d.pid), 60, "descriptors exhausted")
        // A connection now cannot be accepted: the endpoint must not spin on accept4.
        let waiting = try TCPClient(to: status)
        waiting.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        let cpuBefore = try XCTUnwrap(Self.cpuSeconds(d.pid))
        let window = Date()
        usleep(2_000_000)
        let cpu = try XCTUnwrap(Self.cpuSeconds(d.pid)) - cpuBefore
        let elapsed = Date().timeIntervalSince(window)
        XCTAssertLessThan(cpu, 0.2 * elapsed, "the daemon used \(cpu) s of CPU in \(elapsed) s with a connection it cannot accept")
        // Sessions expire (4 s) and their held sockets are released (2 s): descriptors free and
        // the waiting connection is served, within a few seconds.
        clients.removeAll()
        let r = waiting.readResponse(timeout: 15)
        XCTAssertEqual(r?.hasPrefix("HTTP/1.1 200"), true, "\(r ?? "no answer")")
        let fresh = try TCPClient(to: status)
        fresh.send("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        let metrics = try XCTUnwrap(fresh.readResponse())
        let counted = metrics.split(separator: "\n").first { $0.hasPrefix("udprelayd_status_accept_errors_total ") }
        XCTAssertNotNil(counted, "counted in /metrics")
        XCTAssertNotEqual(counted.map { String($0) }, "udprelayd_status_accept_errors_total 0")
    }

    static func openDescriptors(_ pid: Int32) -> Int {
        (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count) ?? 0
    }

    /// User + system CPU time of a process, in seconds.
    static func cpuSeconds(_ pid: Int32) -> Double? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = text.lastIndex(of: ")")
        else { return nil }
        let fields = text[text.index(after: close)...].split(separator: " ")
        // After the command: state is field 3, utime 14 and stime 15 (1-based in proc(5)).
        guard fields.count > 12, let u = Double(fields[11]), let s = Double(fields[12]) else { return nil }
        return (u + s) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    static func rssKiB(_ pid: Int32) -> Int? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
            let line = text.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") })
        else { return nil }
        return Int(line.split(separator: " ").dropFirst().first ?? "")
    }

    /// Runs a tool (bounded: killed after 30 s) and returns its exit status and output.
    static func run(_ tool: String, _ arguments: [String]) throws -> (Int32, String) {
        try runCommand([tool] + arguments, timeout: 30)
    }
}
