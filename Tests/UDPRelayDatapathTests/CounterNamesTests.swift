import Foundation
import TestSupport
import UDPRelayConfig
import XCTest

@testable import UDPRelayDatapath

/// Each counter has one name, from one table, and the lists the log, `/status`, `/metrics` and
/// the page show are derived from it: they are the ones docs/STATUS.md documents.
final class CounterNamesTests: XCTestCase {
    func testEveryCounterHasItsOwnName() {
        let names = Counter.allCases.map(\.name)
        XCTAssertEqual(Set(names).count, names.count, "two counters share a name: \(names)")
        XCTAssertFalse(names.contains(""))
        let upstream = UpstreamCounter.allCases.map(\.name)
        XCTAssertEqual(Set(upstream).count, upstream.count, "two upstream counters share a name: \(upstream)")
    }

    func testTheDropReasonsAreTheDocumentedOnesInTheirOrder() throws {
        let line = try Self.statusDocLine(startingWith: "| `drops` |")
        XCTAssertEqual(Counter.dropCounters.map(\.name), Array(Self.names(in: line).dropFirst()))
        XCTAssertTrue(Counter.dropCounters.allSatisfy { $0.kind == .drop }, "only drops have a reason")
        XCTAssertFalse(Counter.dropCounters.contains(.sessionsCreated))
    }

    func testTheListenerEventsOfEachModeAreTheDocumentedOnes() throws {
        let line = try Self.statusDocLine(startingWith: "| `counters` |")
        let parts = line.components(separatedBy: "relay modes:")
        XCTAssertEqual(parts.count, 2, line)
        let echo = Self.names(in: parts[0].components(separatedBy: "echo:").last!)
        let relay = Self.names(in: parts[1])
        XCTAssertEqual(Counter.events(for: .echo).map(\.name), echo)
        for mode in ListenerMode.allCases where mode.isRelay {
            XCTAssertEqual(Counter.events(for: mode).map(\.name), relay, "\(mode)")
        }
    }

    func testTheUpstreamEventsAreTheDocumentedOnes() throws {
        let line = try Self.statusDocLine(startingWith: "| `upstreams[]` |")
        let list = try XCTUnwrap(line.components(separatedBy: "and `counters` (").last?.components(separatedBy: ")").first)
        XCTAssertEqual(UpstreamCounter.events.map(\.name), Self.names(in: list))
    }

    /// The relay-only session and event counters go into the totals log line of relay
    /// listeners; a counter an echo listener reports too is not among them.
    func testTheRelayTotalsAreTheCountersOnlyRelayListenersReport() {
        let names = Counter.relayCounters.map(\.name)
        XCTAssertTrue(names.contains(Counter.sessionsActive.name))
        XCTAssertTrue(names.contains(Counter.failOpen.name))
        XCTAssertFalse(names.contains(Counter.rateLimitEvictions.name))
        XCTAssertFalse(names.contains(Counter.dropNoSession.name), "drops have their own keys")
        for (name, counter) in Counter.relayCounters { XCTAssertEqual(name, counter.name) }
    }

    static func statusDocLine(startingWith prefix: String) throws -> String {
        let text = try String(contentsOf: repositoryRoot.appendingPathComponent("docs/STATUS.md"), encoding: .utf8)
        return try XCTUnwrap(text.split(separator: "\n").first { $0.hasPrefix(prefix) }.map(String.init), prefix)
    }

    /// The `name`s in backquotes, in order.
    static func names(in text: String) -> [String] {
        text.split(separator: "`", omittingEmptySubsequences: false).enumerated()
            .filter { $0.offset % 2 == 1 }.map { String($0.element) }
    }
}
