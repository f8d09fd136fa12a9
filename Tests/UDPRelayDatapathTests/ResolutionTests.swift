import Foundation
import Logging
import UDPRelayConfig
import XCTest

@testable import UDPRelayDatapath

#if canImport(Glibc)
import Glibc
#endif

/// Upstream hostnames are looked up all at once and a start waits for them at most
/// `UpstreamTable.resolveWait` (before, getaddrinfo ran in line, one name after
/// another, 10 s per unresolvable name). The resolver is injected: names that hang are
/// simulated, the machine's resolver is never used.
final class ResolutionTests: XCTestCase {
    /// A resolver whose `slow-*` names answer only after `delay` seconds (or when released),
    /// and whose other names answer 192.0.2.1 at once.
    final class SlowResolver: @unchecked Sendable {
        // @unchecked: `calls` is guarded by `lock`; the semaphore is thread-safe.
        let delay: Double
        let release = DispatchSemaphore(value: 0)
        private let lock = NSLock()
        private var calls = 0
        init(delay: Double) { self.delay = delay }

        func resolve(_ host: String, _ port: UInt16) -> Result<[SocketAddress], UpstreamTable.ResolveError> {
            lock.lock()
            calls += 1
            lock.unlock()
            if host.hasPrefix("slow-"), release.wait(timeout: .now() + delay) == .timedOut {
                return .failure(UpstreamTable.ResolveError("Temporary failure in name resolution"))
            }
            return .success([SocketAddress(ip: .v4(0xC000_0201), port: port)])
        }

        /// Lets every waiting lookup answer now.
        func releaseAll(_ n: Int) { for _ in 0..<n { release.signal() } }
    }

    func table(slow: Int, fast: Int, resolver: SlowResolver, log: CapturedLog) throws -> UpstreamTable {
        let names = (0..<slow).map { "slow-\($0).test:53" } + (0..<fast).map { "fast-\($0).test:53" }
        let lc = ListenerConfiguration(
            name: "r", listen: [SocketAddress(ip: .v4(0x7F00_0001), port: 0)], mode: .balance,
            upstreams: try names.map { try UpstreamEndpoint(parsing: $0) })
        return UpstreamTable(
            configuration: lc, workers: 1, logger: Logger(label: "t") { _ in log },
            resolver: { resolver.resolve($0, $1) })
    }

    func testHangingNamesHoldTheStartAtMostTheBoundAndResolveLater() throws {
        // 12 names that take 30 s each: one after another that was 6 minutes.
        let resolver = SlowResolver(delay: 30)
        let log = CapturedLog()
        let started = Date()
        let t = try table(slow: 12, fast: 4, resolver: resolver, log: log)
        t.awaitInitialResolution()
        let waited = Date().timeIntervalSince(started)
        let bound = Double(UpstreamTable.resolveWait.components.seconds)
        XCTAssertLessThan(waited, bound + 1, "a start waits at most resolveWait")
        XCTAssertGreaterThanOrEqual(waited, bound - 0.1, "and waits that long for names still coming")
        XCTAssertEqual((12..<16).filter { t.address($0) != nil }.count, 4, "what resolved in time is used")
        XCTAssertEqual((0..<12).filter { t.address($0) == nil }.count, 12)
        XCTAssertEqual(t.snapshot().prefix(12).map(\.state), Array(repeating: "unresolved", count: 12))
        XCTAssertEqual(log.lines.filter { $0.contains("not resolved in time") }.count, 12, log.lines.joined(separator: "\n"))
        t.awaitInitialResolution()  // once: not logged again
        XCTAssertEqual(log.lines.filter { $0.contains("not resolved in time") }.count, 12)

        // The lookups go on; when they answer, the upstreams take traffic.
        resolver.releaseAll(12)
        let deadline = Date().addingTimeInterval(5)
        // The address is published before its "upstream resolved" line is logged: wait for both.
        func resolvedLines() -> Int { log.lines.filter { $0.contains("upstream resolved") }.count }
        while ((0..<12).contains(where: { t.address($0) == nil }) || resolvedLines() < 16) && Date() < deadline { usleep(2000) }
        XCTAssertTrue((0..<16).allSatisfy { t.isUp($0, now: 1) }, "every upstream up once resolved")
        XCTAssertEqual(log.lines.filter { $0.contains("upstream resolved") }.count, 16)
    }

    func testManySlowNamesAreLookedUpAtOnce() throws {
        // 64 names of 0.5 s each resolve within the bound (32 s one after another).
        let resolver = SlowResolver(delay: 0.5)
        let log = CapturedLog()
        let started = Date()
        let t = try table(slow: 64, fast: 0, resolver: resolver, log: log)
        t.awaitInitialResolution()
        XCTAssertLessThan(Date().timeIntervalSince(started), Double(UpstreamTable.resolveWait.components.seconds))
        // The script answers a timed-out wait with a failure: each name was tried, in parallel.
        XCTAssertEqual(log.lines.filter { $0.contains("cannot resolve upstream") }.count, 64)
        XCTAssertEqual(log.lines.filter { $0.contains("not resolved in time") }.count, 0)
    }
}
