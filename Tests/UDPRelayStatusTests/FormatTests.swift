import Foundation
import NIOHTTP1
import UDPRelayConfig
import XCTest

@testable import UDPRelayStatus

final class FormatTests: XCTestCase {
    func testDatesAndNumbers() {
        XCTAssertEqual(Format.rfc3339(0), "1970-01-01T00:00:00.000Z")
        XCTAssertEqual(Format.rfc3339(1_795_635_285.2026), "2026-11-25T19:34:45.202Z")
        XCTAssertEqual(Format.httpDate(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT")
        XCTAssertEqual(Format.fixed(3.14159, 2), "3.14")
        XCTAssertEqual(Format.fixed(-0.5, 1), "-0.5")
        XCTAssertEqual(Format.si(950), "950")
        XCTAssertEqual(Format.si(12_345), "12.3k")
        XCTAssertEqual(Format.si(4_560_000), "4.56M")
        XCTAssertEqual(Format.bytes(512), "512 B")
        XCTAssertEqual(Format.bytes(1536), "1.50 KiB")
        XCTAssertEqual(Format.grouped(1_234_567), "1\u{202F}234\u{202F}567")
        XCTAssertEqual(Format.duration(3725), "1h 02m")
        XCTAssertEqual(Format.number(1795600000.25), "1795600000.25")
        XCTAssertEqual(Format.number(3), "3")
    }

    func testQueryDecoding() throws {
        let (path, query) = try XCTUnwrap(RequestTarget.split("/status?listener=game%2Drelay&x"))
        XCTAssertEqual(path, "/status")
        XCTAssertEqual(query.map { "\($0.0)=\($0.1)" }, ["listener=game-relay", "x="])
        XCTAssertEqual(RequestTarget.split("http://example/metrics")?.0, "/metrics")
        XCTAssertNil(RequestTarget.split("*"))
        XCTAssertNil(RequestTarget.split("/status?listener=%zz"))
    }
}
