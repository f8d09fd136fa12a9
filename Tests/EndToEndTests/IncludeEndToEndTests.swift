import Foundation
import TestSupport
import UDPRelayConfig
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// `include = DIR/conf.d/*.ini` with the real binary: a listener of an included file serves,
/// and a bad line in one fails `--check-config` (exit 78) and a reload, naming that file and line.
final class IncludeEndToEndTests: XCTestCase {
    func testAListenerFromConfDEchoesAndABadLineThereNamesItsFileAndLine() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("udprelayd-confd-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir + "/conf.d", withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: dir) }
        try "; from conf.d\n[listener extra]\nlisten = 127.0.0.1:0\nmode = echo\n"
            .write(toFile: dir + "/conf.d/10-extra.ini", atomically: true, encoding: .utf8)
        let config = "[daemon]\ninclude = \(dir)/conf.d/*.ini\n[listener main]\nlisten = 127.0.0.1:0\n"

        let (d, bound) = try startDaemon(config)
        let extra = try XCTUnwrap(bound["extra"]?.first, "bound: \(bound)")
        let client = try UDPClient()
        XCTAssertEqual(echo(client, extra, "via conf.d"), "via conf.d")

        let badFile = dir + "/conf.d/20-bad.ini"
        try "[listener bad]\nlisten = 127.0.0.1:0\nmode = bogus\n".write(toFile: badFile, atomically: true, encoding: .utf8)
        let check = try DaemonProcess(config: "[status]\nlisten = off\n" + config, arguments: ["--check-config"])
        XCTAssertEqual(check.waitForExit(), 78)
        let log = check.log.joined(separator: "\n")
        XCTAssertTrue(log.contains("\(badFile):3: [listener bad] mode: "), log)
        XCTAssertTrue(log.contains("configuration invalid: 1 error(s)"), log)

        // A reload reads conf.d again: refused for the same line, and the listeners keep serving.
        let before = d.log.count
        d.signal(SIGHUP)
        let outcome = d.waitForLine(after: before) { $0.contains("reload rejected") || $0.contains(" reloaded generation=") }
        XCTAssertNotNil(outcome, d.log.joined(separator: "\n"))
        XCTAssertTrue(outcome?.contains("reload rejected") ?? false, outcome ?? "")
        XCTAssertNotNil(d.log.dropFirst(before).first { $0.contains("\(badFile):3: [listener bad] mode: ") }, d.log.joined(separator: "\n"))
        XCTAssertEqual(echo(client, extra, "still served"), "still served")
        XCTAssertEqual(d.stop(), 0)
    }
}
