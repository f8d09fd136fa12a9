import TestSupport
import XCTest

@testable import UDPRelayConfig

/// `upstream = HOST:PORT [weight=N] [drain] [backup], ...`: one syntax, keywords in any case,
/// errors with file:line and the key.
final class UpstreamOptionsTests: XCTestCase, ConfigFileTests {
    func balance(_ upstream: String, algorithm: String? = nil, mode: String = "balance") -> String {
        "[listener a]\nlisten = 127.0.0.1:0\nmode = \(mode)\nupstream = \(upstream)\n" + (algorithm.map { "balance = \($0)\n" } ?? "")
    }

    func testOptionsAreParsedInAnyOrderAndCase() throws {
        let c = try parse(balance("192.0.2.10:53 weight=3, 192.0.2.11:53 DRAIN, dns.example:53 Backup Weight=1000, [2001:db8::1]:53"))
        let u = c.listeners[0].upstreams
        XCTAssertEqual(u.map(\.description), ["192.0.2.10:53", "192.0.2.11:53", "dns.example:53", "[2001:db8::1]:53"])
        XCTAssertEqual(u.map(\.weight), [3, 1, 1000, 1])
        XCTAssertEqual(u.map(\.drain), [false, true, false, false])
        XCTAssertEqual(u.map(\.backup), [false, false, true, false])
        XCTAssertEqual(u[2].optionsText, "weight=1000 backup")
        // Without options nothing changes: the endpoint equals one built without them.
        XCTAssertEqual(
            try parse(balance("192.0.2.1:53, 192.0.2.2:53")).listeners[0].upstreams[0],
            UpstreamEndpoint(host: .address(.v4(0xC000_0201)), port: 53))
    }

    func testBadOptionsNameFileLineAndKey() {
        let cases: [(String, String)] = [
            ("192.0.2.1:53 weight=0, 192.0.2.2:53", "weight must be weight=N with N a whole number from 1 to 1000, got 'weight=0' for 192.0.2.1:53"),
            ("192.0.2.1:53 weight=1001, 192.0.2.2:53", "got 'weight=1001'"),
            ("192.0.2.1:53 weight, 192.0.2.2:53", "got 'weight'"),
            ("192.0.2.1:53 heavy, 192.0.2.2:53", "unknown upstream option 'heavy' after 192.0.2.1:53; options are weight=N (1 to 1000), drain and backup"),
            ("192.0.2.1:53 drain=yes, 192.0.2.2:53", "'drain' takes no value, got 'drain=yes'"),
            ("192.0.2.1:53 drain drain, 192.0.2.2:53", "option 'drain' is given twice for 192.0.2.1:53"),
            ("192.0.2.1:53 192.0.2.2:53", "missing comma between '192.0.2.1:53' and '192.0.2.2:53'"),
            ("192.0.2.1:53 drain, 192.0.2.1:53", "upstream 192.0.2.1:53 is listed twice"),
            ("192.0.2.1:53 drain, 192.0.2.2:53 drain", "every upstream is draining"),
        ]
        for (value, message) in cases {
            let e = errors(balance(value))
            XCTAssertEqual(e.count, 1, value)
            XCTAssertEqual(e.first?.file, "t.ini")
            XCTAssertEqual(e.first?.line, 4, value)
            XCTAssertEqual(e.first?.key, "upstream", value)
            XCTAssertTrue(e.first?.message.contains(message) ?? false, "\(value): \(e.first?.message ?? "")")
        }
    }

    func testOptionsOnlyWhereTheyMeanSomething() {
        let forward = errors(balance("192.0.2.1:53 weight=2", mode: "forward"))
        XCTAssertEqual(
            forward.map(\.description),
            ["t.ini:4: [listener a] upstream: upstream options (192.0.2.1:53 weight=2) are only valid with mode = balance, not with mode = forward"])
        let mirror = errors(balance("192.0.2.1:53, 192.0.2.2:53 backup", mode: "mirror"))
        XCTAssertTrue(mirror.first?.message.contains("only valid with mode = balance, not with mode = mirror") ?? false, "\(mirror)")
        let first = errors(balance("192.0.2.1:53 weight=3, 192.0.2.2:53", algorithm: "first"))
        XCTAssertTrue(first.first?.message.contains("weight=3 of 192.0.2.1:53 has no effect with balance = first") ?? false, "\(first)")
        // drain and backup mean something to first.
        XCTAssertNoThrow(try parse(balance("192.0.2.1:53 drain, 192.0.2.2:53 backup", algorithm: "first")))
    }

    /// A reload that adds `drain` changes the listener (its upstream table is rebuilt with it).
    func testAddingDrainChangesTheListener() throws {
        let before = try parse(balance("192.0.2.1:53, 192.0.2.2:53")).listeners
        let after = try parse(balance("192.0.2.1:53, 192.0.2.2:53 drain")).listeners
        XCTAssertEqual(ListenerChanges(from: before, to: after).changed, ["a"])
    }
}
