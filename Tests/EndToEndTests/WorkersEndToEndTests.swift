import Foundation
import TestSupport
import UDPRelayConfig
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// `workers = N` with the real binary: N sockets share each address (SO_REUSEPORT), every
/// client is answered by the worker the kernel keeps it on, and `/status` shows each worker.
final class WorkersEndToEndTests: XCTestCase {
    /// The listener's object once its `received` and `sent` packets both reached `expected`
    /// (or after 10 s). A worker counts what it sends just after the send, so a client can hold
    /// its last reply a moment before `sent` moves (a worker preempted on a loaded machine).
    func settledStatus(_ status: SocketAddress, _ name: String, expected: Int) throws -> [String: Any] {
        let deadline = Date().addingTimeInterval(10)
        while true {
            let object = try listenerStatus(status, name)
            if packets(object, "received") >= expected && packets(object, "sent") >= expected || Date() > deadline {
                return object
            }
            usleep(20_000)
        }
    }

    func packets(_ object: [String: Any], _ direction: String) -> Int {
        ((object[direction] as? [String: Any])?["packets"] as? Int) ?? -1
    }

    /// Sends `perClient` distinct payloads from each client (its own source port) and checks
    /// that exactly those come back, byte for byte, from `address`. Returns the failures.
    func exchange(clients: Int, perClient: Int, with address: SocketAddress) -> [String] {
        let failures = LockedList()
        let group = DispatchGroup()
        // Opened here and kept until every thread is done: a client closed by a thread that
        // finished early frees its port, and a client started later may get it and share the
        // first one's session and worker.
        nonisolated(unsafe) let sockets = (0..<clients).map { _ in try? UDPClient() }
        for c in 0..<clients {
            group.enter()
            Thread.detachNewThread {
                defer { group.leave() }
                guard let client = sockets[c] else { return failures.append("client \(c): no socket") }
                var expected: [[UInt8]] = []
                for i in 0..<perClient {
                    let p = payload(16 + (c * 37 + i * 11) % 1400, seed: UInt64(c * 10_000 + i + 1))
                    expected.append(p)
                    client.send(p, to: address)
                }
                var got: [[UInt8]] = []
                while got.count < perClient, let r = client.receive(timeout: 5) {
                    if r.from != address { failures.append("client \(c): reply from \(r.from), not \(address)") }
                    got.append(r.bytes)
                }
                let sort = { (a: [UInt8], b: [UInt8]) in a.lexicographicallyPrecedes(b) }
                if got.sorted(by: sort) != expected.sorted(by: sort) {
                    failures.append("client \(c): \(got.count) of \(perClient) replies, or not its own payloads byte for byte")
                }
            }
        }
        if group.wait(timeout: .now() + 60) == .timedOut { failures.append("clients did not finish within 60 s") }
        return failures.items
    }

    func testFourEchoWorkersShareThePortAndEachClientGetsItsOwnReplies() throws {
        let (daemon, bound, status) = try startDaemonWithStatus(
            """
            [listener w]
            listen = 127.0.0.1:0
            workers = 4
            """)
        XCTAssertEqual(bound["w"]?.count, 1, "one listening line per address, not per worker")
        let address = try XCTUnwrap(bound["w"]?.first)
        XCTAssertNotEqual(address.port, 0)
        let listening = try XCTUnwrap(daemon.log.first { $0.contains(" listening ") && $0.contains("listener.name=w") })
        XCTAssertEqual(DaemonProcess.field("listener.workers", in: listening), "4", listening)

        let clients = 32, perClient = 20
        XCTAssertEqual(exchange(clients: clients, perClient: perClient, with: address), [])

        let w = try settledStatus(status, "w", expected: clients * perClient)
        XCTAssertEqual(w["addresses"] as? [String], ["\(address)"])
        XCTAssertEqual(packets(w, "received"), clients * perClient)
        XCTAssertEqual(packets(w, "sent"), clients * perClient)
        let workers = try XCTUnwrap(w["workers"] as? [[String: Any]])
        XCTAssertEqual(workers.count, 4)
        XCTAssertEqual(Set(workers.compactMap { $0["address"] as? String }), ["\(address)"])
        let perWorker = workers.map { packets($0, "received") }
        XCTAssertEqual(perWorker.reduce(0, +), clients * perClient, "\(perWorker)")
        XCTAssertEqual(workers.map { packets($0, "sent") }, perWorker, "each worker answers what it received")
        // 32 source ports hashed over 4 sockets: all on one would be a 4^-31 chance.
        XCTAssertGreaterThan(perWorker.filter { $0 > 0 }.count, 1, "the kernel spread clients over the workers: \(perWorker)")
        // A client stays on one worker: each worker's count is a whole number of clients.
        for n in perWorker { XCTAssertEqual(n % perClient, 0, "\(perWorker)") }
    }

    func testForwardWithTwoWorkersSendsEveryReplyBackToItsClient() throws {
        let upstream = try UpstreamServer()
        addTeardownBlock { upstream.stop() }
        let (_, bound, status) = try startDaemonWithStatus(
            """
            [listener fwd]
            listen = 127.0.0.1:0
            mode = forward
            upstream = \(upstream.address)
            workers = 2
            """)
        let address = try XCTUnwrap(bound["fwd"]?.first)
        let clients = 24, perClient = 10
        XCTAssertEqual(exchange(clients: clients, perClient: perClient, with: address), [])
        XCTAssertEqual(upstream.sources.count, clients, "one session (one upstream source port) per client")

        let fwd = try settledStatus(status, "fwd", expected: clients * perClient)
        XCTAssertEqual(packets(fwd, "received"), clients * perClient)
        XCTAssertEqual(packets(fwd, "sent"), clients * perClient)
        let sessions = try XCTUnwrap(fwd["sessions"] as? [String: Any])
        XCTAssertEqual(sessions["created"] as? Int, clients, "a client keeps one session: it stays on one worker")
        let workers = try XCTUnwrap(fwd["workers"] as? [[String: Any]])
        XCTAssertEqual(workers.count, 2)
        let perWorker = workers.map { packets($0, "received") }
        XCTAssertEqual(perWorker.reduce(0, +), clients * perClient, "\(perWorker)")
        XCTAssertTrue(perWorker.allSatisfy { $0 > 0 }, "both workers took clients: \(perWorker)")
        let upstreams = try XCTUnwrap(fwd["upstreams"] as? [[String: Any]])
        XCTAssertEqual(upstreams.first.map { packets($0, "sent") }, clients * perClient, "per-worker upstream rows summed")
    }

    func testSocketActivatedListenerUsesOnlyThePassedSocketAndSaysSo() throws {
        let passed = try UDPClient()
        let address = passed.localAddress
        let d = try DaemonProcess(
            config: "[status]\nlisten = off\n[listener act]\nlisten = 127.0.0.1:9\nworkers = 4\n",
            inheritedSocket: (passed.fd, "act"))
        addTeardownBlock { d.stop() }
        let bound = try d.waitUntilReady()
        XCTAssertEqual(bound["act"], [address])
        let notice = try XCTUnwrap(d.log.first { $0.contains("workers ignored") }, d.log.joined(separator: "\n"))
        XCTAssertEqual(DaemonProcess.field("sockets", in: notice), "1", notice)
        let listening = try XCTUnwrap(d.log.first { $0.contains(" listening ") && $0.contains("listener.name=act") })
        XCTAssertEqual(DaemonProcess.field("listener.workers", in: listening), "1", listening)
        let client = try UDPClient()
        client.send(Array("activated".utf8), to: address)
        XCTAssertEqual(client.receive().map { String(decoding: $0.bytes, as: UTF8.self) }, "activated")
    }
}
