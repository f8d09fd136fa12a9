import Foundation
import Logging
import TestSupport
import XCTest

@testable import UDPRelaySystemd

#if canImport(Glibc)
import Glibc
#endif

final class StatusLineTests: XCTestCase {
    func testRendersListenersRatesGenerationAndReload() {
        let a = StatusLine.Sample(received: 100, sent: 90, dropped: 10, at: 10)
        let b = StatusLine.Sample(received: 400, sent: 390, dropped: 10, at: 12)
        let rates = StatusLine.rates(from: a, to: b)
        XCTAssertEqual(rates.received, 150)
        var line = StatusLine(listeners: 2, sockets: 3, generation: 1)
        XCTAssertEqual(line.render(rates: rates), "2 listeners (3 sockets), 150 pkt/s in, 150 pkt/s out, 0 drops/s; config gen 1")
        line.generation = 2
        line.lastReload = (ok: true, at: "19:40:01Z", firstError: nil, errorCount: 0)
        XCTAssertEqual(line.render(rates: nil), "2 listeners (3 sockets); config gen 2, reloaded 19:40:01Z")
        line.lastReload = (ok: false, at: "19:41:07Z", firstError: "u.ini:4: [listener a] mode: bad", errorCount: 2)
        XCTAssertEqual(line.render(rates: nil), "2 listeners (3 sockets); config gen 2, RELOAD FAILED 19:41:07Z: u.ini:4: [listener a] mode: bad (+1 more)")
    }

    func testSessionsAreShownForRelayListeners() {
        XCTAssertEqual(
            StatusLine(listeners: 1, sockets: 1, sessions: 3, generation: 1).render(rates: nil),
            "1 listener (1 socket), 3 sessions; config gen 1")
    }

    func testCountersGoingBackwardsAreNotNegativeRates() {
        let r = StatusLine.rates(from: .init(received: 500, sent: 500, dropped: 0, at: 1), to: .init(received: 20, sent: 20, dropped: 0, at: 2))
        XCTAssertEqual(r.received, 0)
        XCTAssertEqual(
            StatusLine(listeners: 1, sockets: 1, generation: 1).render(rates: (0.25, 1234.4, 0)),
            "1 listener (1 socket), 0.2 pkt/s in, 1234 pkt/s out, 0 drops/s; config gen 1")
    }
}
