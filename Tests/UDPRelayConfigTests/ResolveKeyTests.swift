import TestSupport
import XCTest

@testable import UDPRelayConfig

/// `resolve = ipv4|ipv6|any`: which addresses of an upstream hostname become upstreams.
final class ResolveKeyTests: XCTestCase, ConfigFileTests {
    func listener(_ extra: String, mode: String = "balance") -> String {
        "[listener a]\nlisten = 127.0.0.1:0\nmode = \(mode)\nupstream = dns.example:53, 192.0.2.2:53\n\(extra)"
    }

    func testDefaultIsAnyAndEveryValueParses() throws {
        XCTAssertEqual(try parse(listener("")).listeners[0].resolveFamily, .any)
        XCTAssertEqual(try parse(listener("resolve = ipv4\n")).listeners[0].resolveFamily, .ipv4)
        XCTAssertEqual(try parse(listener("resolve = IPv6\n")).listeners[0].resolveFamily, .ipv6)
        XCTAssertEqual(try parse(listener("resolve = any\n")).listeners[0].resolveFamily, .any)
        let forward = "[listener a]\nlisten = 127.0.0.1:0\nmode = forward\nupstream = dns.example:53\nresolve = ipv6\n"
        XCTAssertEqual(try parse(forward).listeners[0].resolveFamily, .ipv6)
        let mirror = "[listener a]\nlisten = 127.0.0.1:0\nmode = mirror\nupstream = dns.example:53\nresolve = ipv4\n"
        XCTAssertEqual(try parse(mirror).listeners[0].resolveFamily, .ipv4)
    }

    /// `balance` over one hostname: its addresses are the upstreams. One literal address is
    /// still refused (there is nothing to balance).
    func testBalanceTakesASingleHostname() throws {
        let one = "[listener a]\nlisten = 127.0.0.1:0\nmode = balance\nupstream = dns.example:53\n"
        XCTAssertEqual(try parse(one).listeners[0].upstreams.map(\.description), ["dns.example:53"])
        let literal = errors("[listener a]\nlisten = 127.0.0.1:0\nmode = balance\nupstream = 192.0.2.1:53\n")
        XCTAssertEqual(literal.map(\.line), [4])
        XCTAssertTrue(literal.first?.message.contains("mode = balance needs at least two upstreams") ?? false, "\(literal)")
    }

    func testBadValuesAndPlacesAreRefusedWithFileLineAndKey() {
        let typo = errors(listener("resolve = ipv5\n"))
        XCTAssertEqual(typo.map(\.description), ["t.ini:5: [listener a] resolve: expected one of ipv4|ipv6|any, got 'ipv5' (did you mean 'ipv4'?)"])
        let word = errors(listener("resolve = both\n"))
        XCTAssertEqual(word.count, 1, "\(word)")
        XCTAssertTrue(word.first?.description.hasPrefix("t.ini:5: [listener a] resolve: expected one of ipv4|ipv6|any, got 'both'") ?? false, "\(word)")
        let twice = errors(listener("resolve = ipv4\nresolve = ipv6\n"))
        XCTAssertEqual(twice.count, 1, "\(twice)")
        XCTAssertTrue(twice.first?.description.hasPrefix("t.ini:6:") ?? false, "\(twice)")
        let echo = errors("[listener a]\nlisten = 127.0.0.1:0\nmode = echo\nresolve = ipv4\n")
        XCTAssertEqual(echo.count, 1, "\(echo)")
        XCTAssertTrue(echo.first?.message.contains("only valid with") ?? false, "\(echo)")
        XCTAssertTrue(echo.first?.description.hasPrefix("t.ini:4:") ?? false, "\(echo)")
    }
}
