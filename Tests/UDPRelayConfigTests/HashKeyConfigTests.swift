import TestSupport
import XCTest

@testable import UDPRelayConfig

/// `hash_key = address|address_port`: what `balance = hash` hashes. The default keeps the
/// choice `hash` made before the key existed.
final class HashKeyConfigTests: XCTestCase, ConfigFileTests {
    func listener(_ extra: String, mode: String = "balance") -> String {
        "[listener a]\nlisten = 127.0.0.1:0\nmode = \(mode)\nupstream = 192.0.2.1:53, 192.0.2.2:53\n\(extra)"
    }

    func testDefaultIsAddressAndPortAndBothValuesParse() throws {
        XCTAssertEqual(try parse(listener("balance = hash\n")).listeners[0].hashKey, .addressPort)
        XCTAssertEqual(try parse(listener("balance = hash\nhash_key = address\n")).listeners[0].hashKey, .address)
        XCTAssertEqual(try parse(listener("balance = hash\nhash_key = Address_Port\n")).listeners[0].hashKey, .addressPort)
    }

    func testBadValuesAndPlacesAreRefusedWithFileLineAndKey() {
        let typo = errors(listener("balance = hash\nhash_key = adress\n"))
        XCTAssertEqual(
            typo.map(\.description), ["t.ini:6: [listener a] hash_key: expected one of address|address_port, got 'adress' (did you mean 'address'?)"])
        let roundRobin = errors(listener("hash_key = address\n"))
        XCTAssertEqual(
            roundRobin.map(\.description),
            ["t.ini:5: [listener a] hash_key: hash_key = address has no effect with balance = round-robin; it sets what balance = hash hashes"])
        let forward = errors("[listener a]\nlisten = 127.0.0.1:0\nmode = forward\nupstream = 192.0.2.1:53\nhash_key = address\n")
        XCTAssertEqual(forward.count, 1, "\(forward)")
        XCTAssertTrue(forward.first?.message.contains("only valid with") ?? false, "\(forward)")
    }
}
