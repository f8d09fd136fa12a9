import Logging
import TestSupport
import UDPRelayConfig
import XCTest

@testable import UDPRelayDatapath

/// Workers are numbered once, from the listener's groups: "worker 2 of 2" in the liveness
/// probe, on the page and in `/metrics` all come from `WorkerPlace`.
final class WorkerPlaceTests: XCTestCase, ConfigFileTests {
    func testGroupsAreNumberedFromOnePerAddress() {
        XCTAssertEqual(
            WorkerPlace.places(groupSizes: [2, 3, 1]).map { "\($0.number)/\($0.of)" },
            ["1/2", "2/2", "1/3", "2/3", "3/3", "1/1"])
        XCTAssertEqual(WorkerPlace(number: 2, of: 3).suffix, " (worker 2 of 3)")
        XCTAssertEqual(WorkerPlace(number: 1, of: 1).suffix, "", "a socket alone on its address is not numbered")
    }

    func testTheSnapshotCarriesEachWorkersPlaceInWorkersOrder() throws {
        let datapath = try Datapath(
            configuration: try configuration("[listener a]\nlisten = 127.0.0.1:0, [::1]:0\nworkers = 2\n"),
            logger: Logger(label: "test"))
        defer { datapath.stopBlocking() }
        let a = try XCTUnwrap(datapath.listener(named: "a"))
        let snapshot = try XCTUnwrap(datapath.snapshot().first)
        XCTAssertEqual(snapshot.workers.map(\.address), a.workers.map(\.localAddress))
        XCTAssertEqual(snapshot.workers.map { "\($0.place.number)/\($0.place.of)" }, ["1/2", "2/2", "1/2", "2/2"])
    }
}
