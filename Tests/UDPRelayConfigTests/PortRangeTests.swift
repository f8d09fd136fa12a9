import TestSupport
import UDPRelayConfig
import XCTest

/// `listen` port ranges: expanded into one address per port, capped, and checked like any
/// address (every error names the file, the line and the key).
final class PortRangeTests: XCTestCase, ConfigFileTests {
    func addresses(_ listen: String) throws -> [String] {
        try parse("[listener a]\nlisten = \(listen)\n").listeners[0].listen.map(\.description)
    }

    func testRangeExpandsInOrderMixedWithSingleAddresses() throws {
        let a = try addresses("127.0.0.1:7000, 0.0.0.0:5000-5099, [::1]:6000-6009, [::]:7000")
        XCTAssertEqual(a.count, 1 + 100 + 10 + 1)
        XCTAssertEqual(a.first, "127.0.0.1:7000")
        XCTAssertEqual(Array(a[1...3]), ["0.0.0.0:5000", "0.0.0.0:5001", "0.0.0.0:5002"])
        XCTAssertEqual(a[100], "0.0.0.0:5099")
        XCTAssertEqual(Array(a[101...102]), ["[::1]:6000", "[::1]:6001"])
        XCTAssertEqual(a[110], "[::1]:6009")
        XCTAssertEqual(a.last, "[::]:7000")
        XCTAssertEqual(Set(a).count, a.count)
    }

    func testOnePortRangeAndTheLargestRange() throws {
        XCTAssertEqual(try addresses("127.0.0.1:5000-5000"), ["127.0.0.1:5000"])
        let largest = try addresses("127.0.0.1:64512-65535")
        XCTAssertEqual(largest.count, ListenLimits.portsPerRange)
        XCTAssertEqual(largest.last, "127.0.0.1:65535")
    }

    func testRangeOverCapNamesFileLineAndKey() {
        let e = errors("[listener a]\nmode = echo\nlisten = 0.0.0.0:5000-6024\n")
        XCTAssertEqual(e.count, 1)
        XCTAssertEqual(
            e[0].description,
            "t.ini:3: [listener a] listen: port range '0.0.0.0:5000-6024' has 1025 ports; at most 1024 per range "
                + "(list several ranges, up to 4096 addresses per listener)")
    }

    func testListenerAddressCap() throws {
        let four = (0..<4).map { "127.0.0.\($0 + 1):1024-2047" }.joined(separator: ", ")
        XCTAssertEqual(try addresses(four).count, ListenLimits.addressesPerListener)
        let e = errors("[listener a]\nlisten = \(four), [::1]:9\n")
        XCTAssertEqual(e.map(\.line), [2])
        XCTAssertEqual(e[0].key, "listen")
        XCTAssertTrue(e[0].message.hasPrefix("more than 4096 addresses in one listener (4096 before '[::1]:9', which adds 1)"), e[0].message)
    }

    func testConfigurationAddressCap() throws {
        // 16 listeners of 4096 addresses each: exactly the cap.
        var text = ""
        for i in 0..<16 {
            text += "[listener l\(i)]\nlisten = " + (1...4).map { "127.0.\(i).\($0):1024-2047" }.joined(separator: ", ") + "\n"
        }
        let full = try parse(text)
        XCTAssertEqual(full.listeners.reduce(0) { $0 + $1.listen.count }, ListenLimits.addressesPerConfiguration)
        let lines = text.split(separator: "\n").count
        let e = errors(text + "[listener extra]\nmode = echo\nlisten = [::1]:9, [::1]:10\n")
        XCTAssertEqual(e.count, 1, "\(e)")
        XCTAssertEqual(
            e.first?.description,
            "t.ini:\(lines + 3): [listener extra] listen: more than 65536 listen addresses in the configuration "
                + "(its files together: 65536 before this listener, which adds 2)")
    }

    func testSocketCapCountsWorkers() throws {
        XCTAssertNoThrow(try parse("[listener a]\nlisten = 127.0.0.1:5000-6023, 127.0.0.2:5000-6023\nworkers = 2\n"))
        let e = errors("[listener a]\nlisten = 127.0.0.1:5000-6023, 127.0.0.2:5000-6023\nworkers = 3\n")
        XCTAssertEqual(e.count, 1)
        XCTAssertEqual(
            e[0].description,
            "t.ini:3: [listener a] workers: 2048 listen addresses × workers = 3 is 6144 sockets; "
                + "at most 4096 per listener (lower workers or split the addresses over several listeners)")
    }

    func testReversedRange() {
        let e = errors("[listener a]\nlisten = 0.0.0.0:5099-5000\n")
        XCTAssertEqual(e.count, 1)
        XCTAssertEqual(
            e[0].description, "t.ini:2: [listener a] listen: port range '0.0.0.0:5099-5000' is reversed; write the lower port first (5099-5000 → 5000-5099)")
    }

    func testPortZeroInRange() {
        for range in ["0.0.0.0:0-10", "[::1]:0-0"] {
            let e = errors("[listener a]\nlisten = \(range)\n")
            XCTAssertEqual(e.map(\.line), [2], range)
            XCTAssertEqual(e.first?.key, "listen")
            XCTAssertTrue(e.first?.message.hasPrefix("port range '\(range)' includes port 0") ?? false, "\(e)")
        }
    }

    func testMalformedRanges() {
        let cases = [
            ("127.0.0.1:5000-", "in port range '127.0.0.1:5000-': the last port must be a number from 1 to 65535, got ''"),
            ("127.0.0.1:5000-70000", "the last port must be a number from 1 to 65535, got '70000'"),
            ("127.0.0.1:-5", "in port range '127.0.0.1:-5': port must be a number"),
            ("[::1]:5000-x", "got 'x'"),
            ("::1:5000-5001", "in port range '::1:5000-5001': IPv6 addresses need brackets"),
            ("[::ffff:127.0.0.1]:5000-5001", "IPv4-mapped IPv6 address"),
        ]
        for (value, expected) in cases {
            let e = errors("[listener a]\n\nlisten = \(value)\n")
            XCTAssertEqual(e.map(\.line), [3], value)
            XCTAssertEqual(e.first?.key, "listen", value)
            XCTAssertTrue(e.first?.message.contains(expected) ?? false, "\(value): \(e)")
        }
    }

    func testOverlappingRangesInOneListener() {
        let e = errors("[listener a]\nlisten = 127.0.0.1:5000-5099, 127.0.0.1:5050-5149\n")
        XCTAssertEqual(e.count, 1)
        XCTAssertEqual(
            e[0].description,
            "t.ini:2: [listener a] listen: '127.0.0.1:5050-5149' overlaps '127.0.0.1:5000-5099' at 127.0.0.1:5050; "
                + "each address and port may be listed once")
        let single = errors("[listener a]\nlisten = [::1]:6000-6009, [::1]:6005\n")
        XCTAssertTrue(single.first?.message.hasPrefix("'[::1]:6005' overlaps '[::1]:6000-6009' at [::1]:6005") ?? false, "\(single)")
        // Two single addresses keep their message.
        XCTAssertTrue(errors("[listener a]\nlisten = [::1]:6005, [::1]:6005\n").first?.message.hasPrefix("address [::1]:6005 is listed twice") ?? false)
        // Adjacent ranges and other addresses or families on the same ports are fine.
        XCTAssertNoThrow(try parse("[listener a]\nlisten = 127.0.0.1:5000-5099, 127.0.0.1:5100-5199, 127.0.0.2:5000-5099, [::1]:5000-5099\n"))
    }

    func testRangeOverlappingAnotherListenerIsOneError() {
        let e = errors("[listener a]\nlisten = 127.0.0.1:5050\n[listener b]\nlisten = 127.0.0.1:5000-5099\n")
        XCTAssertEqual(e.count, 1)
        XCTAssertEqual(e[0].description, "t.ini:4: [listener b] listen: 127.0.0.1:5050 overlaps listener 'a'; each address and port may belong to one listener")
        // A wildcard range against specific addresses of another listener: one error, with the count.
        let w = errors("[listener a]\nlisten = 127.0.0.1:5000-5009\n[listener b]\nmode = echo\nlisten = 0.0.0.0:5005-5104\n")
        XCTAssertEqual(w.count, 1)
        XCTAssertEqual(w[0].line, 5)
        XCTAssertEqual(
            w[0].message,
            "0.0.0.0:5005 overlaps 127.0.0.1:5005 of listener 'a' (and 4 more of its addresses overlap); "
                + "each address and port may belong to one listener")
        // Within one listener a specific address inside a wildcard range of its family overlaps too.
        let own = errors("[listener a]\nlisten = 0.0.0.0:5000-5099, 127.0.0.1:5050\n")
        XCTAssertTrue(own.first?.message.hasPrefix("127.0.0.1:5050 overlaps 0.0.0.0:5050 of listener 'a'") ?? false, "\(own)")
        // Two ranges of different listeners that meet but do not overlap are fine.
        XCTAssertNoThrow(try parse("[listener a]\nlisten = 127.0.0.1:5000-5099\n[listener b]\nlisten = 127.0.0.1:5100-5199\n"))
    }

    func testRangeInAnIncludedFileNamesThatFile() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("port-range-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let main = dir.appendingPathComponent("main.ini")
        try "[daemon]\ninclude = more.ini\n[listener a]\nlisten = 127.0.0.1:5000-5099\n".write(to: main, atomically: true, encoding: .utf8)
        try "[listener b]\n\nlisten = 127.0.0.1:5099-5199\n".write(to: dir.appendingPathComponent("more.ini"), atomically: true, encoding: .utf8)
        do {
            _ = try ConfigLoader.load(path: main.path)
            XCTFail("expected an overlap error")
        } catch {
            XCTAssertEqual(
                error.errors.map(\.description),
                [
                    "\(dir.path)/more.ini:3: [listener b] listen: 127.0.0.1:5099 overlaps listener 'a'; each address and port may belong to one listener"
                ])
        }
    }
}
