import Dispatch
import Logging
import XCTest

@testable import UDPRelayConfig
@testable import UDPRelayDatapath

/// The upstream table's snapshot: the `drain`, `backup` and `weight` options as configured, and
/// the live sessions per upstream summed over every worker's counters.
final class UpstreamSessionsGaugeTests: XCTestCase {
    func testSnapshotSumsLiveSessionsOverWorkersAndCarriesTheOptions() throws {
        let lc = ListenerConfiguration(
            name: "r", listen: [SocketAddress(ip: .v4(0x7F00_0001), port: 0)], mode: .balance,
            upstreams: try Values.upstreams("127.0.0.1:9 weight=2, 127.0.0.1:10 drain backup"))
        let table = UpstreamTable(configuration: lc, workers: 2, logger: Logger(label: "test") { _ in SwiftLogNoOpLogHandler() })
        defer {
            let done = DispatchGroup()
            table.stop(done: done)
            done.wait()
        }
        // Worker 0: three sessions on the draining upstream, one of which ends; worker 1: one
        // more there (taken over from a previous listener) and one on the first upstream.
        for _ in 0..<3 { table.counters[0][1].sessionOpened() }
        table.counters[0][1].sessionEnded()
        table.counters[1][1].sessionAdopted()
        table.counters[1][0].sessionOpened()
        let s = table.snapshot()
        XCTAssertEqual(s.map { $0.counters[.sessionsActive] }, [1, 3])
        XCTAssertEqual(s.map { $0.counters[.sessions] }, [1, 3], "an adopted session is not a new one")
        XCTAssertEqual(s.map(\.draining), [false, true])
        XCTAssertEqual(s.map(\.backup), [false, true])
        XCTAssertEqual(s.map(\.weight), [2, 1])
        XCTAssertFalse(UpstreamCounter.events.contains(.sessionsActive), "a gauge, not an event counter")
    }
}
