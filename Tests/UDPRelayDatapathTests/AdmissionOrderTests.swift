import Foundation
import Logging
import TestSupport
import UDPRelayConfig
import XCTest

@testable import UDPRelayDatapath

/// Every mode applies the same admission policy, in the same order (`SocketWorker.admits`).
final class AdmissionOrderTests: XCTestCase {
    func testATooLargeDatagramFromADeniedSourceCountsAsDeniedInEveryMode() throws {
        let upstream = try UDPClient()
        var text = "[status]\nlisten = off\n"
        for mode in ["echo", "forward", "mirror"] {
            text += "[listener \(mode)]\nlisten = 127.0.0.1:0\nmax_datagram = 100\ndeny = 127.0.0.0/8\n"
            if mode != "echo" { text += "mode = \(mode)\nupstream = \(upstream.localAddress)\n" }
        }
        let datapath = try Datapath(configuration: try ConfigLoader.parse(text, file: "t.ini"), logger: Logger(label: "test"))
        datapath.startBlocking()
        defer { datapath.stopBlocking() }
        let client = try UDPClient()
        for mode in ["echo", "forward", "mirror"] {
            let listener = try XCTUnwrap(datapath.listener(named: mode))
            client.send([UInt8](repeating: 7, count: 500), to: listener.boundAddresses[0])
            let deadline = Date().addingTimeInterval(10)
            while listener.counters()[.receivedPackets] < 1 && Date() < deadline { usleep(2000) }
            XCTAssertEqual(listener.counters()[.dropDenied], 1, mode)
            XCTAssertEqual(listener.counters()[.dropTooLarge], 0, "\(mode): counted once, as denied")
        }
        XCTAssertNil(upstream.receive(timeout: 0.1), "nothing reaches an upstream")
    }
}
