import Foundation
import Logging
import TestSupport
import XCTest

@testable import UDPRelaySystemd

#if canImport(Glibc)
import Glibc
#endif

final class JournalTests: XCTestCase {
    func testJournalStreamMatchesTheDescriptor() throws {
        let fd = open("/dev/null", O_WRONLY)
        defer { close(fd) }
        var st = stat()
        XCTAssertEqual(fstat(fd, &st), 0)
        XCTAssertTrue(Journal.matches(journalStream: "\(st.st_dev):\(st.st_ino)", fd: fd))
        XCTAssertFalse(Journal.matches(journalStream: "\(st.st_dev):\(st.st_ino + 1)", fd: fd))
        XCTAssertFalse(Journal.matches(journalStream: "garbage", fd: fd))
    }

    func testPrioritiesAndFieldNames() {
        XCTAssertEqual(Journal.priority(.debug), 7)
        XCTAssertEqual(Journal.priority(.info), 6)
        XCTAssertEqual(Journal.priority(.notice), 5)
        XCTAssertEqual(Journal.priority(.warning), 4)
        XCTAssertEqual(Journal.priority(.error), 3)
        XCTAssertEqual(Journal.priority(.critical), 2)
        XCTAssertEqual(Journal.fieldName("listener.address"), "UDPRELAYD_LISTENER_ADDRESS")
        XCTAssertEqual(Journal.shortFields["listener.name"], "LISTENER")
        XCTAssertEqual(Journal.shortFields["peer.address"], "PEER")
    }
}
