import TestSupport
import XCTest

@testable import UDPRelayConfig

/// `accept_proxy_protocol = v2|no` and `proxy_protocol_from = CIDR list`, on any listener.
final class AcceptProxyProtocolKeyTests: XCTestCase, ConfigFileTests {
    func testOffByDefaultAndV2InEveryMode() throws {
        let c = try parse(
            """
            [listener e]
            listen = 127.0.0.1:9
            accept_proxy_protocol = v2
            proxy_protocol_from = 127.0.0.0/8, ::1/128
            [listener f]
            listen = 127.0.0.1:10
            mode = forward
            upstream = 127.0.0.1:53
            accept_proxy_protocol = V2
            proxy_protocol_from = 10.0.0.0/8
            [listener b]
            listen = 127.0.0.1:11
            mode = balance
            upstream = 127.0.0.1:53, 127.0.0.1:54
            accept_proxy_protocol = v2
            proxy_protocol_from = 2001:db8::/32
            [listener m]
            listen = 127.0.0.1:12
            mode = mirror
            upstream = 127.0.0.1:53
            accept_proxy_protocol = v2
            proxy_protocol_from = 192.0.2.1/32
            [listener o]
            listen = 127.0.0.1:13
            accept_proxy_protocol = no
            [listener d]
            listen = 127.0.0.1:14
            """)
        XCTAssertEqual(c.listeners.map(\.protection.acceptProxyProtocol), [.v2, .v2, .v2, .v2, .off, .off])
        XCTAssertEqual(
            c.listeners[0].protection.proxyProtocolFrom, [try CIDR(parsing: "127.0.0.0/8"), try CIDR(parsing: "::1/128")])
        XCTAssertEqual(c.listeners[2].protection.proxyProtocolFrom, [try CIDR(parsing: "2001:db8::/32")])
        XCTAssertEqual(c.listeners[5].protection.proxyProtocolFrom, [])
    }

    func testAcceptingWithoutSourcesIsAnErrorNamingFileLineAndKey() {
        let e = errors("[listener a]\nlisten = 127.0.0.1:9\n\naccept_proxy_protocol = v2\n")
        XCTAssertEqual(e.map(\.line), [4])
        XCTAssertEqual(e.map(\.key), ["accept_proxy_protocol"])
        XCTAssertTrue(e.first?.description.hasPrefix("t.ini:4: [listener a] accept_proxy_protocol:") ?? false, "\(e)")
        XCTAssertTrue(e.first?.message.contains("proxy_protocol_from") ?? false, "\(e)")
    }

    func testSourcesWithoutAcceptingIsAnError() {
        let e = errors("[listener a]\nlisten = 127.0.0.1:9\nproxy_protocol_from = 127.0.0.1/32\n")
        XCTAssertEqual(e.map(\.line), [3])
        XCTAssertEqual(e.map(\.key), ["proxy_protocol_from"])
    }

    func testBadValuesAreErrors() {
        let version = errors("[listener a]\nlisten = 127.0.0.1:9\naccept_proxy_protocol = v1\nproxy_protocol_from = 127.0.0.1/32\n")
        XCTAssertEqual(version.map(\.line), [3])
        XCTAssertEqual(version.map(\.key), ["accept_proxy_protocol"])
        let cidr = errors("[listener a]\nlisten = 127.0.0.1:9\naccept_proxy_protocol = v2\nproxy_protocol_from = 127.0.0.300/8\n")
        XCTAssertEqual(cidr.map(\.line), [4])
        XCTAssertEqual(cidr.map(\.key), ["proxy_protocol_from"])
    }

    func testChangingItRebuildsTheListenerAtReload() throws {
        let text = "[listener e]\nlisten = 127.0.0.1:9\n"
        let before = try parse(text).listeners
        let after = try parse(text + "accept_proxy_protocol = v2\nproxy_protocol_from = 127.0.0.1/32\n").listeners
        XCTAssertEqual(ListenerChanges(from: before, to: after).changed, ["e"])
    }
}
