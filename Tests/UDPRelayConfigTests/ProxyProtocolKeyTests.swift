import TestSupport
import XCTest

@testable import UDPRelayConfig

/// `proxy_protocol = v2|off` on the relay listeners.
final class ProxyProtocolKeyTests: XCTestCase, ConfigFileTests {
    func testOffByDefaultAndV2InEveryRelayMode() throws {
        let c = try parse(
            """
            [listener e]
            listen = 127.0.0.1:9
            [listener f]
            listen = 127.0.0.1:10
            mode = forward
            upstream = 127.0.0.1:53
            proxy_protocol = v2
            [listener b]
            listen = 127.0.0.1:11
            mode = balance
            upstream = 127.0.0.1:53, 127.0.0.1:54
            proxy_protocol = V2
            [listener m]
            listen = 127.0.0.1:12
            mode = mirror
            upstream = 127.0.0.1:53
            proxy_protocol = v2
            [listener o]
            listen = 127.0.0.1:13
            mode = forward
            upstream = 127.0.0.1:53
            proxy_protocol = off
            """)
        XCTAssertEqual(c.listeners.map(\.proxyProtocol), [.off, .v2, .v2, .v2, .off])
        XCTAssertEqual(Defaults.proxyProtocol, .off)
    }

    func testEchoListenerIsAnErrorNamingFileLineAndKey() {
        let e = errors("[listener a]\nlisten = 127.0.0.1:9\nmode = echo\nproxy_protocol = v2\n")
        XCTAssertEqual(e.map(\.description), ["t.ini:4: [listener a] proxy_protocol: only valid with mode = forward|balance|mirror, not with mode = echo"])
    }

    func testUnknownVersionIsAnError() {
        let e = errors("[listener a]\nlisten = 127.0.0.1:9\nmode = forward\nupstream = 127.0.0.1:53\nproxy_protocol = v1\n")
        XCTAssertEqual(e.map(\.line), [5])
        XCTAssertEqual(e.map(\.key), ["proxy_protocol"])
        XCTAssertTrue(e[0].message.contains("expected one of off|v2, got 'v1'"), e[0].message)
    }

    func testChangingItRebuildsTheListenerAtReload() throws {
        let text = "[listener f]\nlisten = 127.0.0.1:10\nmode = forward\nupstream = 127.0.0.1:53\n"
        let before = try parse(text).listeners
        let after = try parse(text + "proxy_protocol = v2\n").listeners
        XCTAssertEqual(ListenerChanges(from: before, to: after).changed, ["f"])
    }
}
