import UDPRelayConfig
import XCTest

final class ListenerChangesTests: XCTestCase {
    func parse(_ text: String) throws -> [ListenerConfiguration] {
        try ConfigLoader.parse(text, file: "t.ini").listeners
    }

    func testClassifiesListenersByNameAndSettings() throws {
        let old = try parse(
            """
            [listener same]
            listen = 127.0.0.1:7001
            [listener tuned]
            listen = 127.0.0.1:7002
            [listener gone]
            listen = 127.0.0.1:7003
            """)
        let new = try parse(
            """
            ; a comment moves every section down a line: that alone is no change
            [listener new]
            listen = 127.0.0.1:7004
            [listener tuned]
            listen = 127.0.0.1:7002
            max_datagram = 1500
            [listener same]
            listen = 127.0.0.1:7001
            """)
        let c = ListenerChanges(from: old, to: new)
        XCTAssertEqual(c, ListenerChanges(unchanged: ["same"], changed: ["tuned"], removed: ["gone"], added: ["new"]))
        XCTAssertFalse(c.isEmpty)
        XCTAssertEqual(c.summary, "unchanged=1 (same) changed=1 (tuned) removed=1 (gone) added=1 (new)")
    }

    func testIdenticalFilesAreNoChange() throws {
        let text = "[listener a]\nlisten = 127.0.0.1:7001, [::1]:7001\n[listener b]\nlisten = 0.0.0.0:0\n"
        let c = ListenerChanges(from: try parse(text), to: try parse(text))
        XCTAssertTrue(c.isEmpty)
        XCTAssertEqual(c.unchanged, ["a", "b"])
    }

    func testAnyKeyCountsAsAChange() throws {
        let base = "[listener a]\nlisten = 127.0.0.1:7001\n"
        for extra in ["listen = 127.0.0.1:7001, [::1]:7001", "rcvbuf = 64KiB", "sndbuf = 64KiB", "max_datagram = 100"] {
            let edited = extra.hasPrefix("listen") ? "[listener a]\n\(extra)\n" : base + extra + "\n"
            XCTAssertEqual(ListenerChanges(from: try parse(base), to: try parse(edited)).changed, ["a"], extra)
        }
    }

    func testChangingWorkersChangesTheListener() throws {
        let old = try parse("[listener a]\nlisten = 127.0.0.1:7001\n[listener b]\nlisten = 127.0.0.1:7002\nworkers = 2\n")
        let new = try parse("[listener a]\nlisten = 127.0.0.1:7001\nworkers = 4\n[listener b]\nlisten = 127.0.0.1:7002\nworkers = 2\n")
        XCTAssertEqual(ListenerChanges(from: old, to: new), ListenerChanges(unchanged: ["b"], changed: ["a"]))
        // Writing the default out is no change; `auto` is a change even where it means 1 CPU.
        let explicit = try parse("[listener a]\nlisten = 127.0.0.1:7001\nworkers = 1\n")
        XCTAssertTrue(ListenerChanges(from: [old[0]], to: explicit).isEmpty)
        let auto = try parse("[listener a]\nlisten = 127.0.0.1:7001\nworkers = auto\n")
        XCTAssertEqual(ListenerChanges(from: [old[0]], to: auto).changed, ["a"])
    }

    func testChangingAPortRangeRebuildsOnlyThatListener() throws {
        let base = "[listener r]\nlisten = 127.0.0.1:5000-5099\n[listener s]\nlisten = 127.0.0.1:7001\n"
        XCTAssertTrue(ListenerChanges(from: try parse(base), to: try parse(base)).isEmpty)
        for edited in ["127.0.0.1:5000-5100", "127.0.0.1:5001-5099", "127.0.0.2:5000-5099", "127.0.0.1:5000-5099, [::1]:5000-5099"] {
            let new = try parse("[listener r]\nlisten = \(edited)\n[listener s]\nlisten = 127.0.0.1:7001\n")
            XCTAssertEqual(ListenerChanges(from: try parse(base), to: new), ListenerChanges(unchanged: ["s"], changed: ["r"]), edited)
        }
        // The same ports spelt out one by one are the same listener: nothing to rebuild.
        let spelt = (5000...5099).map { "127.0.0.1:\($0)" }.joined(separator: ", ")
        let same = try parse("[listener r]\nlisten = \(spelt)\n[listener s]\nlisten = 127.0.0.1:7001\n")
        XCTAssertTrue(ListenerChanges(from: try parse(base), to: same).isEmpty)
    }
}
