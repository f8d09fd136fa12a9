import TestSupport
import XCTest

@testable import UDPRelayConfig

/// Listener keys that tune the datapath: `busy_poll`, `workers`, `udp_gso`.
final class DatapathKeysTests: XCTestCase, ConfigFileTests {
    func testMicrosecondDurations() throws {
        XCTAssertEqual(try Values.duration("50us"), .microseconds(50))
        XCTAssertEqual(try Values.duration("0us", allowZero: true), .zero)
        XCTAssertEqual(try Values.duration("1500us"), .microseconds(1500))
        XCTAssertThrowsError(try Values.duration("0us"))
    }

    func testBusyPollDefaultAndValues() throws {
        XCTAssertEqual(try parse("[listener a]\nlisten = 127.0.0.1:9\n").listeners[0].busyPoll, Defaults.busyPoll)
        XCTAssertEqual(Defaults.busyPoll, .zero)
        let c = try parse(
            """
            [listener a]
            listen = 127.0.0.1:9
            busy_poll = 0
            [listener b]
            listen = 127.0.0.1:10
            busy_poll = 200us
            [listener c]
            listen = 127.0.0.1:11
            busy_poll = 10ms
            """)
        XCTAssertEqual(c.listeners.map(\.busyPoll), [.zero, .microseconds(200), .milliseconds(10)])
    }

    func testBusyPollForRelaysButNotMirror() throws {
        let c = try parse("[listener a]\nlisten = 127.0.0.1:9\nmode = forward\nupstream = 127.0.0.1:53\nbusy_poll = 1ms\n")
        XCTAssertEqual(c.listeners[0].busyPoll, .milliseconds(1))
        let e = errors("[listener a]\nlisten = 127.0.0.1:9\nmode = mirror\nupstream = 127.0.0.1:53\nbusy_poll = 1ms\n")
        XCTAssertEqual(e.map(\.line), [5])
        XCTAssertTrue(e[0].message.contains("only valid with mode = echo|forward|balance"), e[0].message)
    }

    func testBusyPollOutOfRange() {
        let e = errors("[listener a]\nlisten = 127.0.0.1:9\nbusy_poll = 11ms\n[listener b]\nlisten = 127.0.0.1:10\nbusy_poll = fast\n")
        XCTAssertEqual(e.map(\.line), [3, 6])
        XCTAssertEqual(e.map(\.key), ["busy_poll", "busy_poll"])
        XCTAssertTrue(e[0].message.contains("at most 10ms"), e[0].message)
        XCTAssertTrue(e[1].message.contains("expected a duration"), e[1].message)
    }

    func testWorkersDefaultNumbersAndAuto() throws {
        XCTAssertEqual(try parse("[listener a]\nlisten = 127.0.0.1:9\n").listeners[0].workers, .count(1))
        XCTAssertEqual(Defaults.workers, .count(1))
        let c = try parse(
            """
            [listener a]
            listen = 127.0.0.1:9
            workers = 1
            [listener b]
            listen = 127.0.0.1:10
            workers = 64
            [listener c]
            listen = 127.0.0.1:11
            workers = auto
            [listener d]
            listen = 127.0.0.1:12
            mode = forward
            upstream = 127.0.0.1:53
            workers = AUTO
            [listener e]
            listen = 127.0.0.1:13
            mode = mirror
            upstream = 127.0.0.1:53
            workers = 4
            """)
        XCTAssertEqual(c.listeners.map(\.workers), [.count(1), .count(64), .auto, .auto, .count(4)])
        XCTAssertEqual(c.listeners.map(\.workers.description), ["1", "64", "auto", "auto", "4"])
    }

    func testWorkersOutOfRangeAndNotANumberAreErrorsWithFileAndLine() {
        let e = errors(
            """
            [listener a]
            listen = 127.0.0.1:9
            workers = 0
            [listener b]
            listen = 127.0.0.1:10
            workers = 65
            [listener c]
            listen = 127.0.0.1:11
            workers = many
            [listener d]
            listen = 127.0.0.1:12
            workers = -2
            """)
        XCTAssertEqual(e.map(\.line), [3, 6, 9, 12])
        XCTAssertEqual(e.map(\.key), ["workers", "workers", "workers", "workers"])
        XCTAssertEqual(e.map(\.section), ["listener a", "listener b", "listener c", "listener d"])
        XCTAssertEqual(e[0].description, "t.ini:3: [listener a] workers: expected a whole number from 1 to 64 or 'auto', got '0'")
        XCTAssertTrue(e[2].message.hasSuffix("got 'many'"), e[2].message)
    }

    func testWorkersRepeatedOrEmptyIsAnError() {
        let e = errors("[listener a]\nlisten = 127.0.0.1:9\nworkers = 2\nworkers = 3\n[listener b]\nlisten = 127.0.0.1:10\nworkers =\n")
        XCTAssertEqual(e.map(\.line), [4, 7])
        XCTAssertTrue(e[0].message.contains("repeated key"), e[0].message)
        XCTAssertTrue(e[1].message.contains("missing value"), e[1].message)
    }

    func testUDPGSODefaultsOnAndTakesABoolean() throws {
        let c = try parse(
            """
            [listener a]
            listen = 127.0.0.1:9
            [listener b]
            listen = 127.0.0.1:10
            udp_gso = no
            [listener c]
            listen = 127.0.0.1:11
            mode = mirror
            upstream = 127.0.0.1:12
            udp_gso = yes
            """)
        XCTAssertEqual(c.listeners.map(\.segmentation), [true, false, true])
        let e = errors("[listener a]\nlisten = 127.0.0.1:9\n\nudp_gso = sometimes\n")
        XCTAssertEqual(e.map(\.line), [4])
        XCTAssertEqual(e.map(\.key), ["udp_gso"])
        XCTAssertTrue(e[0].description.hasPrefix("t.ini:4: [listener a] udp_gso: "), e[0].description)
    }
}
