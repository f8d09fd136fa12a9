import Foundation
import NIOHTTP1
import UDPRelayConfig
import XCTest

@testable import UDPRelayStatus

final class RoutesTests: XCTestCase {
    func routes(health: [String] = []) -> StatusRoutes {
        StatusRoutes(
            source: FixedSource(value: Fixtures.snapshot(), health: health), history: RateHistory(),
            counters: { ServerCounters() }, monotonicNow: { 0 })
    }

    func testEndpointsAndErrors() async {
        let r = routes()
        let health = await r.respond(method: .GET, uri: "/healthz")
        XCTAssertEqual(health.status, .ok)
        XCTAssertEqual(health.body, "ok\n")
        let status = await r.respond(method: .GET, uri: "/status")
        XCTAssertEqual(status.contentType, "application/json")
        let metrics = await r.respond(method: .HEAD, uri: "/metrics")
        XCTAssertEqual(metrics.contentType, "text/plain; version=0.0.4; charset=utf-8")
        let page = await r.respond(method: .GET, uri: "/")
        XCTAssertEqual(page.contentType, "text/html; charset=utf-8")

        let missing = await r.respond(method: .GET, uri: "/nope")
        XCTAssertEqual(missing.status, .notFound)
        let post = await r.respond(method: .POST, uri: "/status")
        XCTAssertEqual(post.status, .methodNotAllowed)
        XCTAssertEqual(post.headers.first { $0.0 == "Allow" }?.1, "GET, HEAD")
        XCTAssertTrue(post.close)
        let bad = await r.respond(method: .GET, uri: "status")
        XCTAssertEqual(bad.status, .badRequest)
        let unknownListener = await r.respond(method: .GET, uri: "/status?listener=nope")
        XCTAssertEqual(unknownListener.status, .notFound)
        XCTAssertTrue(unknownListener.body.contains("dns, game-relay"))
    }

    func testUnhealthyIs503WithOneLinePerProblem() async {
        let r = await routes(health: ["listener 'a': queue stuck", "listener 'b': 0 of 1 addresses bound"]).respond(method: .GET, uri: "/healthz")
        XCTAssertEqual(r.status, .serviceUnavailable)
        XCTAssertEqual(r.body, "listener 'a': queue stuck\nlistener 'b': 0 of 1 addresses bound\n")
    }
}
