import CUDPRelay
import Logging
import TestSupport
import UDPRelayConfig
import XCTest

@testable import UDPRelayDatapath

#if canImport(Glibc)
import Glibc
#endif

final class ProbeTests: XCTestCase {
    func testProbeReportsAWedgedQueueAndPassesHealthyOnes() async throws {
        let config = try ConfigLoader.parse("[listener a]\nlisten = 127.0.0.1:0\n[listener b]\nlisten = 127.0.0.1:0\n", file: "t.ini")
        let datapath = try Datapath(configuration: config, logger: Logger(label: "test"))
        await datapath.start()
        defer { datapath.stopBlocking() }
        // Healthy queues answer at once; the timeouts allow for ThreadSanitizer on a loaded
        // machine (a wedged queue never answers, whatever the timeout).
        let healthy = await datapath.probe(timeout: .seconds(10))
        XCTAssertEqual(healthy, [])
        let release = DispatchSemaphore(value: 0)
        datapath.listener(named: "b")!.workers[0].queue.async { release.wait() }  // wedge b
        let problems = await datapath.probe(timeout: .seconds(2))
        release.signal()
        XCTAssertEqual(problems.count, 1)
        XCTAssertTrue(problems[0].hasPrefix("listener 'b' queue for 127.0.0.1:"), problems.first ?? "")
    }
}
