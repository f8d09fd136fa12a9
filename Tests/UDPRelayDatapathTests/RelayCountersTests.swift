import Foundation
import Logging
import TestSupport
import UDPRelayConfig
import XCTest

@testable import UDPRelayDatapath

#if canImport(Glibc)
import Glibc
#endif

/// What relay listeners count, as `/status`, `/metrics` and the page show it.
final class RelayCountersTests: XCTestCase, ConfigFileTests {
    func start(_ text: String, name: String) throws -> (Datapath, Listener) {
        let datapath = try Datapath(
            configuration: try configuration(text),
            logger: Logger(label: "test"))
        datapath.startBlocking()
        return (datapath, try XCTUnwrap(datapath.listener(named: name)))
    }

    /// A mirror listener's `sent` bytes were 0 while its upstreams showed them.
    func testMirrorCountsTheBytesItSends() throws {
        let a = try UpstreamServer(reply: nil), b = try UpstreamServer(reply: nil)
        let (datapath, mirror) = try start(
            """
            [listener m]
            listen = 127.0.0.1:0
            mode = mirror
            workers = 2
            upstream = \(a.address), \(b.address)
            """, name: "m")
        defer { datapath.stopBlocking() }
        let client = try UDPClient()
        for size in [10, 20, 30] { client.send(payload(size, seed: UInt64(size)), to: mirror.boundAddresses[0]) }
        XCTAssertEqual(a.waitForCount(3), 3)
        XCTAssertEqual(b.waitForCount(3), 3)
        XCTAssertTrue(waitUntil(5) { mirror.counters()[.sentPackets] == 6 })
        XCTAssertEqual(mirror.counters()[.sentBytes], 2 * 60, "every copy's bytes")
        let upstreamBytes = mirror.upstreamSnapshots().map { $0.counters[.sentBytes] }
        XCTAssertEqual(upstreamBytes, [60, 60])
        // The per-worker figures add up to the listener's.
        XCTAssertEqual(mirror.workers.map { $0.counters.value(.sentBytes) }.reduce(0, +), 120)
    }
}
