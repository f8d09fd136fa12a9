import Foundation
import TestSupport
import UDPRelayConfig
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// The relay modes with the real binary and real upstream sockets on loopback.
final class RelayEndToEndTests: XCTestCase {
    func field(_ key: String, _ line: String) -> Int? {
        DaemonProcess.number(key, in: line)
    }

    /// An upstream that answers "<tag>:" + payload, so a client sees which upstream served it.
    func taggedUpstream(_ tag: String) throws -> UpstreamServer {
        let server = try UpstreamServer(reply: { Array("\(tag):".utf8) + $0 })
        addTeardownBlock { server.stop() }
        return server
    }

    func testForwardRepliesReachTheRightOneOf50ConcurrentClients() throws {
        let upstream = try UpstreamServer()
        addTeardownBlock { upstream.stop() }
        let (daemon, bound) = try startDaemon(
            """
            [listener fwd]
            listen = 127.0.0.1:0
            mode = forward
            upstream = \(upstream.address)
            """)
        let address = try XCTUnwrap(bound["fwd"]?.first)
        let perClient = 20
        let group = DispatchGroup()
        let failures = LockedList()
        // Opened here and kept until the end: a client closed by a thread that finished early
        // frees its port, the kernel may give it to a client started later, and the two then
        // share one session (49 sessions for 50 clients).
        nonisolated(unsafe) let clients = try (0..<50).map { _ in try UDPClient() }
        for c in 0..<50 {
            group.enter()
            Thread.detachNewThread {
                defer { group.leave() }
                let client = clients[c]  // used by this thread only
                var expected = Set<[UInt8]>()
                for i in 0..<perClient {
                    let p = payload(32 + i, seed: UInt64(c * 1000 + i))
                    expected.insert(p)
                    client.send(p, to: address)
                }
                var got = Set<[UInt8]>()
                while got.count < perClient, let r = client.receive(timeout: 5) {
                    if r.from != address { failures.append("client \(c): reply from \(r.from), not \(address)") }
                    got.insert(r.bytes)
                }
                if got != expected { failures.append("client \(c): got \(got.count) of \(perClient), \(got.subtracting(expected).count) foreign") }
            }
        }
        XCTAssertEqual(group.wait(timeout: .now() + 30), .success)
        XCTAssertEqual(failures.items, [])
        XCTAssertEqual(upstream.sources.count, 50, "one session (one upstream source port) per client")
        let t = try stopAndTotals(daemon, "fwd")
        XCTAssertEqual(field("sessions_created", t), 50)
        XCTAssertEqual(field("received", t), 50 * perClient)
        XCTAssertEqual(field("sent", t), 50 * perClient)
    }

    func testLargestDatagramCrossesBothWays() throws {
        let upstream = try UpstreamServer()
        addTeardownBlock { upstream.stop() }
        let (_, bound) = try startDaemon(
            """
            [listener fwd]
            listen = 127.0.0.1:0, [::1]:0
            mode = forward
            upstream = \(upstream.address)
            """)
        for address in try XCTUnwrap(bound["fwd"]) {
            let client = try UDPClient(ipv6: address.ip.isIPv6)
            let big = payload(65507, seed: 7)
            XCTAssertEqual(client.send(big, to: address), 65507)
            let reply = try XCTUnwrap(client.receive(), "no reply via \(address)")
            XCTAssertEqual(reply.bytes.count, 65507)
            XCTAssertTrue(reply.bytes == big, "payload changed on the way")
            XCTAssertEqual(reply.from, address)
        }
        XCTAssertTrue(upstream.datagrams.allSatisfy { $0.bytes.count == 65507 })
    }

    func testLargestIPv6DatagramCrossesToAnIPv6Upstream() throws {
        let upstream = try UpstreamServer(ipv6: true)
        addTeardownBlock { upstream.stop() }
        let (_, bound) = try startDaemon(
            """
            [listener fwd6]
            listen = [::1]:0
            mode = forward
            upstream = \(upstream.address)
            """)
        let address = try XCTUnwrap(bound["fwd6"]?.first)
        let client = try UDPClient(ipv6: true)
        let big = payload(65527, seed: 9)
        XCTAssertEqual(client.send(big, to: address), 65527)
        let reply = try XCTUnwrap(client.receive())
        XCTAssertTrue(reply.bytes == big, "65527-byte payload changed on the way")
        XCTAssertEqual(reply.from, address)
    }

    func testWildcardForwardListenerRepliesFromTheAddressTheClientUsed() throws {
        let upstream = try UpstreamServer()
        addTeardownBlock { upstream.stop() }
        let (_, bound) = try startDaemon(
            """
            [listener any]
            listen = 0.0.0.0:0
            mode = forward
            upstream = \(upstream.address)
            """)
        let port = try XCTUnwrap(bound["any"]?.first?.port)
        for target in ["127.0.0.1", "127.0.0.2"] {
            let to = SocketAddress(ip: IPAddress(literal: target)!, port: port)
            let client = try UDPClient(bind: SocketAddress(ip: IPAddress(literal: target)!, port: 0))
            client.send(Array("via \(target)".utf8), to: to)
            let reply = try XCTUnwrap(client.receive(), "no reply via \(target)")
            XCTAssertEqual(reply.bytes, Array("via \(target)".utf8))
            XCTAssertEqual(reply.from, to)
        }
    }

    func testRoundRobinSpreadsSessionsEvenly() throws {
        let ups = try (0..<3).map { try taggedUpstream("u\($0)") }
        let (daemon, bound) = try startDaemon(
            """
            [listener lb]
            listen = 127.0.0.1:0
            mode = balance
            balance = round-robin
            upstream = \(ups.map(\.address.description).joined(separator: ", "))
            """)
        let address = try XCTUnwrap(bound["lb"]?.first)
        var served: [String: Int] = [:]
        let clients = try (0..<30).map { _ in try UDPClient() }
        for client in clients {
            client.send(Array("x".utf8), to: address)
            let r = try XCTUnwrap(client.receive())
            served[String(decoding: r.bytes.prefix(2), as: UTF8.self), default: 0] += 1
            // A second datagram stays on the session's upstream.
            client.send(Array("y".utf8), to: address)
            let r2 = try XCTUnwrap(client.receive())
            XCTAssertEqual(r2.bytes.prefix(2), r.bytes.prefix(2), "session is sticky")
        }
        XCTAssertEqual(served, ["u0": 10, "u1": 10, "u2": 10])
        let t = try stopAndTotals(daemon, "lb")
        XCTAssertEqual(field("sessions_created", t), 30)
        let upstreamLines = daemon.log.filter { $0.contains("upstream totals") }
        XCTAssertEqual(upstreamLines.count, 3)
        for line in upstreamLines { XCTAssertEqual(field("sessions", line), 10, line) }
    }

    /// With `session_max_replies = 1` every datagram opens a new session, so stickiness comes
    /// from the hash alone.
    func testHashKeepsClientsStickyAcross1000Datagrams() throws {
        let ups = try (0..<4).map { try taggedUpstream("u\($0)") }
        let (daemon, bound) = try startDaemon(
            """
            [listener h]
            listen = 127.0.0.1:0
            mode = balance
            balance = hash
            session_max_replies = 1
            upstream = \(ups.map(\.address.description).joined(separator: ", "))
            """)
        let address = try XCTUnwrap(bound["h"]?.first)
        let clients = try (0..<20).map { _ in try UDPClient() }
        var home: [Int: String] = [:]
        for round in 0..<50 {
            for (c, client) in clients.enumerated() {
                client.send(payload(8, seed: UInt64(round * 100 + c)), to: address)
                let r = try XCTUnwrap(client.receive(), "client \(c) round \(round)")
                let tag = String(decoding: r.bytes.prefix(2), as: UTF8.self)
                if let h = home[c] { XCTAssertEqual(tag, h, "client \(c) moved in round \(round)") } else { home[c] = tag }
            }
        }
        XCTAssertGreaterThan(Set(home.values).count, 1, "20 clients should spread over several upstreams")
        let t = try stopAndTotals(daemon, "h")
        XCTAssertEqual(field("sessions_created", t), 1000)
        XCTAssertEqual(field("sessions_closed", t), 1000)
    }

    /// Bursts of equal-sized datagrams (sent segmented with UDP GSO by default) arrive at the
    /// upstream and back at the client as the same datagrams, in order, with or without
    /// `udp_gso`.
    func testBurstsOfEqualSizedDatagramsCrossIntactInOrder() throws {
        let upstream = try UpstreamServer()
        addTeardownBlock { upstream.stop() }
        let (daemon, bound) = try startDaemon(
            """
            [listener gso]
            listen = 127.0.0.1:0
            mode = forward
            upstream = \(upstream.address)
            [listener plain]
            listen = 127.0.0.1:0
            mode = forward
            udp_gso = no
            upstream = \(upstream.address)
            """)
        var expectedAtUpstream = 0
        for name in ["gso", "plain"] {
            let address = try XCTUnwrap(bound[name]?.first)
            let client = try UDPClient()
            for burst in 0..<5 {
                let sent = (0..<48).map { payload($0 == 47 ? 333 : 1200, seed: UInt64(burst * 100 + $0)) }
                // Stopped while the burst is sent, the daemon reads it in one batch.
                daemon.signal(SIGSTOP)
                for p in sent { client.send(p, to: address) }
                daemon.signal(SIGCONT)
                let got = client.receiveMany(sent.count)
                XCTAssertEqual(got.count, sent.count, "\(name) burst \(burst)")
                XCTAssertTrue(got == sent, "\(name) burst \(burst): every reply intact and in order")
                expectedAtUpstream += sent.count
            }
        }
        XCTAssertEqual(upstream.waitForCount(expectedAtUpstream), expectedAtUpstream)
        for name in ["gso", "plain"] {
            let t = try stopAndTotals(daemon, name)
            XCTAssertEqual(field("received", t), 240, t)
            XCTAssertEqual(field("sent", t), 240, t)
        }
    }

    /// A session that has had replies, then sends once more to an upstream that has gone: the
    /// ICMP refusal alone (no further datagram from the client) closes the session and marks the
    /// upstream down.
    func testRefusalIsNoticedWithoutAnotherDatagram() throws {
        let upstream = try UpstreamServer()
        addTeardownBlock { upstream.stop() }
        let (daemon, bound) = try startDaemon(
            """
            [daemon]
            log_level = debug
            [listener fwd]
            listen = 127.0.0.1:0
            mode = forward
            max_fails = 1
            fail_timeout = 30s
            upstream = \(upstream.address)
            """)
        let address = try XCTUnwrap(bound["fwd"]?.first)
        let client = try UDPClient()
        client.send([1, 2, 3], to: address)
        XCTAssertEqual(client.receive()?.bytes, [1, 2, 3])
        upstream.stop()
        let mark = daemon.log.count
        client.send([4], to: address)
        let down = try XCTUnwrap(
            daemon.waitForLine(containing: "upstream down", after: mark, timeout: 5),
            "the refusal is noticed without another datagram: " + daemon.log.suffix(5).joined(separator: "\n"))
        XCTAssertTrue(down.contains("upstream=\(upstream.address)"), down)
        XCTAssertNotNil(daemon.waitForLine(containing: "session closed", after: mark, timeout: 5))
        let t = try stopAndTotals(daemon, "fwd")
        XCTAssertEqual(field("sessions_failed", t), 1, t)
    }

    func testMirrorDeliversEveryDatagramToEveryLiveReceiverWhileOneIsClosed() throws {
        let receivers = try (0..<3).map { _ in try UpstreamServer(reply: nil) }
        let echoing = try UpstreamServer()  // replies are counted and ignored
        addTeardownBlock {
            for r in receivers { r.stop() }
            echoing.stop()
        }
        let closed = try closedLoopbackPort()
        let (daemon, bound) = try startDaemon(
            """
            [listener m]
            listen = 127.0.0.1:0
            mode = mirror
            upstream = \(receivers[0].address), \(closed), \(receivers[1].address), \(receivers[2].address), \(echoing.address)
            """)
        let address = try XCTUnwrap(bound["m"]?.first)
        let client = try UDPClient()
        let count = 500
        let sent = (0..<count).map { payload(100 + $0 % 900, seed: UInt64($0)) }
        for (i, p) in sent.enumerated() {
            client.send(p, to: address)
            if i % 50 == 49 { _ = receivers[0].waitForCount(i + 1, timeout: 5) }  // stay within socket buffers
        }
        for (i, r) in receivers.enumerated() {
            XCTAssertEqual(r.waitForCount(count), count, "receiver \(i)")
            XCTAssertTrue(r.datagrams.map(\.bytes) == sent, "receiver \(i) got every datagram, in order, intact")
        }
        XCTAssertEqual(echoing.waitForCount(count), count)
        XCTAssertNil(client.receive(timeout: 0.2), "mirror never answers the client")
        let t = try stopAndTotals(daemon, "m")
        XCTAssertEqual(field("received", t), count)
        XCTAssertGreaterThan(field("replies_ignored", t) ?? 0, count / 2)
        let closedLine = try XCTUnwrap(daemon.log.first { $0.contains("upstream totals") && $0.contains("upstream=\(closed)") })
        XCTAssertGreaterThan(field("failures", closedLine) ?? 0, 0, "the closed port's refusals are counted: \(closedLine)")
    }

    func testMirrorSampleCopiesOneInN() throws {
        let receiver = try UpstreamServer(reply: nil)
        addTeardownBlock { receiver.stop() }
        let (daemon, bound) = try startDaemon(
            """
            [listener m]
            listen = 127.0.0.1:0
            mode = mirror
            sample = 1/10
            upstream = \(receiver.address)
            """)
        let client = try UDPClient()
        for i in 0..<100 { client.send(payload(10, seed: UInt64(i)), to: try XCTUnwrap(bound["m"]?.first)) }
        XCTAssertEqual(receiver.waitForCount(10), 10)
        let t = try stopAndTotals(daemon, "m")
        XCTAssertEqual(receiver.datagrams.count, 10)
        XCTAssertEqual(field("sampled_out", t), 90)
    }

    func testIdleSessionsExpire() throws {
        let upstream = try UpstreamServer()
        addTeardownBlock { upstream.stop() }
        // 1s: long enough that a loaded machine does not stall a busy client past it.
        let (daemon, bound) = try startDaemon(
            """
            [listener fwd]
            listen = 127.0.0.1:0
            mode = forward
            session_timeout = 1s
            upstream = \(upstream.address)
            """)
        let address = try XCTUnwrap(bound["fwd"]?.first)
        let client = try UDPClient()
        client.send([1], to: address)
        XCTAssertNotNil(client.receive())
        // Keep the session busy for longer than the timeout: it must not expire.
        let busyUntil = Date().addingTimeInterval(1.6)
        while Date() < busyUntil {
            client.send([2], to: address)
            XCTAssertNotNil(client.receive())
            usleep(100_000)
        }
        XCTAssertEqual(upstream.sources.count, 1, "a busy session stays")
        // Then go idle: the next datagram after expiry arrives from a new session socket.
        let deadline = Date().addingTimeInterval(10)
        while upstream.sources.count < 2, Date() < deadline {
            usleep(1_600_000)  // idle for longer than session_timeout (+1/4 for the timer)
            client.send([3], to: address)
            XCTAssertNotNil(client.receive())
        }
        XCTAssertEqual(upstream.sources.count, 2)
        let t = try stopAndTotals(daemon, "fwd")
        XCTAssertEqual(field("sessions_expired", t), 1)
        XCTAssertEqual(field("sessions_created", t), 2)
    }

    func testMaxSessionsEvictsTheLeastRecentlyUsed() throws {
        let upstream = try UpstreamServer()
        addTeardownBlock { upstream.stop() }
        let (daemon, bound) = try startDaemon(
            """
            [listener fwd]
            listen = 127.0.0.1:0
            mode = forward
            max_sessions = 2
            upstream = \(upstream.address)
            """)
        let address = try XCTUnwrap(bound["fwd"]?.first)
        let (a, b, c) = (try UDPClient(), try UDPClient(), try UDPClient())
        for client in [a, b, a, c] {  // b is now the least recently used: c evicts b
            client.send([1], to: address)
            XCTAssertNotNil(client.receive())
        }
        XCTAssertEqual(upstream.sources.count, 3)
        a.send([2], to: address)  // a kept its session
        XCTAssertNotNil(a.receive())
        XCTAssertEqual(upstream.sources.count, 3)
        b.send([2], to: address)  // b needs a new one (evicting c, the LRU now)
        XCTAssertNotNil(b.receive())
        XCTAssertEqual(upstream.sources.count, 4)
        let t = try stopAndTotals(daemon, "fwd")
        XCTAssertEqual(field("sessions_evicted", t), 2)
        XCTAssertEqual(field("sessions_created", t), 4)
    }

    /// Many clients in the same batches with a tiny table: evictions happen between datagrams of
    /// one batch; nothing is sent to the wrong session and the counters add up.
    func testEvictionUnderBurstsKeepsCountersConsistent() throws {
        let upstream = try UpstreamServer()
        addTeardownBlock { upstream.stop() }
        let (daemon, bound) = try startDaemon(
            """
            [listener fwd]
            listen = 127.0.0.1:0
            mode = forward
            max_sessions = 4
            upstream = \(upstream.address)
            """)
        let address = try XCTUnwrap(bound["fwd"]?.first)
        let clients = try (0..<40).map { _ in try UDPClient() }
        for round in 0..<5 {
            for (c, client) in clients.enumerated() { client.send(payload(16, seed: UInt64(round * 100 + c)), to: address) }
        }
        XCTAssertEqual(upstream.waitForCount(200), 200, "every datagram reaches the upstream")
        for (c, client) in clients.enumerated() {
            // Replies for evicted sessions are lost (documented); any that arrive are the client's own.
            while let r = client.receive(timeout: 0.02) {
                XCTAssertTrue((0..<5).contains { r.bytes == payload(16, seed: UInt64($0 * 100 + c)) }, "client \(c) got a foreign reply")
            }
        }
        let t = try stopAndTotals(daemon, "fwd")
        let created = try XCTUnwrap(field("sessions_created", t)), evicted = try XCTUnwrap(field("sessions_evicted", t))
        XCTAssertEqual(created - evicted, 4, "the table stays full at max_sessions: \(t)")
        XCTAssertEqual(field("received", t), 200)
    }

    func testUpstreamThatDisappearsIsMarkedDownAndTrafficMoves() throws {
        let stay = try taggedUpstream("ok")
        let leaving = try taggedUpstream("gone")
        let (daemon, bound) = try startDaemon(
            """
            [listener lb]
            listen = 127.0.0.1:0
            mode = balance
            balance = round-robin
            max_fails = 1
            fail_timeout = 30s
            upstream = \(stay.address), \(leaving.address)
            """)
        let address = try XCTUnwrap(bound["lb"]?.first)
        // Every client stays open until the end, so a "new" client never gets the port (and so
        // the session) of an earlier one.
        var clients: [UDPClient] = []
        func newClient() throws -> UDPClient {
            let c = try UDPClient()
            clients.append(c)
            return c
        }
        // Both serve at first.
        var tags = Set<String>()
        for _ in 0..<4 {
            let client = try newClient()
            client.send([1], to: address)
            tags.insert(String(decoding: try XCTUnwrap(client.receive()).bytes.prefix { $0 != UInt8(ascii: ":") }, as: UTF8.self))
        }
        XCTAssertEqual(tags, ["ok", "gone"])
        leaving.stop()
        // New sessions keep coming; the one sent to the closed port is refused (ICMP), which
        // marks the upstream down.
        var attempts = 0
        while daemon.waitForLine(containing: "upstream down", timeout: 0.05) == nil, attempts < 40 {
            let client = try newClient()
            client.send([2], to: address)
            _ = client.receive(timeout: 0.1)
            attempts += 1
        }
        let downLine = try XCTUnwrap(daemon.waitForLine(containing: "upstream down", timeout: 2), daemon.log.joined(separator: "\n"))
        XCTAssertTrue(downLine.contains("upstream=\(leaving.address)"), downLine)
        for i in 0..<10 {
            let client = try newClient()
            client.send([3], to: address)
            let r = try XCTUnwrap(client.receive(), "new session \(i) must go to the live upstream")
            XCTAssertEqual(String(decoding: r.bytes.prefix(3), as: UTF8.self), "ok:")
        }
        let t = try stopAndTotals(daemon, "lb")
        XCTAssertEqual(field("fail_open", t), 0)
        let goneLine = try XCTUnwrap(daemon.log.first { $0.contains("upstream totals") && $0.contains("upstream=\(leaving.address)") })
        XCTAssertEqual(DaemonProcess.field("state", in: goneLine), "down")
    }

    func testHealthProbeMarksSilentUpstreamDown() throws {
        let answering = try UpstreamServer(reply: { $0 == Array("ping".utf8) ? Array("pong".utf8) : $0 })
        let silent = try UpstreamServer(reply: nil)
        addTeardownBlock {
            answering.stop()
            silent.stop()
        }
        let (daemon, bound) = try startDaemon(
            """
            [listener lb]
            listen = 127.0.0.1:0
            mode = balance
            balance = first
            health_probe = ping
            health_expect = pong
            health_interval = 500ms
            upstream = \(silent.address), \(answering.address)
            """)
        // One unanswered probe marks an upstream down until the next answer, so the interval
        // is long enough that the answering upstream (its thread and the daemon's probe queue
        // under ThreadSanitizer on a loaded machine) is never late and down when data comes.
        let down = try XCTUnwrap(daemon.waitForLine(containing: "upstream down", timeout: 10))
        XCTAssertTrue(down.contains("upstream=\(silent.address)"), down)
        let client = try UDPClient()
        client.send(Array("data".utf8), to: try XCTUnwrap(bound["lb"]?.first))
        XCTAssertEqual(try XCTUnwrap(client.receive()).bytes, Array("data".utf8), "the standby takes over")
        XCTAssertFalse(answering.datagrams.filter { $0.bytes == Array("ping".utf8) }.isEmpty)
    }

    func testHealthFailsIsAppliedToProbesAndNamedInTheLog() throws {
        let silent = try UpstreamServer(reply: nil)
        addTeardownBlock { silent.stop() }
        let (daemon, _) = try startDaemon(
            """
            [listener lb]
            listen = 127.0.0.1:0
            mode = forward
            health_probe = ping
            health_interval = 50ms
            health_fails = 3
            upstream = \(silent.address)
            """)
        let down = try XCTUnwrap(daemon.waitForLine(containing: "upstream down", timeout: 10), daemon.log.joined(separator: "\n"))
        // The count itself is tested on HealthState with a fake clock; here, that the key
        // reaches the probes and the log says why.
        XCTAssertTrue(down.contains("3 health probes in a row not answered within 0.05 seconds"), down)
    }

    func testAllUpstreamsDownFailsOpenAndCountsIt() throws {
        let a = try closedLoopbackPort(), b = try closedLoopbackPort()
        let (daemon, bound) = try startDaemon(
            """
            [listener lb]
            listen = 127.0.0.1:0
            mode = balance
            max_fails = 1
            fail_timeout = 30s
            upstream = \(a), \(b)
            """)
        let address = try XCTUnwrap(bound["lb"]?.first)
        var downs = 0
        // Kept open to the end: each datagram below must open a session of its own, which a
        // client reusing a closed client's port would not.
        var clients: [UDPClient] = []
        for _ in 0..<100 where downs < 2 {
            let client = try UDPClient()
            clients.append(client)
            client.send([1], to: address)
            _ = client.receive(timeout: 0.05)
            downs = daemon.log.filter { $0.contains("upstream down") }.count
        }
        XCTAssertEqual(downs, 2, daemon.log.joined(separator: "\n"))
        for _ in 0..<5 {
            let client = try UDPClient()
            clients.append(client)
            client.send([2], to: address)  // still sent somewhere: fail open
        }
        let t = try stopAndTotals(daemon, "lb")
        XCTAssertGreaterThanOrEqual(field("fail_open", t) ?? 0, 5, t)
        XCTAssertEqual(field("session_errors", t), 0, t)
    }

    func testProbedUpstreamComesBackWhenItAnswersAgain() throws {
        let answering = Flag()
        let flaky = try UpstreamServer(reply: { answering.value ? $0 : nil })
        let standby = try UpstreamServer()
        addTeardownBlock {
            flaky.stop()
            standby.stop()
        }
        let (daemon, _) = try startDaemon(
            """
            [listener lb]
            listen = 127.0.0.1:0
            mode = balance
            balance = first
            health_probe = 0x01
            health_interval = 100ms
            upstream = \(flaky.address), \(standby.address)
            """)
        // The flaky upstream's own lines: a late answer from the standby (ThreadSanitizer, a
        // loaded machine) may log a down and up of its own in between.
        func flakyLine(_ event: String) -> (String) -> Bool {
            { $0.contains(event) && $0.contains("upstream=\(flaky.address)") }
        }
        let down = try XCTUnwrap(daemon.waitForLine(timeout: 10, where: flakyLine("upstream down")), daemon.log.joined(separator: "\n"))
        let mark = try XCTUnwrap(daemon.log.firstIndex(of: down))
        answering.value = true
        XCTAssertNotNil(daemon.waitForLine(after: mark, timeout: 10, where: flakyLine("upstream up")), daemon.log.joined(separator: "\n"))
    }

    func testReloadMovesARelayListenerToItsNewUpstream() throws {
        let a = try taggedUpstream("A"), b = try taggedUpstream("B")
        let config = { (up: UpstreamServer) in "[status]\nlisten = off\n[listener fwd]\nlisten = 127.0.0.1:0\nmode = forward\nupstream = \(up.address)\n" }
        let daemon = try DaemonProcess(config: config(a))
        addTeardownBlock { daemon.stop() }
        let address = try XCTUnwrap(try daemon.waitUntilReady()["fwd"]?.first)
        let client = try UDPClient()
        client.send(Array("1".utf8), to: address)
        XCTAssertEqual(try XCTUnwrap(client.receive()).bytes, Array("A:1".utf8))
        // Same listen address (port 0 was resolved, so name the bound port): the socket is kept.
        try config(b).replacingOccurrences(of: "127.0.0.1:0", with: "\(address)").write(toFile: daemon.configPath, atomically: true, encoding: .utf8)
        let mark = daemon.log.count
        daemon.signal(SIGHUP)
        XCTAssertNotNil(daemon.waitForLine(containing: "reloaded", after: mark, timeout: 10), daemon.log.joined(separator: "\n"))
        client.send(Array("2".utf8), to: address)
        XCTAssertEqual(try XCTUnwrap(client.receive()).bytes, Array("B:2".utf8), "after the reload the session is on the new upstream")
        let fresh = try UDPClient()
        fresh.send(Array("3".utf8), to: address)
        XCTAssertEqual(try XCTUnwrap(fresh.receive()).bytes, Array("B:3".utf8))
        XCTAssertEqual(daemon.stop(), 0)
    }

    func testHostnameUpstreamIsResolved() throws {
        // localhost resolves to ::1 or 127.0.0.1 depending on the resolver: listen on both.
        let v4 = try UpstreamServer(reply: { Array("v4:".utf8) + $0 })
        let v6 = try UpstreamServer(ipv6: true, reply: { Array("v6:".utf8) + $0 })
        addTeardownBlock {
            v4.stop()
            v6.stop()
        }
        let servers = [v4, v6]
        for (i, server) in servers.enumerated() {
            let (daemon, bound) = try startDaemon(
                """
                [listener named]
                listen = 127.0.0.1:0
                mode = forward
                upstream = localhost:\(server.address.port)
                """)
            let resolved = try XCTUnwrap(daemon.waitForLine(containing: "upstream resolved", timeout: 5))
            let address = try XCTUnwrap(DaemonProcess.field("upstream.address", in: resolved))
            guard address == "\(server.address)" else {
                daemon.stop()
                continue  // localhost resolved to the other family: try the other server
            }
            let client = try UDPClient()
            client.send(Array("hi".utf8), to: try XCTUnwrap(bound["named"]?.first))
            let reply = try XCTUnwrap(client.receive())
            XCTAssertEqual(String(decoding: reply.bytes, as: UTF8.self), (i == 0 ? "v4:" : "v6:") + "hi")
            return
        }
        XCTFail("localhost resolved to neither 127.0.0.1 nor ::1")
    }

    func testExampleConfigurationStartsAndRelays() throws {
        let text = try String(contentsOf: repositoryRoot.appendingPathComponent("config/udprelayd.ini"), encoding: .utf8)
        let check = try DaemonProcess(config: text, arguments: ["--check-config"])
        XCTAssertEqual(check.waitForExit(), 0, check.log.joined(separator: "\n"))
    }
}
