import Foundation
import Logging
import TestSupport
import UDPRelayConfig
import XCTest

@testable import UDPRelayDatapath

/// Refused datagrams are logged once, then at most once a window with how many were refused in
/// between, and a count that no later refusal carries is written when its window ends: a burst
/// that stops is reported too, not only in the counters.
final class RefusalLogTests: XCTestCase {
    func testFlushReportsWhatNoLineCarriedOnlyOnceTheWindowIsOver() {
        var limiter = LogLimiter(lines: 1, per: .seconds(60))
        let s: UInt64 = 1_000_000_000
        XCTAssertEqual(limiter.admit(now: 10 * s), 0, "the first line")
        XCTAssertNil(limiter.flush(now: 11 * s), "nothing left out yet")
        XCTAssertNil(limiter.admit(now: 12 * s))
        XCTAssertNil(limiter.admit(now: 13 * s))
        XCTAssertEqual(limiter.windowEnd, 70 * s)
        XCTAssertNil(limiter.flush(now: 69 * s), "the window is not over")
        XCTAssertEqual(limiter.flush(now: 70 * s), 2, "the two left out")
        XCTAssertNil(limiter.flush(now: 200 * s), "reported once")
        // The flushed line was the new window's first: the next event in it is left out.
        XCTAssertNil(limiter.admit(now: 71 * s))
        XCTAssertEqual(limiter.admit(now: 131 * s), 1, "and carried by the next window's line")
    }

    func testABurstOfRefusalsThatStopsIsReportedWhenTheWindowEnds() throws {
        let log = MetadataLog()
        var tuning = DatapathTuning()
        tuning.refusalLogInterval = 300_000_000
        let text = "[listener e]\nlisten = 127.0.0.1:0\ndeny = 127.0.0.0/8\n"
        let datapath = try Datapath(
            configuration: try ConfigLoader.parse(text, file: "t.ini"),
            logger: Logger(label: "t") { _ in log }, tuning: tuning)
        datapath.startBlocking()
        defer { datapath.stopBlocking() }
        let listener = try XCTUnwrap(datapath.listener(named: "e"))
        let client = try UDPClient()
        for i in 0..<5 { client.send([UInt8(i)], to: listener.boundAddresses[0]) }
        XCTAssertTrue(waitUntil(5) { listener.counters()[.dropDenied] == 5 }, "all five refused")
        XCTAssertTrue(
            waitUntil(5) { log.lines.contains { $0.hasPrefix("datagrams refused since the last line ") } },
            "the count is written once the window ends, with no further refusal: \(log.lines)")
        let refusals = log.lines.filter { $0.contains("refused") }
        guard refusals.count == 2 else { return XCTFail("one line at once and one with the count: \(refusals)") }
        XCTAssertTrue(refusals[0].hasPrefix("datagram refused ") && refusals[0].contains("refused.since_last=0"), refusals[0])
        XCTAssertTrue(refusals[1].contains("refused.since_last=4") && refusals[1].contains("drop.reason=denied"), refusals[1])
        XCTAssertFalse(refusals[1].contains("peer.address="), "a count of many peers names none")
    }
}

/// Keeps each message with its metadata, sorted (`message key=value ...`).
private final class MetadataLog: LogHandler, @unchecked Sendable {
    // @unchecked: `stored` is guarded by `lock`; the LogHandler value properties are test-only.
    private let lock = NSLock()
    private var stored: [String] = []
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace
    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }
    func log(event: LogEvent) {
        let all = metadata.merging(event.metadata ?? [:]) { $1 }
        let line = "\(event.message) " + all.keys.sorted().map { "\($0)=\(all[$0]!)" }.joined(separator: " ")
        lock.lock()
        stored.append(line)
        lock.unlock()
    }
    var lines: [String] {
        lock.lock()
        defer { lock.unlock() }
        return stored
    }
}
