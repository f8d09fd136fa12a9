import Foundation
import TestSupport
import UDPRelayConfig
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// `GET /sessions` of the real binary: 1,000 live sessions, read over and over while every one
/// of them carries traffic; the documents validate against docs/sessions.schema.json (Python's
/// jsonschema), `?listener=` and `?limit=` narrow them, and the relay loses nothing meanwhile.
final class SessionsEndToEndTests: XCTestCase {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// A GET on a connection of its own: the status code and the body (nil when no answer).
    static func get(_ path: String, from status: SocketAddress) -> (code: Int, body: String)? {
        guard let tcp = try? TCPClient(to: status) else { return nil }
        guard tcp.send("GET \(path) HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n") else { return nil }
        let r = tcp.readToEnd(timeout: 10)
        guard !r.timedOut, let split = r.text.range(of: "\r\n\r\n"), let code = Int(r.text.dropFirst(9).prefix(3)) else { return nil }
        return (code, String(r.text[split.upperBound...]))
    }

    static func sessions(_ body: String) -> [[String: Any]] {
        ((try? JSONSerialization.jsonObject(with: Data(body.utf8))) as? [String: Any])?["sessions"] as? [[String: Any]] ?? []
    }

    /// What the reader thread saw.
    final class Reads: @unchecked Sendable {
        let lock = NSLock()
        var answers: [(path: String, code: Int, body: String)] = []
        var failed = 0
        var done = false
        func add(_ path: String, _ a: (code: Int, body: String)?) {
            lock.withLock {
                if let a { answers.append((path, a.code, a.body)) } else { failed += 1 }
            }
        }
        var finished: Bool { lock.withLock { done } }
    }

    func testAThousandLiveSessionsValidateAndTheRelayLosesNothingWhileTheyAreRead() throws {
        let upstream = try UpstreamServer()
        defer { upstream.stop() }
        let (daemon, bound, status) = try startDaemonWithStatus(
            """
            [listener relay]
            mode = forward
            listen = 127.0.0.1:0
            upstream = \(upstream.address)
            session_timeout = 120s
            [listener side]
            mode = forward
            listen = 127.0.0.1:0
            upstream = \(upstream.address)
            """)
        let relay = try XCTUnwrap(bound["relay"]?.first), side = try XCTUnwrap(bound["side"]?.first)

        // 1,000 clients of `relay`, one of `side`: a session each.
        let count = 1000
        var clients: [UDPClient] = []
        for i in 0..<count {
            let c = try UDPClient()
            c.send(Array("open \(i)".utf8), to: relay)
            XCTAssertEqual(c.receive(timeout: 5)?.bytes, Array("open \(i)".utf8), "client \(i) is answered")
            clients.append(c)
        }
        let lone = try UDPClient()
        XCTAssertEqual(echo(lone, side, "side"), "side")

        // Reads /sessions (all 1,000, one listener, a few) in a loop on its own thread for as
        // long as the traffic below runs; bounded in count.
        let reads = Reads()
        let paths = ["/sessions?limit=1000", "/sessions?listener=relay&limit=1000", "/sessions?listener=side", "/sessions?limit=7"]
        let reader = Thread {
            var n = 0
            while !reads.finished && n < 2000 {
                let path = paths[n % paths.count]
                reads.add(path, Self.get(path, from: status))
                n += 1
            }
        }
        reader.start()

        // Every client sends a datagram per round, 50 at a time (a window the sockets' buffers
        // hold), and every one must come back; rounds go on until /sessions was read 40 times
        // (each kind 10 times), at least 5 and at most 200 rounds, at most 60 s.
        var rounds = 0
        var lost: [String] = []
        let started = Date()
        while rounds < 5 || (rounds < 200 && reads.lock.withLock({ reads.answers.count + reads.failed }) < 40 && Date().timeIntervalSince(started) < 60) {
            let round = rounds
            rounds += 1
            for window in stride(from: 0, to: count, by: 50) {
                let range = window..<min(window + 50, count)
                for i in range { clients[i].send(Array("r\(round) c\(i)".utf8), to: relay) }
                for i in range where clients[i].receive(timeout: 5)?.bytes != Array("r\(round) c\(i)".utf8) {
                    lost.append("round \(round) client \(i)")
                }
            }
        }
        let elapsed = Date().timeIntervalSince(started)
        reads.lock.withLock { reads.done = true }
        XCTAssertTrue(waitUntil(15) { reader.isFinished }, "the reader stops")
        let answers = reads.lock.withLock { reads.answers }
        let during = answers.count
        print("sessions e2e: \(rounds * count) datagrams relayed in \(String(format: "%.2f", elapsed)) s while /sessions was read \(during) times")
        XCTAssertEqual(lost, [], "the relay loses nothing while /sessions is read")
        XCTAssertEqual(reads.lock.withLock { reads.failed }, 0, "every read is answered")
        XCTAssertGreaterThanOrEqual(during, 40, "/sessions was read throughout the traffic")
        XCTAssertEqual(answers.filter { $0.code != 200 }.map { "\($0.path) \($0.code) \($0.body)" }, [])

        // Every read of everything lists 1,000 (of 1,001); of `relay`, exactly its clients.
        let mine = Set(clients.map { "\($0.localAddress)" })
        for a in answers {
            let list = Self.sessions(a.body)
            switch a.path {
            case paths[0]:
                XCTAssertEqual(list.count, 1000, "the limit caps the 1,001")
            case paths[1]:
                XCTAssertEqual(Set(list.compactMap { $0["client"] as? String }), mine)
                let idle = list.compactMap { $0["idle_seconds"] as? Double }
                XCTAssertEqual(idle, idle.sorted(), "most recently active first")
            case paths[2]:
                XCTAssertEqual(list.map { $0["client"] as? String }, ["\(lone.localAddress)"])
            default:
                XCTAssertEqual(list.count, 7)
            }
        }

        // After the traffic: counts each way, and the most recently active first.
        clients[17].send(Array("last".utf8), to: relay)
        XCTAssertEqual(clients[17].receive()?.bytes, Array("last".utf8))
        let first = try XCTUnwrap(Self.get("/sessions?limit=1", from: status))
        XCTAssertEqual(Self.sessions(first.body).map { $0["client"] as? String }, ["\(clients[17].localAddress)"])
        let final = try XCTUnwrap(Self.get("/sessions?listener=relay&limit=1000", from: status))
        for s in Self.sessions(final.body) {
            let extra = s["client"] as? String == "\(clients[17].localAddress)" ? 1 : 0
            XCTAssertEqual((s["to_upstream"] as? [String: Int])?["packets"], 1 + rounds + extra, "\(s)")
            XCTAssertEqual((s["to_client"] as? [String: Int])?["packets"], 1 + rounds + extra, "\(s)")
            XCTAssertEqual(s["upstream"] as? String, "\(upstream.address)")
        }
        let bad = try XCTUnwrap(Self.get("/sessions?limit=1001", from: status))
        XCTAssertEqual(bad.code, 400, bad.body)
        let unknown = try XCTUnwrap(Self.get("/sessions?listener=nope", from: status))
        XCTAssertEqual(unknown.code, 404, unknown.body)

        // The documents validate against the schema: every kind read during the traffic, the
        // last ones, and the error bodies are not documents.
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sessions-e2e-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        var files: [String] = []
        let samples = paths.compactMap { p in answers.last { $0.path == p }?.body } + [first.body, final.body]
        for (i, body) in samples.enumerated() {
            let file = dir.appendingPathComponent("\(i).json")
            try body.write(to: file, atomically: true, encoding: .utf8)
            files.append(file.path)
        }
        let check = """
            import json, sys, jsonschema
            schema = json.load(open(sys.argv[1]))
            jsonschema.Draft202012Validator.check_schema(schema)
            for f in sys.argv[2:]:
                jsonschema.validate(json.load(open(f)), schema, cls=jsonschema.Draft202012Validator)
            print("valid:", len(sys.argv) - 2)
            """
        let (code, text) = try runCommand(
            ["/usr/bin/python3", "-c", check, Self.repository.appendingPathComponent("docs/sessions.schema.json").path] + files, timeout: 60)
        XCTAssertEqual(code, 0, text)
        XCTAssertEqual(files.count, 6)

        // And the daemon counted no drop of any kind.
        let totals = try stopAndTotals(daemon, "relay")
        for field in ["drop.receive_buffer_full", "drop.send_buffer_full", "drop.no_session", "drop.send_error", "sessions_evicted"] {
            XCTAssertEqual(DaemonProcess.count(field, in: totals), 0, "\(field) in \(totals)")
        }
    }
}
