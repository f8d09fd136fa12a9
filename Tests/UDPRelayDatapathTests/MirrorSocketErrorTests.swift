import Foundation
import Logging
import TestSupport
import UDPRelayConfig
import XCTest

@testable import UDPRelayDatapath

/// The mirror's upstream sockets: what cannot be opened or connected is logged (once a minute
/// per worker), not dropped silently, and the copies for it count as send drops.
final class MirrorSocketErrorTests: XCTestCase, ConfigFileTests {
    func testAnUpstreamSocketThatCannotConnectIsLoggedAndItsCopiesCounted() throws {
        let good = try UpstreamServer(reply: nil)
        let log = CapturedLog()
        // connect(2) to the broadcast address without SO_BROADCAST fails (EACCES); nothing is sent.
        let datapath = try Datapath(
            configuration: try configuration(
                """
                [listener m]
                listen = 127.0.0.1:0
                mode = mirror
                upstream = 255.255.255.255:9, \(good.address)
                """), logger: Logger(label: "test") { _ in log })
        datapath.startBlocking()
        defer { datapath.stopBlocking() }
        let mirror = try XCTUnwrap(datapath.listener(named: "m"))
        XCTAssertTrue(waitUntil(5) { log.lines.contains("warning cannot open mirror socket") }, "\(log.lines)")
        let client = try UDPClient()
        client.send(Array("copy".utf8), to: mirror.boundAddresses[0])
        XCTAssertEqual(good.waitForCount(1), 1)
        XCTAssertTrue(waitUntil(5) { mirror.upstreamSnapshots().first?.counters[.sendDrops] == 1 })
        XCTAssertEqual(log.lines.filter { $0.hasSuffix("mirror socket") }.count, 1, "\(log.lines)")
    }
}
