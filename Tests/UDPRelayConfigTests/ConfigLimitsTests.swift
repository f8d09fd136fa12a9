import Foundation
import TestSupport
import XCTest

@testable import UDPRelayConfig

#if canImport(Glibc)
import Glibc
#endif

/// What a configuration file may cost to load, whatever is at its path:
/// only regular files are read, and size, line length, errors and suggestions are bounded.
final class ConfigLimitsTests: XCTestCase, ConfigFileTests {
    let listener = "[listener a]\nlisten = 127.0.0.1:9\n"

    func temporaryDirectory() throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("udprelayd-limits-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: dir) }
        return dir
    }

    func loadErrors(_ path: String) -> ConfigErrors? {
        Self.loadErrors(path)
    }

    static func loadErrors(_ path: String) -> ConfigErrors? {
        do {
            _ = try ConfigLoader.load(path: path)
            return nil
        } catch {
            return error
        }
    }

    /// A FIFO used to block `open` (no writer) and then `read` (a writer that never closes):
    /// `--check-config` hung, and so did a reload, with SIGHUP and SIGTERM ignored after it.
    func testAFIFOIsRefusedAtOnceWithoutWaitingForAWriter() throws {
        let fifo = try temporaryDirectory() + "/udprelayd.ini"
        XCTAssertEqual(mkfifo(fifo, 0o600), 0)
        let done = DispatchSemaphore(value: 0)
        let result = LockedBox<ConfigErrors?>(nil)
        Thread.detachNewThread {
            result.value = Self.loadErrors(fifo)
            done.signal()
        }
        if done.wait(timeout: .now() + 5) == .timedOut {
            XCTFail("loading a FIFO blocked for 5 s")
            // Unblock the stuck load: a writer that closes at once gives it end of file.
            let w = open(fifo, O_WRONLY | O_NONBLOCK)
            if w >= 0 { close(w) }
            _ = done.wait(timeout: .now() + 5)
            return
        }
        let e = try XCTUnwrap(result.value, "a FIFO must not load")
        XCTAssertEqual(
            e.errors.map(\.description),
            ["\(fifo): cannot read configuration file: not a regular file (a FIFO); give the path of an INI file"])
    }

    func testDirectoriesAndDevicesAreRefusedByType() throws {
        let dir = try temporaryDirectory()
        XCTAssertEqual(loadErrors(dir)?.errors.first?.message, "cannot read configuration file: not a regular file (a directory); give the path of an INI file")
        XCTAssertEqual(
            loadErrors("/dev/zero")?.errors.first?.message,
            "cannot read configuration file: not a regular file (a character device); give the path of an INI file")
        // A symbolic link to a regular file is a regular file.
        let file = dir + "/real.ini", link = dir + "/link.ini"
        try listener.write(toFile: file, atomically: true, encoding: .utf8)
        XCTAssertEqual(symlink(file, link), 0)
        XCTAssertEqual(try ConfigLoader.load(path: link).listeners.map(\.name), ["a"])
    }

    func testFilesLargerThanOneMiBAreRefusedAndOneMiBLoads() throws {
        let dir = try temporaryDirectory()
        func padded(to size: Int) -> String {
            var text = listener
            let comment = "; " + String(repeating: "p", count: 97) + "\n"  // 100 bytes
            while text.utf8.count + comment.utf8.count <= size { text += comment }
            return text + String(repeating: ";", count: size - text.utf8.count)
        }
        let limit = ConfigLimits.maxFileSize
        XCTAssertEqual(limit, 1 << 20)
        let atLimit = dir + "/at.ini", over = dir + "/over.ini"
        try padded(to: limit).write(toFile: atLimit, atomically: true, encoding: .utf8)
        try padded(to: limit + 1).write(toFile: over, atomically: true, encoding: .utf8)
        XCTAssertEqual(try ConfigLoader.load(path: atLimit).listeners.count, 1)
        XCTAssertEqual(
            loadErrors(over)?.errors.map(\.description),
            ["\(over): cannot read configuration file: file is larger than 1024 KiB (1048576 bytes), the most a configuration may be"])
    }

    func testOverlongLineIsOneErrorNamingItsLength() {
        let long = "allow = " + String(repeating: "10.0.0.1, ", count: 7000) + "10.0.0.2"
        let e = thrownErrors(listener + long + "\n")
        XCTAssertEqual(e.errors.map(\.line), [3])
        XCTAssertEqual(e.errors[0].message, "line is \(long.utf8.count) bytes long; the limit is 65536")
    }

    /// A file of garbage: 5.3 M log lines and 1.4 GB kept for /status before.
    func testOnlyTheFirstHundredErrorsAreKeptAndTheRestCounted() {
        let e = thrownErrors(listener + String(repeating: "garbage\n", count: 5000))
        XCTAssertEqual(e.total, 5000)
        XCTAssertEqual(e.errors.count, 101)
        XCTAssertEqual(e.errors.prefix(100).map(\.line), Array(3...102))
        XCTAssertEqual(e.errors[100].description, "t.ini:103: and 4900 more error(s) not shown; fix the ones above and check again")
        XCTAssertLessThan(e.description.utf8.count, 101 * 100)
        // Exactly at the limit nothing is summarised.
        let hundred = thrownErrors(listener + String(repeating: "garbage\n", count: 100))
        XCTAssertEqual(hundred.total, 100)
        XCTAssertEqual(hundred.errors.count, 100)
        XCTAssertFalse(hundred.description.contains("more error"))
    }

    func testAMegabyteOfBadLinesIsParsedInBoundedTime() {
        let text = String(repeating: "x\n", count: ConfigLimits.maxFileSize / 2)
        let start = Date()
        let e = thrownErrors(text)
        let elapsed = Date().timeIntervalSince(start)
        XCTAssertEqual(e.total, ConfigLimits.maxFileSize / 2 + 1, "every line, and 'no listener'")
        XCTAssertEqual(e.errors.count, 101)
        // About 1 s in a debug build on this machine; generous for a shared one.
        XCTAssertLessThan(elapsed, 20, "parsing 1 MiB of bad lines took \(elapsed) s")
    }

    /// An 8 MiB unknown key spent over 25 s in the "did you mean" search.
    func testSuggestionSearchIgnoresWordsFarLongerThanAnyKey() {
        let huge = String(repeating: "k", count: 4 << 20)
        let start = Date()
        XCTAssertNil(Suggest.closest(to: huge, in: Schema.listener.map(\.name)))
        XCTAssertLessThan(Date().timeIntervalSince(start), 2)
        // Still a suggestion for a typo, and none for a word too far from any key.
        XCTAssertEqual(Suggest.closest(to: "max_datagarm", in: Schema.listener.map(\.name)), "max_datagram")
        XCTAssertEqual(Suggest.closest(to: "udp_gsoo", in: Schema.listener.map(\.name)), "udp_gso")
        XCTAssertNil(Suggest.closest(to: "colour", in: Schema.listener.map(\.name)))
    }

    func testMessagesShowAnExcerptOfLongKeysAndValues() {
        let key = String(repeating: "k", count: 60_000)
        let value = String(repeating: "v", count: 60_000)
        let e = thrownErrors(listener + "\(key) = 1\nmode = \(value)\n")
        XCTAssertEqual(e.errors.map(\.line), [3, 4])
        for error in e.errors {
            XCTAssertLessThan(error.description.utf8.count, 2048, String(error.description.prefix(200)))
            XCTAssertTrue(error.description.contains("characters left out)…"), String(error.description.prefix(200)))
        }
        XCTAssertTrue(e.errors[1].message.hasPrefix("expected one of echo|forward|balance|mirror, got 'vvv"), e.errors[1].message)
    }

    /// Thousands of addresses on one port: the overlap check was quadratic.
    func testManyListenAddressesAreCheckedInLinearTime() throws {
        var text = ""
        for i in 0..<4000 {
            text += "[listener l\(i)]\nlisten = 127.\(i / 250).\(i % 250).1:7007\n"
        }
        let start = Date()
        let c = try ConfigLoader.parse(text, file: "t.ini")
        XCTAssertEqual(c.listeners.count, 4000)
        XCTAssertLessThan(Date().timeIntervalSince(start), 20)
        let e = thrownErrors(text + "[listener w]\nlisten = 0.0.0.0:7007\n")
        XCTAssertEqual(e.errors.count, 1)
        XCTAssertTrue(e.errors[0].message.contains("0.0.0.0:7007 overlaps 127.0.0.1:7007 of listener 'l0'"), e.errors[0].message)
    }
}
