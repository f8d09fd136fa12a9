import Foundation
import NIOHTTP1
import UDPRelayConfig
import XCTest

@testable import UDPRelayStatus

/// `/healthz` for a load balancer in front of a fleet: the whole instance, one listener
/// (`?listener=NAME`), and the instance's drain switch, which fails both while traffic is
/// still served.
final class FleetHealthTests: XCTestCase {
    func routes(health: [String] = [], draining: Bool = false) -> StatusRoutes {
        var snapshot = Fixtures.snapshot()
        snapshot.daemon.draining = draining
        return StatusRoutes(
            source: FixedSource(value: snapshot, health: health), history: RateHistory(),
            counters: { ServerCounters() }, monotonicNow: { 0 })
    }

    func testPerListenerHealthSeesOnlyThatListenersProblems() async {
        let r = routes(health: ["listener 'dns' queue for 127.0.0.1:53 did not answer within 1 s", "listener 'game-relay': 0 of 1 addresses bound"])
        let dns = await r.respond(method: .GET, uri: "/healthz?listener=dns")
        XCTAssertEqual(dns.status, .serviceUnavailable)
        XCTAssertEqual(dns.body, "listener 'dns' queue for 127.0.0.1:53 did not answer within 1 s\n")
        let game = await r.respond(method: .GET, uri: "/healthz?listener=game-relay")
        XCTAssertEqual(game.status, .serviceUnavailable)
        XCTAssertEqual(game.body, "listener 'game-relay': 0 of 1 addresses bound\n")
        let whole = await r.respond(method: .GET, uri: "/healthz")
        XCTAssertEqual(whole.status, .serviceUnavailable)
        XCTAssertEqual(whole.body.split(separator: "\n").count, 2)

        let healthyDNS = await routes(health: ["listener 'game-relay': 0 of 1 addresses bound"]).respond(method: .GET, uri: "/healthz?listener=dns")
        XCTAssertEqual(healthyDNS.status, .ok)
        XCTAssertEqual(healthyDNS.body, "ok\n")
    }

    func testUnknownListenerIs404WithTheKnownNames() async {
        let r = await routes().respond(method: .GET, uri: "/healthz?listener=nope")
        XCTAssertEqual(r.status, .notFound)
        XCTAssertEqual(r.body, "no listener named 'nope'; listeners: dns, game-relay\n")
    }

    func testDrainingFailsEveryHealthCheckAndSaysWhy() async {
        for uri in ["/healthz", "/healthz?listener=dns"] {
            let r = await routes(draining: true).respond(method: .GET, uri: uri)
            XCTAssertEqual(r.status, .serviceUnavailable, uri)
            XCTAssertTrue(r.body.hasPrefix("draining: "), "\(uri): \(r.body)")
            XCTAssertEqual(r.body.split(separator: "\n").count, 1, r.body)
        }
        // The page's badge is /healthz.
        let page = await routes(draining: true).respond(method: .GET, uri: "/")
        XCTAssertTrue(page.body.contains("draining: this instance takes no new flows"), page.body)
        let status = await routes(draining: true).respond(method: .GET, uri: "/status")
        XCTAssertTrue(status.body.contains("\"draining\": true"), status.body)
        let metrics = await routes(draining: true).respond(method: .GET, uri: "/metrics")
        XCTAssertTrue(metrics.body.contains("\nudprelayd_draining 1\n"), metrics.body)
        let notDraining = await routes().respond(method: .GET, uri: "/metrics")
        XCTAssertTrue(notDraining.body.contains("\nudprelayd_draining 0\n"), notDraining.body)
    }
}
