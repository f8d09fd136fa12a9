import Foundation
import TestSupport
import XCTest

@testable import UDPRelayConfig

#if canImport(Glibc)
import Glibc
#endif

/// `include = PATH-or-glob` in `[daemon]`: files of listeners, in sorted order, relative to the
/// including file, with the main file's checks and errors that name the included file.
final class IncludeTests: XCTestCase {
    var dir = ""

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("include-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir + "/conf.d", withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: dir)
    }

    func write(_ name: String, _ text: String) throws {
        try text.write(toFile: dir + "/" + name, atomically: true, encoding: .utf8)
    }

    func listener(_ name: String, port: Int = 0) -> String {
        "[listener \(name)]\nlisten = 127.0.0.1:\(port)\n"
    }

    func load() throws -> Configuration {
        try ConfigLoader.load(path: dir + "/udprelayd.ini")
    }

    func loadErrors(file: StaticString = #filePath, line: UInt = #line) -> [ConfigError] {
        do {
            _ = try ConfigLoader.load(path: dir + "/udprelayd.ini")
            XCTFail("expected errors", file: file, line: line)
            return []
        } catch {
            return error.errors
        }
    }

    func testIncludedListenersFollowInIncludeThenSortedOrder() throws {
        try write("udprelayd.ini", "[daemon]\ninclude = conf.d/*.ini\ninclude = extra.ini\n" + listener("main"))
        try write("conf.d/20-b.ini", listener("b"))
        try write("conf.d/10-a.ini", "; a comment\n" + listener("a"))
        try write("conf.d/README.txt", "not a configuration file")
        try write("extra.ini", listener("extra"))
        let c = try load()
        XCTAssertEqual(c.listeners.map(\.name), ["main", "a", "b", "extra"])
        XCTAssertEqual(c.includedFiles, [dir + "/conf.d/10-a.ini", dir + "/conf.d/20-b.ini", dir + "/extra.ini"])
        XCTAssertEqual(c.file, dir + "/udprelayd.ini")
    }

    func testErrorsNameTheIncludedFileAndItsLineAfterTheMainFilesErrors() throws {
        try write("udprelayd.ini", "[daemon]\ninclude = conf.d/*.ini\n" + listener("main") + "mode = bogus\n")
        try write("conf.d/10-a.ini", listener("a") + "max_datagram = huge\n")
        try write("conf.d/20-b.ini", "\n" + listener("b") + "mode = forward\nupstream = 127.0.0.1:9 nonsense\n")
        let e = loadErrors()
        XCTAssertEqual(e.map(\.file), [dir + "/udprelayd.ini", dir + "/conf.d/10-a.ini", dir + "/conf.d/20-b.ini"])
        XCTAssertEqual(e.map(\.line), [5, 3, 5])
        XCTAssertEqual(e.map(\.key), ["mode", "max_datagram", "upstream"])
        XCTAssertTrue(e[1].description.hasPrefix(dir + "/conf.d/10-a.ini:3: [listener a] max_datagram: "), e[1].description)
    }

    func testAGlobMatchingNothingIsFineAMissingPathIsNot() throws {
        try write("udprelayd.ini", "[daemon]\ninclude = conf.d/*.ini\ninclude = /nonexistent-\(UUID().uuidString)/*.ini\n" + listener("main"))
        XCTAssertEqual(try load().listeners.map(\.name), ["main"])
        XCTAssertEqual(try load().includedFiles, [])

        try write("udprelayd.ini", "[daemon]\ninclude = missing.ini\n" + listener("main"))
        let e = loadErrors()
        XCTAssertEqual(
            e.map(\.description),
            ["\(dir)/udprelayd.ini:2: [daemon] include: cannot read included file '\(dir)/missing.ini': No such file or directory"])
    }

    func testAnIncludedFileHoldsOnlyListenersSoIncludesDoNotNest() throws {
        try write("udprelayd.ini", "[daemon]\ninclude = conf.d/*.ini\n" + listener("main"))
        try write("conf.d/a.ini", "[daemon]\ninclude = ../other.ini\n[status]\nlisten = off\n" + listener("a"))
        try write("other.ini", listener("other"))
        let e = loadErrors()
        XCTAssertEqual(e.map(\.file), [dir + "/conf.d/a.ini", dir + "/conf.d/a.ini"])
        XCTAssertEqual(e.map(\.line), [1, 3])
        XCTAssertTrue(e[0].message.contains("an included file holds only [listener NAME] sections; [daemon] belongs in the main file"), e[0].message)
        XCTAssertTrue(e[0].message.contains("so includes do not nest"), e[0].message)
    }

    func testAListenerNameInTwoFilesNamesBothPlaces() throws {
        try write("udprelayd.ini", "[daemon]\ninclude = conf.d/*.ini\n\n" + listener("dns"))
        try write("conf.d/a.ini", "\n\n" + listener("dns"))
        let e = loadErrors()
        XCTAssertEqual(
            e.map(\.description),
            ["\(dir)/conf.d/a.ini:3: [listener dns]: repeated listener name 'dns' (first at \(dir)/udprelayd.ini:4)"])
    }

    func testIncludedFilesGetTheMainFilesChecks() throws {
        try FileManager.default.createDirectory(atPath: dir + "/conf.d/sub.ini", withIntermediateDirectories: true)
        XCTAssertEqual(mkfifo(dir + "/fifo.ini", 0o600), 0)
        try write("big.ini", String(repeating: "; padding\n", count: ConfigLimits.maxFileSize / 10 + 1))
        try write("long.ini", listener("long") + "allow = " + String(repeating: "10.0.0.0/8, ", count: ConfigLimits.maxLineLength / 12 + 1) + "\n")
        try write("udprelayd.ini", "[daemon]\ninclude = conf.d/*.ini\ninclude = fifo.ini\ninclude = big.ini\ninclude = long.ini\n" + listener("main"))
        let e = loadErrors()
        XCTAssertEqual(e.map(\.line), [2, 3, 4, 3])
        XCTAssertTrue(e[0].message.contains("'\(dir)/conf.d/sub.ini': not a regular file (a directory)"), e[0].message)
        XCTAssertTrue(e[1].message.contains("'\(dir)/fifo.ini': not a regular file (a FIFO)"), e[1].message)
        XCTAssertTrue(e[2].message.contains("'\(dir)/big.ini': file is larger than 1024 KiB"), e[2].message)
        XCTAssertEqual(e[3].file, dir + "/long.ini")
        XCTAssertTrue(e[3].message.contains("the limit is \(ConfigLimits.maxLineLength)"), e[3].message)
    }

    func testAFileIncludedTwiceOrTheMainFileIsAnError() throws {
        try write("udprelayd.ini", "[daemon]\ninclude = conf.d/a.ini\ninclude = conf.d/*.ini\ninclude = *.ini\n" + listener("main"))
        try write("conf.d/a.ini", listener("a"))
        let e = loadErrors()
        XCTAssertEqual(e.map(\.line), [3, 4])
        XCTAssertTrue(e[0].message.contains("is included twice (first as '\(dir)/conf.d/a.ini' at line 2)"), e[0].message)
        XCTAssertTrue(e[1].message.contains("'\(dir)/udprelayd.ini' is the main configuration file itself"), e[1].message)
    }

    /// `--check-config` and reload both load through `ConfigLoader.load`: a change in an
    /// included file is seen by the next load.
    func testTheNextLoadSeesAChangedIncludedFile() throws {
        try write("udprelayd.ini", "[daemon]\ninclude = conf.d/*.ini\n" + listener("main"))
        try write("conf.d/a.ini", listener("a"))
        let before = try load()
        try write("conf.d/a.ini", listener("a") + "mode = forward\nupstream = 127.0.0.1:9\n")
        try write("conf.d/b.ini", listener("b"))
        let after = try load()
        XCTAssertEqual(
            ListenerChanges(from: before.listeners, to: after.listeners),
            ListenerChanges(unchanged: ["main"], changed: ["a"], added: ["b"]))
    }
}
