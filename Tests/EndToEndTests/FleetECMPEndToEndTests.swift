import Foundation
import TestSupport
import XCTest

/// Three real instances behind equal-cost multipath routing, in network namespaces the script
/// creates and removes (Tests/EndToEndTests/fleet_ecmp.py): 200 clients keep their upstream
/// while one instance is drained and withdrawn and another is killed and withdrawn.
final class FleetECMPEndToEndTests: XCTestCase {
    func testClientsKeepTheirUpstreamAcrossDrainWithdrawalAndKill() throws {
        try requireRoot("for network namespaces")
        let script = repositoryRoot.appendingPathComponent("Tests/EndToEndTests/fleet_ecmp.py").path
        // Bounded: the script (only it, by PID) is killed if it hangs; it removes its namespaces.
        let (status, text) = try runCommand(["/usr/bin/python3", script, DaemonProcess.binary.path], timeout: 180)
        print(text, terminator: "")
        XCTAssertEqual(status, 0, text)
        XCTAssertTrue(text.contains("every client kept its upstream"), text)
    }
}
