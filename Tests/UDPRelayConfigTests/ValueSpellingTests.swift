import TestSupport
import XCTest

@testable import UDPRelayConfig

/// One rule for how values are spelled: keywords and units in any case,
/// binary size units with or without `iB`, and every example a message gives is a value the
/// key accepts.
final class ValueSpellingTests: XCTestCase, ConfigFileTests {
    func messages(_ text: String) -> [String] {
        do {
            _ = try ConfigLoader.parse(text, file: "t.ini")
            return []
        } catch {
            return error.errors.map(\.message)
        }
    }

    /// A file in which `key = value` is in a section and mode where the key is valid.
    func file(_ kind: String, _ key: String, _ value: String) -> String {
        let listener = "[listener a]\nlisten = 127.0.0.1:0\n"
        switch (kind, key) {
        case ("daemon", _), ("status", _):
            return "[\(kind)]\n\(key) = \(value)\n" + listener
        case (_, "listen"):
            return "[listener a]\nlisten = \(value)\n"
        case (_, "upstream"):
            return listener + "mode = mirror\nupstream = \(value)\n"
        case (_, "sample"):
            return listener + "mode = mirror\nupstream = 192.0.2.1:53\nsample = \(value)\n"
        case (_, "health_expect"), (_, "health_interval"), (_, "health_fails"):
            return listener + "mode = balance\nupstream = 192.0.2.1:53, 192.0.2.2:53\nhealth_probe = x\n\(key) = \(value)\n"
        case (_, "resolve_interval"), (_, "max_fails"), (_, "fail_timeout"), (_, "health_probe"), (_, "session_timeout"),
            (_, "max_sessions"), (_, "session_max_replies"), (_, "session_log"), (_, "session_log_rate"), (_, "balance"):
            return listener + "mode = balance\nupstream = 192.0.2.1:53, 192.0.2.2:53\n\(key) = \(value)\n"
        case (_, "rate_burst"):
            return listener + "rate_limit = 100/s\nrate_burst = \(value)\n"
        default:
            return listener + "\(key) = \(value)\n"
        }
    }

    /// `(key, value)` pairs a message offers as examples ("e.g. A, B", "such as A, B or C";
    /// an example written `k = v` is one for key `k`).
    func examples(in message: String, key: String) -> [(key: String, value: String)] {
        var out: [(String, String)] = []
        var rest = Substring(message)
        while let start = rest.range(of: "e.g. ") ?? rest.range(of: "such as ") {
            var text = rest[start.upperBound...]
            let ends = [text.range(of: ")"), text.range(of: ", got '")].compactMap { $0?.lowerBound }
            if let end = ends.min() { text = text[..<end] }
            rest = rest[start.upperBound...]
            var currentKey = key
            for item in text.replacing(" or ", with: ", ").split(separator: ",").map({ $0.trimmingSpaces() }) where !item.isEmpty {
                if let eq = item.range(of: " = ") {
                    currentKey = String(item[..<eq.lowerBound])
                    out.append((currentKey, String(item[eq.upperBound...])))
                } else {
                    out.append((currentKey, String(item)))
                }
            }
        }
        return out
    }

    func testEveryExampleInAnErrorMessageIsAccepted() throws {
        let tables: [(String, [String])] = [
            ("daemon", Schema.daemon.map(\.name)), ("status", Schema.status.map(\.name)),
            ("listener", Schema.listener.map(\.name)),
        ]
        var checked = 0
        for (kind, keys) in tables {
            for key in keys {
                var found: [(key: String, value: String)] = []
                for bad in ["bogus", "-1", "0", "99999999999999999999", "64KB", "1h", "127.0.0.1", "1/0"] {
                    for message in messages(file(kind, key, bad)) { found += examples(in: message, key: key) }
                }
                for example in found {
                    XCTAssertNoThrow(
                        try parse(file(kind, example.key, example.value)),
                        "[\(kind)] \(key): the example '\(example.key) = \(example.value)' is refused")
                    checked += 1
                }
            }
        }
        // Messages about missing keys carry examples too.
        for message in messages("[listener a]\nlisten = 127.0.0.1:0\nmode = forward\n[listener b]\nrate_burst = 5\n") {
            for example in examples(in: message, key: "") {
                XCTAssertNoThrow(try parse(file("listener", example.key, example.value)), "'\(example.key) = \(example.value)' is refused")
                checked += 1
            }
        }
        XCTAssertGreaterThan(checked, 40, "the test found too few examples to mean anything")
    }

    func testTheMaxDatagramMessageNoLongerOffersAValueItRefuses() {
        let m = messages("[listener a]\nlisten = 127.0.0.1:0\nmax_datagram = 64KiB\n")
        XCTAssertEqual(m, ["expected a size from 1 to 65535 bytes (e.g. 1400, 9000, 63KiB), got '64KiB'"])
        XCTAssertEqual(
            messages("[listener a]\nlisten = 127.0.0.1:0\nbusy_poll = 1s\n"),
            ["must be at most 10ms, got '1s'"])
        XCTAssertEqual(
            messages("[listener a]\nlisten = 127.0.0.1:0\nbusy_poll = soon\n"),
            ["expected a duration such as 0, 50us or 1ms, got 'soon'"])
    }

    func testKeywordsAndUnitsAreCaseInsensitiveEverywhere() throws {
        let c = try parse(
            """
            [daemon]
            log_level = Warning
            [status]
            listen = OFF
            [listener a]
            listen = 127.0.0.1:0
            mode = Balance
            upstream = 192.0.2.1:53, 192.0.2.2:53
            balance = Round-Robin
            max_datagram = 63kib
            rcvbuf = 4m
            sndbuf = 64K
            session_timeout = 30S
            fail_timeout = 250MS
            resolve_interval = 1M
            busy_poll = 50US
            workers = AUTO
            udp_gso = No
            loop_guard = TRUE
            rate_limit = 1000/S
            rate_limit_total = 60/M
            deny_source_ports = NONE
            health_probe = 0X0D0A
            """)
        XCTAssertEqual(c.daemon.logLevel, .warning)
        XCTAssertNil(c.status.listen)
        let l = c.listeners[0]
        XCTAssertEqual(l.mode, .balance)
        XCTAssertEqual(l.balance, .roundRobin)
        XCTAssertEqual(l.maxDatagram, 63 * 1024)
        XCTAssertEqual(l.receiveBuffer, 4 << 20)
        XCTAssertEqual(l.sendBuffer, 64 << 10)
        XCTAssertEqual(l.sessions.timeout, .seconds(30))
        XCTAssertEqual(l.health.failTimeout, .milliseconds(250))
        XCTAssertEqual(l.resolveInterval, .seconds(60))
        XCTAssertEqual(l.busyPoll, .microseconds(50))
        XCTAssertEqual(l.workers, .auto)
        XCTAssertEqual(l.segmentation, false)
        XCTAssertEqual(l.protection.rateLimit, Rate(perSecond: 1000))
        XCTAssertEqual(l.protection.rateLimitTotal, Rate(perSecond: 1))
        XCTAssertEqual(l.protection.denySourcePorts?.isEmpty, true)
        XCTAssertEqual(l.health.probe, [0x0d, 0x0a])
        // Messages quote the value as written.
        XCTAssertEqual(
            messages("[listener a]\nlisten = 127.0.0.1:0\nrate_limit = 10/X\n"),
            ["expected a rate such as 1000/s, 60/m or 3600/h, got '10/X'"])
    }

    func testKBAndMBAreRefusedAsAmbiguous() {
        let m = messages("[listener a]\nlisten = 127.0.0.1:0\nrcvbuf = 512kB\n")
        XCTAssertEqual(m.count, 1)
        XCTAssertTrue(m[0].hasPrefix("'512kB': KB could mean 1000 or 1024; write KiB (or K) for binary multiples."), m[0])
    }
}
