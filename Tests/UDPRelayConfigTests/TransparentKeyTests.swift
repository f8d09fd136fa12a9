import TestSupport
import XCTest

@testable import UDPRelayConfig

/// `transparent = yes|no` on the session listeners (forward, balance).
final class TransparentKeyTests: XCTestCase, ConfigFileTests {
    func testOffByDefaultAndYesInForwardAndBalance() throws {
        try XCTSkipUnless(getuid() == 0, "the self-test of transparent = yes needs CAP_NET_ADMIN (run as root)")
        let c = try parse(
            """
            [listener e]
            listen = 127.0.0.1:9
            [listener f]
            listen = 127.0.0.1:10
            mode = forward
            upstream = 127.0.0.1:53
            transparent = yes
            [listener b]
            listen = [::1]:11
            mode = balance
            upstream = [::1]:53, [::1]:54
            transparent = Yes
            [listener o]
            listen = 127.0.0.1:13
            mode = forward
            upstream = 127.0.0.1:53
            transparent = no
            """)
        XCTAssertEqual(c.listeners.map(\.transparent), [false, true, true, false])
        XCTAssertEqual(Defaults.transparent, false)
    }

    func testEchoAndMirrorListenersAreErrorsNamingFileLineAndKey() {
        let e = errors(
            "[listener a]\nlisten = 127.0.0.1:9\nmode = echo\ntransparent = yes\n"
                + "[listener m]\nlisten = 127.0.0.1:10\nmode = mirror\nupstream = 127.0.0.1:53\ntransparent = yes\n")
        XCTAssertEqual(
            e.map(\.description),
            [
                "t.ini:4: [listener a] transparent: only valid with mode = forward|balance, not with mode = echo",
                "t.ini:9: [listener m] transparent: only valid with mode = forward|balance, not with mode = mirror",
            ])
    }

    func testNotABooleanIsAnError() {
        let e = errors("[listener a]\nlisten = 127.0.0.1:9\nmode = forward\nupstream = 127.0.0.1:53\ntransparent = maybe\n")
        XCTAssertEqual(e.map(\.line), [5])
        XCTAssertEqual(e.map(\.key), ["transparent"])
    }

    func testChangingItRebuildsTheListenerAtReload() throws {
        try XCTSkipUnless(getuid() == 0, "the self-test of transparent = yes needs CAP_NET_ADMIN (run as root)")
        let text = "[listener f]\nlisten = 127.0.0.1:10\nmode = forward\nupstream = 127.0.0.1:53\n"
        let before = try parse(text).listeners
        let after = try parse(text + "transparent = yes\n").listeners
        XCTAssertEqual(ListenerChanges(from: before, to: after).changed, ["f"])
    }
}
