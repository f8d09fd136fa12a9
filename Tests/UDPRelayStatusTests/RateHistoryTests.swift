import Foundation
import NIOHTTP1
import UDPRelayConfig
import XCTest

@testable import UDPRelayStatus

final class RateHistoryTests: XCTestCase {
    func listener(_ packets: UInt64) -> ListenerStatus {
        ListenerStatus(
            name: "a", mode: "echo", addresses: [], received: Traffic(packets: packets, bytes: packets * 100),
            sent: Traffic(packets: packets, bytes: packets * 100), drops: [DropCount(reason: "too_large", count: packets / 10)])
    }

    func testRatesOverTheWindowFromTheOldestSampleInIt() throws {
        let h = RateHistory(window: 10)
        XCTAssertNil(h.rates(of: listener(0), now: 100), "no history yet")
        for t in 0...30 { h.record([listener(UInt64(t) * 1000)], at: Double(t)) }
        XCTAssertLessThanOrEqual(h.count, 12, "the ring stays small")
        // At t=30.2 the oldest sample within 10.5 s is t=20 (20 000 packets).
        let r = try XCTUnwrap(h.rates(of: listener(30_200), now: 30.2))
        XCTAssertEqual(r.window, 10.2, accuracy: 1e-9)
        XCTAssertEqual(r.receivedPackets, 10_200 / 10.2, accuracy: 1e-6)
        XCTAssertEqual(r.sentBytes, 1_020_000 / 10.2, accuracy: 1e-6)
        XCTAssertEqual(r.drops, 1020 / 10.2, accuracy: 1e-6)
    }

    func testCountersThatWentBackwardsGiveZeroNotNegative() throws {
        let h = RateHistory()
        h.record([listener(5000)], at: 0)
        XCTAssertEqual(try XCTUnwrap(h.rates(of: listener(10), now: 1)).receivedPackets, 0)
    }
}
