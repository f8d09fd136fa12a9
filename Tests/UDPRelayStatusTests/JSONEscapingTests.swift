import Foundation
import XCTest

@testable import UDPRelayStatus

/// JSON strings are written byte by byte into the document's buffer: quotes, backslashes and
/// control characters escaped, everything else (multi-byte characters included) copied, so any
/// parser reads back exactly the string that went in.
final class JSONEscapingTests: XCTestCase {
    func testEscapesWhatJSONRequiresAndNothingElse() {
        XCTAssertEqual(Format.json("dns-1"), "\"dns-1\"")
        XCTAssertEqual(Format.json("[2001:db8::1]:53"), "\"[2001:db8::1]:53\"")
        XCTAssertEqual(Format.json("a\"b\\c"), "\"a\\\"b\\\\c\"")
        XCTAssertEqual(Format.json("l1\nl2\r\t\u{1}\u{1f}"), "\"l1\\nl2\\r\\t\\u0001\\u001f\"")
        XCTAssertEqual(Format.json("é ✓ 🛰"), "\"é ✓ 🛰\"")
        XCTAssertEqual(Format.json(""), "\"\"")
    }

    func testAParserReadsBackEveryString() throws {
        let strings = ["plain", "quote \" and \\ slash", "ctl \u{0}\u{7}\u{1b}[0m", "multi ü 中 🎮", "\u{7f}del", "tail\\"]
        let doc = JSON.object(strings.enumerated().map { ("k\($0.offset)", JSON.string($0.element)) }).serialized()
        let parsed = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(doc.utf8)) as? [String: String])
        for (i, s) in strings.enumerated() { XCTAssertEqual(parsed["k\(i)"], s) }
    }
}
