import Foundation
import TestSupport
import UDPRelayConfig
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// The configuration file as the daemon meets it: `--check-config`, start and SIGHUP reload
/// refuse the same files, and a refused reload changes nothing.
final class ConfigEndToEndTests: XCTestCase {
    /// Sends SIGHUP and waits for the outcome of that reload; returns the log lines it wrote.
    func reload(_ d: DaemonProcess) -> (ok: Bool, lines: [String]) {
        let before = d.log.count
        d.signal(SIGHUP)
        let outcome = d.waitForLine(after: before) { $0.contains("reload rejected") || $0.contains(" reloaded generation=") }
        XCTAssertNotNil(outcome, "no reload outcome; log:\n\(d.log.joined(separator: "\n"))")
        return (outcome?.contains(" reloaded ") ?? false, Array(d.log.dropFirst(before)))
    }

    // MARK: a configuration without listeners

    func testEmptyOrListenerlessFileFailsCheckConfigAndStartWith78() throws {
        for text in ["", "[daemon]\nlog_level = info\n[status]\nlisten = off\n"] {
            let check = try DaemonProcess(config: text, arguments: ["--check-config"])
            XCTAssertEqual(check.waitForExit(), 78, "--check-config of '\(text)'")
            let log = check.log.joined(separator: "\n")
            XCTAssertTrue(log.contains("\(check.configPath): no listener: a configuration needs at least one [listener NAME] section"), log)
            XCTAssertTrue(log.contains("configuration invalid: 1 error(s)"), log)

            let start = try DaemonProcess(config: text)
            XCTAssertEqual(start.waitForExit(), 78, "start with '\(text)'")
            XCTAssertNotNil(start.log.first { $0.contains("no listener") }, start.log.joined(separator: "\n"))
        }
    }

    func testReloadOfATruncatedFileKeepsEveryListener() throws {
        let (d, bound) = try startDaemon("[listener a]\nlisten = 127.0.0.1:0\n[listener b]\nlisten = [::1]:0\n")
        let a = try XCTUnwrap(bound["a"]?.first), b = try XCTUnwrap(bound["b"]?.first)
        let client4 = try UDPClient(), client6 = try UDPClient(ipv6: true)
        XCTAssertEqual(echo(client4, a, "before"), "before")

        for truncated in ["", "[status]\nlisten = off\n[daem"] {
            try truncated.write(toFile: d.configPath, atomically: true, encoding: .utf8)
            let (ok, lines) = reload(d)
            XCTAssertFalse(ok, "a truncated file must be refused")
            XCTAssertNotNil(lines.first { $0.contains("reload: \(d.configPath): no listener") }, lines.joined(separator: "\n"))
            XCTAssertEqual(echo(client4, a, "still a"), "still a")
            XCTAssertEqual(echo(client6, b, "still b"), "still b")
        }
        XCTAssertEqual(d.stop(), 0)
        XCTAssertEqual(d.log.filter { $0.contains(" INFO totals ") }.count, 2, "both listeners ran to the end")
    }

    // MARK: paths and files that used to hang or flood

    func testAFIFOAsTheFileFailsCheckConfigAndAReloadWithoutBlockingSignals() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("udprelayd-fifo-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: dir) }
        let fifo = dir + "/fifo.ini"
        XCTAssertEqual(mkfifo(fifo, 0o600), 0)
        let checkFIFO = try DaemonProcess(config: "", arguments: ["--check-config", "--config", fifo])
        XCTAssertEqual(checkFIFO.waitForExit(timeout: 10), 78, "--check-config of a FIFO")
        XCTAssertNotNil(
            checkFIFO.log.first { $0.contains("\(fifo): cannot read configuration file: not a regular file (a FIFO)") },
            checkFIFO.log.joined(separator: "\n"))

        let (d, bound) = try startDaemon("[listener a]\nlisten = 127.0.0.1:0\n")
        let a = try XCTUnwrap(bound["a"]?.first)
        XCTAssertEqual(unlink(d.configPath), 0)
        XCTAssertEqual(mkfifo(d.configPath, 0o600), 0)
        let (ok, lines) = reload(d)
        XCTAssertFalse(ok)
        XCTAssertNotNil(lines.first { $0.contains("not a regular file (a FIFO)") }, lines.joined(separator: "\n"))
        let client = try UDPClient()
        XCTAssertEqual(echo(client, a, "after"), "after")
        // A second SIGHUP and SIGTERM are still heard.
        XCTAssertFalse(reload(d).ok)
        XCTAssertEqual(d.stop(), 0, "SIGTERM after a reload of a FIFO")
    }

    func testAReloadOfAFileOfGarbageLogsAndKeepsABoundedNumberOfErrors() throws {
        let (d, _, status) = try startDaemonWithStatus("[listener a]\nlisten = 127.0.0.1:0\n")
        let config = try String(contentsOfFile: d.configPath, encoding: .utf8)

        try (config + String(repeating: "garbage\n", count: 20_000)).write(toFile: d.configPath, atomically: true, encoding: .utf8)
        let (ok, lines) = reload(d)
        XCTAssertFalse(ok)
        XCTAssertEqual(lines.filter { $0.contains(" reload: ") }.count, 101, "100 errors and one line counting the rest")
        XCTAssertNotNil(lines.first { $0.contains(":105: and 19900 more error(s) not shown") }, lines.suffix(3).joined(separator: "\n"))
        XCTAssertNotNil(lines.first { $0.contains("reload rejected") && $0.contains("errors=20000") }, lines.suffix(3).joined(separator: "\n"))

        let c = try TCPClient(to: status)
        XCTAssertTrue(c.send("GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
        let response = try XCTUnwrap(c.readResponse())
        let body = try XCTUnwrap(response.range(of: "\r\n\r\n").map { String(response[$0.upperBound...]) })
        let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any])
        let last = try XCTUnwrap((json["config"] as? [String: Any])?["last_reload"] as? [String: Any])
        XCTAssertEqual((last["errors"] as? [String])?.count, 101)
    }

    // MARK: relays that loop

    func testCheckConfigRefusesSelfRelaysAndRelayCycles() throws {
        let selfRelay = try DaemonProcess(
            config: "[listener r]\nlisten = 0.0.0.0:30001\nmode = forward\nupstream = localhost:30001\n",
            arguments: ["--check-config"])
        XCTAssertEqual(selfRelay.waitForExit(), 78)
        XCTAssertNotNil(
            selfRelay.log.first { $0.contains(":4: [listener r] upstream: localhost:30001 is this listener's own address 0.0.0.0:30001") },
            selfRelay.log.joined(separator: "\n"))
        let pair = try DaemonProcess(
            config: "[listener a]\nlisten = 127.0.0.1:30001\nmode = forward\nupstream = 127.0.0.1:30002\n"
                + "[listener b]\nlisten = 0.0.0.0:30002\nmode = mirror\nupstream = 127.0.0.1:30001\n",
            arguments: ["--check-config"])
        XCTAssertEqual(pair.waitForExit(), 78)
        XCTAssertNotNil(pair.log.first { $0.contains("relay loop 'a' -> 'b' -> 'a'") }, pair.log.joined(separator: "\n"))
    }

    // MARK: value spelling

    func testLogLevelOnTheCommandLineIsCaseInsensitiveLikeTheFile() throws {
        let d = try DaemonProcess(
            config: "[daemon]\nlog_level = Info\n[listener a]\nlisten = 127.0.0.1:0\nmax_datagram = 63kib\n",
            arguments: ["--check-config", "--log-level", "DEBUG"])
        XCTAssertEqual(d.waitForExit(), 0, d.log.joined(separator: "\n"))
        XCTAssertTrue(d.standardOutput.contains("configuration OK: 1 listener"), d.standardOutput)
    }

    // MARK: [status] compared with what runs

    func testStatusChangedAndChangedBackIsNoLongerReportedAsPending() throws {
        let running = "[status]\nlisten = 127.0.0.1:0\n[listener a]\nlisten = 127.0.0.1:0\n"
        let d = try DaemonProcess(config: running)
        addTeardownBlock { d.stop() }
        _ = try d.waitUntilReady()
        let pending = "[status] changes take effect at the next restart"

        try running.replacingOccurrences(of: "listen = 127.0.0.1:0\n[listener", with: "listen = off\n[listener")
            .write(toFile: d.configPath, atomically: true, encoding: .utf8)
        var (ok, lines) = reload(d)
        XCTAssertTrue(ok)
        XCTAssertNotNil(lines.first { $0.contains(pending) }, lines.joined(separator: "\n"))

        // Another reload of the changed file: still pending.
        (ok, lines) = reload(d)
        XCTAssertTrue(ok)
        XCTAssertNotNil(lines.first { $0.contains(pending) }, lines.joined(separator: "\n"))

        // Back to what runs: nothing waits for a restart.
        try running.write(toFile: d.configPath, atomically: true, encoding: .utf8)
        (ok, lines) = reload(d)
        XCTAssertTrue(ok)
        XCTAssertNil(lines.first { $0.contains(pending) }, lines.joined(separator: "\n"))
    }
}
