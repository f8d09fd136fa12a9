import Foundation
import TestSupport
import UDPRelayConfig
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// The instance drain switch of the real binary, as a load balancer's health check sees it:
/// SIGUSR1 makes `/healthz` answer 503 while every datagram is still served (existing sessions
/// continue, new clients are served), SIGUSR2 makes it answer 200 again.
final class InstanceDrainEndToEndTests: XCTestCase {
    /// Status code and body of `GET path`.
    func get(_ path: String, _ status: SocketAddress) throws -> (code: Int, body: String) {
        let tcp = try TCPClient(to: status)
        tcp.send("GET \(path) HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        let response = try XCTUnwrap(tcp.readResponse(), "no answer from \(path)")
        let words = response.split(separator: " ", maxSplits: 2)
        let code = words.count > 1 ? Int(words[1]) ?? -1 : -1
        return (code, response.range(of: "\r\n\r\n").map { String(response[$0.upperBound...]) } ?? "")
    }

    func daemonDraining(_ status: SocketAddress) throws -> Bool? {
        let body = try get("/status", status).body
        let doc = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any])
        return (doc["daemon"] as? [String: Any])?["draining"] as? Bool
    }

    func testSIGUSR1FailsHealthWhileEverythingIsServedAndSIGUSR2EndsIt() throws {
        let upstream = try UpstreamServer()
        let (d, bound, status) = try startDaemonWithStatus(
            """
            [daemon]
            log_level = debug
            [listener dns]
            listen = 127.0.0.1:0
            [listener relay]
            mode = forward
            listen = 127.0.0.1:0
            upstream = \(upstream.address)
            """)
        let echoAddress = try XCTUnwrap(bound["dns"]?.first)
        let relay = try XCTUnwrap(bound["relay"]?.first)
        XCTAssertEqual(try get("/healthz", status).code, 200)
        XCTAssertEqual(try get("/healthz?listener=relay", status).code, 200)
        let unknown = try get("/healthz?listener=nope", status)
        XCTAssertEqual(unknown.code, 404)
        XCTAssertEqual(unknown.body, "no listener named 'nope'; listeners: dns, relay\n")
        XCTAssertEqual(try daemonDraining(status), false)

        let client = try UDPClient()
        let sessionClient = try UDPClient()
        XCTAssertEqual(echo(client, echoAddress, "before"), "before")
        XCTAssertEqual(echo(sessionClient, relay, "opened"), "opened")

        var mark = d.log.count
        d.signal(SIGUSR1)
        XCTAssertNotNil(d.waitForLine(containing: "draining: /healthz answers 503", after: mark), d.log.joined(separator: "\n"))
        for path in ["/healthz", "/healthz?listener=dns"] {
            let drained = try get(path, status)
            XCTAssertEqual(drained.code, 503, path)
            XCTAssertTrue(drained.body.hasPrefix("draining: "), "\(path): \(drained.body)")
        }
        XCTAssertEqual(try daemonDraining(status), true)
        XCTAssertTrue(try get("/metrics", status).body.contains("\nudprelayd_draining 1\n"))
        // Draining refuses nothing: echo, the session opened before, and a new client.
        XCTAssertEqual(echo(client, echoAddress, "during"), "during")
        XCTAssertEqual(echo(sessionClient, relay, "continued"), "continued")
        XCTAssertEqual(echo(try UDPClient(), relay, "new"), "new")
        let seen = upstream.datagrams
        XCTAssertEqual(seen.map { String(decoding: $0.bytes, as: UTF8.self) }, ["opened", "continued", "new"])
        XCTAssertEqual(seen[0].from, seen[1].from, "the session opened before the drain went on through the same upstream socket")

        // A repeated SIGUSR1 changes nothing and logs no second notice.
        mark = d.log.count
        d.signal(SIGUSR1)
        XCTAssertNotNil(d.waitForLine(containing: "already draining", after: mark), d.log.joined(separator: "\n"))
        mark = d.log.count
        d.signal(SIGUSR2)
        XCTAssertNotNil(d.waitForLine(containing: "drain ended", after: mark), d.log.joined(separator: "\n"))
        XCTAssertEqual(d.log.filter { $0.contains("draining: /healthz answers 503") }.count, 1)
        let healthy = try get("/healthz", status)
        XCTAssertEqual(healthy.code, 200)
        XCTAssertEqual(healthy.body, "ok\n")
        XCTAssertEqual(try daemonDraining(status), false)
        XCTAssertTrue(try get("/metrics", status).body.contains("\nudprelayd_draining 0\n"))
        XCTAssertEqual(echo(client, echoAddress, "after"), "after")
        XCTAssertEqual(d.stop(), 0)
    }
}
