import Foundation
import NIOHTTP1
import UDPRelayConfig
import XCTest

@testable import UDPRelayStatus

final class AllowListTests: XCTestCase {
    func testMatchesNetworksAndIPv4MappedPeers() throws {
        let allow = AllowList([try CIDR(parsing: "10.0.0.0/8"), try CIDR(parsing: "2001:db8::/32"), try CIDR(parsing: "::1")])
        XCTAssertTrue(allow.allows(IPAddress(literal: "10.1.2.3")!))
        XCTAssertTrue(allow.allows(IPAddress(literal: "::ffff:10.1.2.3")!), "IPv4 peers of a dual-stack socket")
        XCTAssertTrue(allow.allows(IPAddress(literal: "2001:db8::5")!))
        XCTAssertTrue(allow.allows(IPAddress(literal: "::1")!))
        XCTAssertFalse(allow.allows(IPAddress(literal: "127.0.0.1")!))
        XCTAssertFalse(allow.allows(IPAddress(literal: "::ffff:11.0.0.1")!))
        XCTAssertFalse(AllowList([]).allows(IPAddress(literal: "10.0.0.1")!))
    }
}
