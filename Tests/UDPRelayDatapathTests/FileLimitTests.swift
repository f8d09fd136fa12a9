import Logging
import XCTest

@testable import UDPRelayDatapath

#if canImport(Glibc)
import Glibc
#endif

/// The open-file limit relay sessions need.
final class FileLimitTests: XCTestCase {
    func limits() -> rlimit {
        var rl = rlimit()
        getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &rl)
        return rl
    }

    func testSoftLimitIsRaisedToTheHardLimit() throws {
        let before = limits()
        guard before.rlim_max > 1024 else { throw XCTSkip("hard limit \(before.rlim_max): nothing to raise") }
        defer {
            var restore = before
            setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &restore)
        }
        var low = before
        low.rlim_cur = 1024  // a default soft limit
        XCTAssertEqual(setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &low), 0)
        // Needs a little more than the soft limit: the daemon takes all the hard limit allows,
        // not just that, so later listeners and reloads find room too.
        let limit = FileLimit.ensure(2048, listener: "t", logger: Logger(label: "test"))
        XCTAssertEqual(limits().rlim_cur, before.rlim_max)
        XCTAssertEqual(limit, UInt64(before.rlim_max))
    }
}
