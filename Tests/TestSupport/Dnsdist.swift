import Foundation
import UDPRelayConfig
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// A Debian `dnsdist` the test starts on 127.0.0.1 with configuration lines of its own, stopped
/// (by its PID) when the test ends. Skips the test when dnsdist is not installed or exits.
public final class Dnsdist {
    public static let path = "/usr/bin/dnsdist"
    /// The UDP port it listens on (127.0.0.1).
    public let port: UInt16
    private let logURL: URL
    private let process: Process

    /// Writes `configuration` after `setSecurityPollSuffix('')` and `setLocal(...)` on a free
    /// port, starts dnsdist and waits until it logs that it listens.
    public init(_ configuration: String, test: XCTestCase) throws {
        guard FileManager.default.isExecutableFile(atPath: Self.path) else {
            throw XCTSkip("dnsdist is not installed (scripts/install-deps.sh test installs it; apt-get install dnsdist)")
        }
        port = try UDPClient().localAddress.port
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("udprelayd-dnsdist-\(getpid())-\(port)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        test.addTeardownBlock { try? FileManager.default.removeItem(at: directory) }
        let config = directory.appendingPathComponent("dnsdist.conf")
        try "setSecurityPollSuffix('')\nsetLocal('127.0.0.1:\(port)')\n\(configuration)\n".write(to: config, atomically: true, encoding: .utf8)
        logURL = directory.appendingPathComponent("dnsdist.log")
        XCTAssertTrue(FileManager.default.createFile(atPath: logURL.path, contents: nil))
        let log = try FileHandle(forWritingTo: logURL)
        process = Process()
        process.executableURL = URL(fileURLWithPath: Self.path)
        process.arguments = ["--supervised", "--disable-syslog", "-C", config.path]
        process.standardOutput = log
        process.standardError = log
        process.standardInput = FileHandle.nullDevice
        try process.run()
        let (pid, process) = (process.processIdentifier, process)
        test.addTeardownBlock {
            kill(pid, SIGTERM)
            process.waitUntilExit()
        }
        let port = port
        XCTAssertTrue(
            waitUntil(20) { self.log.contains("Listening on 127.0.0.1:\(port)") || !process.isRunning }, "dnsdist did not start: \(log)")
        try XCTSkipUnless(process.isRunning, "dnsdist exited: \(log)")
    }

    /// What it has written to standard output and error so far.
    public var log: String { (try? String(contentsOf: logURL, encoding: .utf8)) ?? "" }

    /// Where it listens.
    public var address: SocketAddress { SocketAddress(ip: .v4(0x7F00_0001), port: port) }
}
