import Foundation
import Logging
import TestSupport
import UDPRelayConfig
import XCTest

@testable import UDPRelayStatus

/// The real server on loopback port 0, with a fixed source.
final class StatusServerTests: XCTestCase {
    func start(
        allow: [CIDR] = Defaults.allNetworks, limits: StatusLimits = StatusLimits(), health: [String] = [],
        listen: String = "127.0.0.1:0"
    ) async throws -> StatusServer {
        var logger = Logger(label: "test")
        logger.logLevel = .warning
        let server = try await StatusServer.start(
            listen: try SocketAddress(parsing: listen), allow: allow,
            source: FixedSource(value: Fixtures.snapshot(), health: health),
            limits: limits, logger: logger)
        addTeardownBlock { await server.stop() }
        XCTAssertNotEqual(server.localAddress.port, 0, "the bound port is known")
        return server
    }

    /// Waits (bounded) until `condition` holds; for state that changes when the server's event
    /// loop has processed a close.
    func eventually(_ what: String, timeout: Double = 5, _ condition: () -> Bool) {
        let deadline = Date().addingTimeInterval(timeout)
        while !condition() {
            if Date() > deadline {
                XCTFail("timed out waiting for: \(what)")
                return
            }
            usleep(2000)
        }
    }

    func testServesEveryEndpointOverRealSockets() async throws {
        let server = try await start()
        let c = try TCPClient(to: server.localAddress)
        for path in ["/healthz", "/status", "/metrics", "/"] {
            c.send("GET \(path) HTTP/1.1\r\nHost: x\r\n\r\n")
            let r = try XCTUnwrap(c.readResponse(), path)
            XCTAssertTrue(r.hasPrefix("HTTP/1.1 200 OK\r\n"), "\(path): \(r.prefix(200))")
        }
        XCTAssertEqual(server.counters.requests, 4)
        XCTAssertEqual(server.counters.open, 1)
    }

    func testUnhealthySourceGives503WithOneLinePerProblem() async throws {
        let server = try await start(health: ["listener 'a': queue for 127.0.0.1:1 did not answer within 1 s"])
        let c = try TCPClient(to: server.localAddress)
        c.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        let r = try XCTUnwrap(c.readResponse())
        XCTAssertTrue(r.hasPrefix("HTTP/1.1 503 Service Unavailable\r\n"), r)
        XCTAssertTrue(r.hasSuffix("\r\n\r\nlistener 'a': queue for 127.0.0.1:1 did not answer within 1 s\n"), r)
    }

    func testPeerOutsideAllowIsClosedWithoutAnAnswerAndCounted() async throws {
        let server = try await start(allow: [try CIDR(parsing: "10.0.0.0/8")])
        let c = try TCPClient(to: server.localAddress)
        c.send("GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
        let r = c.readToEnd(timeout: 5)
        XCTAssertFalse(r.timedOut)
        XCTAssertEqual(r.text, "", "nothing is said to a refused peer")
        XCTAssertEqual(server.counters.rejectedNotAllowed, 1)
        XCTAssertEqual(server.counters.requests, 0)
    }

    func testAllowMatchesTheSourceAddress() async throws {
        // Listening on the wildcard, only 127.0.0.2 may talk.
        let server = try await start(allow: [try CIDR(parsing: "127.0.0.2")], listen: "0.0.0.0:0")
        let target = SocketAddress(ip: .v4(0x7F00_0001), port: server.localAddress.port)
        let refused = try TCPClient(to: target, from: IPAddress(literal: "127.0.0.1"))
        XCTAssertEqual(refused.readToEnd(timeout: 5).text, "")
        let allowed = try TCPClient(to: target, from: IPAddress(literal: "127.0.0.2"))
        allowed.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        XCTAssertEqual(allowed.readResponse()?.hasPrefix("HTTP/1.1 200"), true)
        XCTAssertEqual(server.counters.rejectedNotAllowed, 1)
    }

    func testConnectionsBeyondTheLimitGet503AndASlotFreesWhenOneCloses() async throws {
        var limits = StatusLimits()
        limits.maxConnections = 3
        let server = try await start(limits: limits)
        var held: [TCPClient] = []
        for _ in 0..<3 {
            let c = try TCPClient(to: server.localAddress)
            c.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            XCTAssertEqual(c.readResponse()?.hasPrefix("HTTP/1.1 200"), true)
            held.append(c)
        }
        for _ in 0..<2 {
            let extra = try TCPClient(to: server.localAddress)
            extra.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            let r = extra.readToEnd(timeout: 5)
            XCTAssertTrue(r.text.hasPrefix("HTTP/1.1 503 Service Unavailable\r\n"), r.text)
            XCTAssertTrue(r.text.contains("limit 3"))
            XCTAssertFalse(r.reset, "the 503 is followed by an orderly close")
        }
        XCTAssertEqual(server.counters.rejectedLimit, 2)
        held.removeFirst()  // closes it
        eventually("a slot frees") { server.counters.open == 2 }
        let next = try TCPClient(to: server.localAddress)
        next.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        XCTAssertEqual(next.readResponse()?.hasPrefix("HTTP/1.1 200"), true)
    }

    func testHugeHeaderStillSendingReadsA431NotAReset() async throws {
        let server = try await start()
        let c = try TCPClient(to: server.localAddress)
        // 200 KiB: far more than the socket buffers hold, so the server closes while we send.
        let sendDone = expectation(description: "sent")
        let fd = c.fd
        Thread.detachNewThread {
            let big = "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + String(repeating: "a", count: 200 * 1024) + "\r\n\r\n"
            _ = big.withCString { Glibc.send(fd, $0, strlen($0), Int32(MSG_NOSIGNAL)) }
            sendDone.fulfill()
        }
        let r = c.readToEnd(timeout: 10)
        await fulfillment(of: [sendDone], timeout: 10)
        XCTAssertTrue(r.text.hasPrefix("HTTP/1.1 431 Request Header Fields Too Large\r\n"), r.text)
        XCTAssertTrue(r.text.hasSuffix("request head larger than 8192 bytes\n"), r.text)
    }

    func testHeadTimeoutOnARealSocket() async throws {
        var limits = StatusLimits()
        limits.headTimeout = .milliseconds(300)
        let server = try await start(limits: limits)
        // The head timer starts when the server accepts the connection, so the clock starts
        // before connecting: a pause between connect and send must not shorten what is measured.
        let start = Date()
        let c = try TCPClient(to: server.localAddress)
        c.send("GET /status HTTP/1.1\r\nHost: x\r\n")
        let r = c.readToEnd(timeout: 5)
        XCTAssertTrue(r.text.hasPrefix("HTTP/1.1 408 Request Timeout\r\n"), r.text)
        XCTAssertGreaterThanOrEqual(Date().timeIntervalSince(start), 0.25)
        XCTAssertFalse(r.reset)
    }

    func testStopClosesOpenConnections() async throws {
        let server = try await start()
        let c = try TCPClient(to: server.localAddress)
        c.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        XCTAssertNotNil(c.readResponse())
        await server.stop()
        XCTAssertFalse(c.readToEnd(timeout: 5).timedOut, "stop() closes kept-alive connections")
    }

    func testBindFailureNamesTheAddress() async throws {
        let server = try await start()
        do {
            _ = try await StatusServer.start(
                listen: server.localAddress, allow: [], source: FixedSource(value: Fixtures.snapshot()),
                logger: Logger(label: "test"))
            XCTFail("binding a taken port must fail")
        } catch let error as StatusServerError {
            XCTAssertTrue("\(error)".contains("cannot listen on \(server.localAddress)"), "\(error)")
        }
    }
    // MARK: issue 12 item 4: half-closed requests

    func testEveryRouteAnswersAClientThatHalfClosesAfterItsRequest() async throws {
        let server = try await start()
        for path in ["/healthz", "/", "/status", "/metrics", "/nope"] {
            for version in ["1.0", "1.1"] {
                let c = try TCPClient(to: server.localAddress)
                c.send("GET \(path) HTTP/\(version)\r\nHost: x\r\n\r\n")
                shutdown(c.fd, Int32(SHUT_WR))
                let r = c.readToEnd(timeout: 5)
                XCTAssertFalse(r.timedOut, "\(path) \(version): the server closes after answering")
                XCTAssertTrue(r.text.hasPrefix("HTTP/1.1 \(path == "/nope" ? "404" : "200")"), "\(path) \(version): \(r.text.prefix(100))")
            }
        }
    }

    func testPipelinedRequestsBeforeAHalfCloseAreAllAnswered() async throws {
        let server = try await start()
        let c = try TCPClient(to: server.localAddress)
        c.send(String(repeating: "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", count: 3))
        shutdown(c.fd, Int32(SHUT_WR))
        let r = c.readToEnd(timeout: 10)
        XCTAssertEqual(r.text.components(separatedBy: "HTTP/1.1 200 OK").count - 1, 3, r.text)
    }

    // MARK: issue 12 item 3: stop does not wait on clients

    func testStopTakesUnderASecondWith64IdleKeepAliveConnectionsAndAPartialHead() async throws {
        var limits = StatusLimits()
        limits.maxConnections = 70
        let server = try await start(limits: limits)
        var clients: [TCPClient] = []
        for _ in 0..<64 {
            let c = try TCPClient(to: server.localAddress)
            c.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            XCTAssertEqual(c.readResponse()?.hasPrefix("HTTP/1.1 200"), true)
            clients.append(c)
        }
        let partial = try TCPClient(to: server.localAddress)
        partial.send("GET /status HTTP/1.1\r\nHost: x\r\nX-Part")
        eventually("all connections open") { server.counters.open == 65 }
        let started = Date()
        await server.stop()
        let took = Date().timeIntervalSince(started)
        XCTAssertLessThan(took, 1.0, "stop took \(took) s")
        for c in clients + [partial] {
            XCTAssertFalse(c.readToEnd(timeout: 2).timedOut, "every connection was closed")
        }
    }

    func testStopAnswersOrDropsARequestInProgressAndStillEndsQuickly() async throws {
        let server = try await start(health: [])
        let c = try TCPClient(to: server.localAddress)
        // A client that sends many requests and reads nothing.
        c.send(String(repeating: "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", count: 2000))
        let started = Date()
        await server.stop()
        XCTAssertLessThan(Date().timeIntervalSince(started), 1.0)
    }

    // MARK: issue 13 item 1: bounded output per connection

    func testAPipeliningClientThatNeverReadsDoesNotMakeTheServerBufferEverything() async throws {
        let server = try await start()
        let c = try TCPClient(to: server.localAddress)
        _ = fcntl(c.fd, F_SETFL, fcntl(c.fd, F_GETFL) | O_NONBLOCK)
        // 20,000 pipelined requests (740 KB), sent as far as the kernel takes them (bounded), never read.
        let request = Array(String(repeating: "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", count: 1000).utf8)
        var sentRequests = 0
        let deadline = Date().addingTimeInterval(10)
        var offset = 0
        while sentRequests < 20_000 && Date() < deadline {
            let n = request[offset...].withUnsafeBytes { Glibc.send(c.fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 {
                usleep(1000)
                continue
            }
            offset += n
            if offset == request.count {
                offset = 0
                sentRequests += 1000
            }
        }
        // Wait until the server stops answering (its count is stable for a second), bounded.
        var last = server.counters.requests
        var stableSince = Date()
        let settle = Date().addingTimeInterval(30)
        while Date().timeIntervalSince(stableSince) < 1 && Date() < settle {
            usleep(50_000)
            let now = server.counters.requests
            if now != last {
                last = now
                stableSince = Date()
            }
        }
        // Before the fix every request was answered into memory (20,000 answers, about 100 MB);
        // now answers stop once the unread ones fill the socket buffers.
        XCTAssertLessThan(last, 10_000, "answered \(last) of \(sentRequests) requests to a client that reads nothing")
        // Others are still served.
        let other = try TCPClient(to: server.localAddress)
        other.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        XCTAssertEqual(other.readResponse()?.hasPrefix("HTTP/1.1 200"), true)
    }

    // MARK: issue 13 item 10: no listener, not healthy

    func testHealthzFailsWhenNoListenerServes() async throws {
        var empty = Fixtures.snapshot()
        empty.listeners = []
        var logger = Logger(label: "test")
        logger.logLevel = .warning
        let server = try await StatusServer.start(
            listen: try SocketAddress(parsing: "127.0.0.1:0"), allow: Defaults.allNetworks,
            source: FixedSource(value: empty), logger: logger)
        addTeardownBlock { await server.stop() }
        let c = try TCPClient(to: server.localAddress)
        c.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        let r = try XCTUnwrap(c.readResponse())
        XCTAssertTrue(r.hasPrefix("HTTP/1.1 503"), r)
        XCTAssertTrue(r.hasSuffix("\r\n\r\nno listener is serving (the configuration has none)\n"), r)
        c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        XCTAssertTrue(try XCTUnwrap(c.readResponse()).contains("1 PROBLEM"), "the page says so too")
    }

    // MARK: issue 13 item 5: IPv4-mapped addresses

    func testIPv4MappedAllowNetworksMatchIPv4Peers() throws {
        let list = AllowList([try CIDR(parsing: "::ffff:127.0.0.0/104")])
        XCTAssertTrue(list.allows(try XCTUnwrap(IPAddress(literal: "127.0.0.9"))))
        XCTAssertTrue(list.allows(try XCTUnwrap(IPAddress(literal: "::ffff:127.0.0.9"))))
        XCTAssertFalse(list.allows(try XCTUnwrap(IPAddress(literal: "10.0.0.1"))))
    }

    func testIPv4MappedListenIsRefusedWithTheIPv4Form() throws {
        // [::ffff:0.0.0.0] binds every IPv4 address; it used to pass as a non-wildcard, so
        // `allow` defaulted to everyone. It is now refused at check time, naming the IPv4 form.
        for (written, ipv4) in [("[::ffff:0.0.0.0]:9180", "0.0.0.0:9180"), ("[::ffff:192.0.2.1]:9180", "192.0.2.1:9180")] {
            XCTAssertThrowsError(try ConfigLoader.parse("[status]\nlisten = \(written)\n[listener a]\nlisten = 127.0.0.1:0\n", file: "t.ini")) {
                XCTAssertTrue("\($0)".contains("t.ini:2: [status] listen:"), "\($0)")
                XCTAssertTrue("\($0)".contains("write the IPv4 form, \(ipv4)"), "\($0)")
            }
        }
    }

    func testMappedWildcardRefusesANonLoopbackPeer() async throws {
        // 127.0.0.2 is outside the default when allow is written as the mapped loopback /104 of 127.0.0.1 only.
        let server = try await start(allow: [try CIDR(parsing: "::ffff:127.0.0.1/128")], listen: "0.0.0.0:0")
        let target = SocketAddress(ip: .v4(0x7F00_0001), port: server.localAddress.port)
        let refused = try TCPClient(to: target, from: IPAddress(literal: "127.0.0.2"))
        XCTAssertEqual(refused.readToEnd(timeout: 5).text, "")
        let allowed = try TCPClient(to: target, from: IPAddress(literal: "127.0.0.1"))
        allowed.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        XCTAssertEqual(allowed.readResponse()?.hasPrefix("HTTP/1.1 200"), true)
    }
}
