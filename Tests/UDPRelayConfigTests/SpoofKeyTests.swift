import TestSupport
import XCTest

@testable import UDPRelayConfig

/// `spoof = yes|no` on mirror listeners.
final class SpoofKeyTests: XCTestCase, ConfigFileTests {
    func testOffByDefaultAndYesOnMirrorListeners() throws {
        try XCTSkipUnless(getuid() == 0, "the self-test of spoof = yes needs CAP_NET_RAW (run as root)")
        let c = try parse(
            """
            [listener m]
            listen = 127.0.0.1:9
            mode = mirror
            upstream = 127.0.0.1:2055
            [listener s]
            listen = [::]:10
            mode = mirror
            upstream = 127.0.0.1:2055, [::1]:2055, collector.example:2055
            spoof = yes
            [listener o]
            listen = 127.0.0.1:11
            mode = mirror
            upstream = 127.0.0.1:2055
            spoof = No
            """)
        XCTAssertEqual(c.listeners.map(\.spoof), [false, true, false])
        XCTAssertEqual(Defaults.spoof, false)
    }

    func testOtherModesAreErrorsNamingFileLineAndKey() {
        let e = errors(
            "[listener a]\nlisten = 127.0.0.1:9\nspoof = yes\n"
                + "[listener f]\nlisten = 127.0.0.1:10\nmode = forward\nupstream = 127.0.0.1:53\nspoof = yes\n"
                + "[listener b]\nlisten = 127.0.0.1:11\nmode = balance\nupstream = 127.0.0.1:53, 127.0.0.1:54\nspoof = no\n")
        XCTAssertEqual(
            e.map(\.description),
            [
                "t.ini:3: [listener a] spoof: only valid with mode = mirror, not with mode = echo",
                "t.ini:8: [listener f] spoof: only valid with mode = mirror, not with mode = forward",
                "t.ini:13: [listener b] spoof: only valid with mode = mirror, not with mode = balance",
            ])
    }

    func testNotABooleanIsAnError() {
        let e = errors("[listener m]\nlisten = 127.0.0.1:9\nmode = mirror\nupstream = 127.0.0.1:53\nspoof = maybe\n")
        XCTAssertEqual(e.map(\.line), [5])
        XCTAssertEqual(e.map(\.key), ["spoof"])
    }

    /// A PROXY header inside a spoofed copy would name the client twice, once where no
    /// collector looks for it: the file says which to choose.
    func testWithProxyProtocolIsAnError() {
        let e = errors("[listener m]\nlisten = 127.0.0.1:9\nmode = mirror\nupstream = 127.0.0.1:53\nproxy_protocol = v2\nspoof = yes\n")
        XCTAssertEqual(
            e.map(\.description),
            ["t.ini:6: [listener m] spoof: spoof = yes and proxy_protocol = v2 exclude each other (the collectors already see the client)"])
    }

    func testChangingItRebuildsTheListenerAtReload() throws {
        try XCTSkipUnless(getuid() == 0, "the self-test of spoof = yes needs CAP_NET_RAW (run as root)")
        let text = "[listener m]\nlisten = 127.0.0.1:10\nmode = mirror\nupstream = 127.0.0.1:53\n"
        let before = try parse(text).listeners
        let after = try parse(text + "spoof = yes\n").listeners
        XCTAssertEqual(ListenerChanges(from: before, to: after).changed, ["m"])
    }

    /// A copy is spoofed only to a collector of its client's family: a listener whose clients
    /// can only be of a family no collector has would drop every copy, so the file is refused.
    func testNoCollectorOfTheClientsFamilyIsAnError() {
        let e = errors(
            "[listener v4]\nlisten = 127.0.0.1:9\nmode = mirror\nupstream = [::1]:2055\nspoof = yes\n"
                + "[listener v6]\nlisten = [::1]:10\nmode = mirror\nupstream = 127.0.0.1:2055, 127.0.0.2:2055\nspoof = yes\n")
        XCTAssertEqual(
            e.map(\.description),
            [
                "t.ini:5: [listener v4] spoof: no collector has the family of this listener's clients (clients IPv4, collectors IPv6): "
                    + "every copy would be dropped; add a collector of the clients' family",
                "t.ini:10: [listener v6] spoof: no collector has the family of this listener's clients (clients IPv6, collectors IPv4): "
                    + "every copy would be dropped; add a collector of the clients' family",
            ])
        XCTAssertNil(
            SpoofProbe.familyMismatch(listen: [SocketAddress(ip: .v6(high: 0, low: 0), port: 9)], collectors: [try! UpstreamEndpoint(parsing: "127.0.0.1:1")]),
            "[::] takes IPv4 clients too")
        XCTAssertNil(
            SpoofProbe.familyMismatch(
                listen: [SocketAddress(ip: .v4(0x7F00_0001), port: 9)], collectors: [try! UpstreamEndpoint(parsing: "collector.example:1")]),
            "a hostname may be either")
    }
}
