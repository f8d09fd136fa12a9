import Foundation
import TestSupport
import UDPRelayConfig
import XCTest

/// The unit files under systemd/: hardening score, `systemd-analyze verify`, and agreement with
/// the example configuration. Needs systemd-analyze (package systemd; scripts/install-deps.sh
/// test installs it): without it these tests fail, they do not skip.
final class UnitFileTests: XCTestCase {
    static let root = repositoryRoot
    static let service = root.appendingPathComponent("systemd/udprelayd.service").path
    static let socket = root.appendingPathComponent("systemd/udprelayd.socket").path

    /// Runs a command; returns exit status and stdout+stderr.
    func run(_ arguments: [String]) throws -> (Int32, String) {
        try runCommand(arguments)
    }

    func requireSystemdAnalyze() throws {
        let (status, _) = try run(["sh", "-c", "command -v systemd-analyze"])
        if status != 0 {
            XCTFail("systemd-analyze is missing: install the 'systemd' package (scripts/install-deps.sh test)")
            throw XCTSkip("cannot check unit files")
        }
    }

    func testServiceExposureScoreIsAtMost1_5() throws {
        try requireSystemdAnalyze()
        let (_, output) = try run(["systemd-analyze", "security", "--offline=true", "--no-pager", Self.service])
        let line = try XCTUnwrap(output.split(separator: "\n").first { $0.contains("Overall exposure level for udprelayd.service:") }, output)
        let score = try XCTUnwrap(line.split(separator: ":").last?.split(separator: " ").first.flatMap { Double($0) }, String(line))
        XCTAssertLessThanOrEqual(score, 1.5, "hardening regressed:\n\(output.split(separator: "\n").filter { $0.contains("✗") }.joined(separator: "\n"))")
    }

    /// The transparent drop-in adds CAP_NET_ADMIN and nothing else: with it the score is 1.6
    /// (as the README says), and its only new finding is that capability.
    func testTransparentDropInAddsOnlyCapNetAdmin() throws {
        try requireSystemdAnalyze()
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("units-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("udprelayd.service.d"), withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let service = dir.appendingPathComponent("udprelayd.service").path
        try FileManager.default.copyItem(atPath: Self.service, toPath: service)
        func findings() throws -> (score: String, failed: Set<String>) {
            let (_, output) = try run(["systemd-analyze", "security", "--offline=true", "--no-pager", service])
            let lines = output.split(separator: "\n")
            let overall = try XCTUnwrap(lines.first { $0.contains("Overall exposure level for udprelayd.service:") }, output)
            let score = String(overall.split(separator: ":").last?.split(separator: " ").first ?? "")
            return (score, Set(lines.filter { $0.hasPrefix("✗") }.map { String($0.split(separator: " ")[1]) }))
        }
        let without = try findings()
        try FileManager.default.copyItem(
            atPath: Self.root.appendingPathComponent("systemd/transparent.conf").path,
            toPath: dir.appendingPathComponent("udprelayd.service.d/transparent.conf").path)
        let with = try findings()
        XCTAssertEqual(without.score, "1.5")
        XCTAssertEqual(with.score, "1.6")
        XCTAssertEqual(with.failed.subtracting(without.failed), ["CapabilityBoundingSet=~CAP_NET_ADMIN"])
        XCTAssertEqual(without.failed.subtracting(with.failed), [])
    }

    /// The spoof drop-in sets only the two capability keys, adding CAP_NET_RAW to
    /// CAP_NET_BIND_SERVICE: the score stays 1.5 with it (as the README says) and no finding
    /// changes, because systemd already counts CAP_NET_BIND_SERVICE under the one finding,
    /// CapabilityBoundingSet=~CAP_NET_(BIND_SERVICE|BROADCAST|RAW), that CAP_NET_RAW falls in.
    func testSpoofDropInAddsOnlyCapNetRaw() throws {
        try requireSystemdAnalyze()
        let dropIn = Self.root.appendingPathComponent("systemd/spoof.conf").path
        let settings = try String(contentsOfFile: dropIn, encoding: .utf8).split(separator: "\n").filter { !$0.hasPrefix("#") }
        XCTAssertEqual(
            settings,
            ["[Service]", "AmbientCapabilities=CAP_NET_BIND_SERVICE CAP_NET_RAW", "CapabilityBoundingSet=CAP_NET_BIND_SERVICE CAP_NET_RAW"])
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("units-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("udprelayd.service.d"), withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let service = dir.appendingPathComponent("udprelayd.service").path
        try FileManager.default.copyItem(atPath: Self.service, toPath: service)
        func findings() throws -> [String] {
            let (_, output) = try run(["systemd-analyze", "security", "--offline=true", "--no-pager", service])
            return output.split(separator: "\n").filter { $0.hasPrefix("✗") || $0.contains("Overall exposure level") }.map(String.init)
        }
        let without = try findings()
        try FileManager.default.copyItem(atPath: dropIn, toPath: dir.appendingPathComponent("udprelayd.service.d/spoof.conf").path)
        let with = try findings()
        XCTAssertTrue(with.contains { $0.contains("Overall exposure level for udprelayd.service: 1.5 ") }, with.joined(separator: "\n"))
        XCTAssertEqual(with, without)
    }

    func testUnitsVerifyWithoutAnyMessage() throws {
        try requireSystemdAnalyze()
        // verify needs ExecStart= to exist: point the copies at the binary this test run built.
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("units-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let service = try String(contentsOfFile: Self.service, encoding: .utf8)
            .replacingOccurrences(of: "/usr/sbin/udprelayd", with: DaemonProcess.binary.path)
        try service.write(to: dir.appendingPathComponent("udprelayd.service"), atomically: true, encoding: .utf8)
        try FileManager.default.copyItem(atPath: Self.socket, toPath: dir.appendingPathComponent("udprelayd.socket").path)
        let (status, output) = try run([
            "systemd-analyze", "verify", "--man=no",
            dir.appendingPathComponent("udprelayd.service").path,
            dir.appendingPathComponent("udprelayd.socket").path,
        ])
        // verify exits 0 even for unknown keys: any output is a failure.
        XCTAssertEqual(output, "", "systemd-analyze verify complained")
        XCTAssertEqual(status, 0)
    }

    /// The real-systemd test must fail, not skip, where it cannot run (CI runs it as root).
    func testSystemdEndToEndScriptFailsLoudlyWithoutRoot() throws {
        let script = Self.root.appendingPathComponent("scripts/systemd-e2e.sh").path
        let (status, output) = try run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", script, "/bin/true"])
        XCTAssertEqual(status, 1, output)
        XCTAssertTrue(output.contains("systemd-e2e: FAILED, cannot run: needs root"), output)
    }

    func testUnitsAgreeWithTheExampleConfiguration() throws {
        let service = try String(contentsOfFile: Self.service, encoding: .utf8)
        XCTAssertTrue(service.contains("ExecStart=/usr/sbin/udprelayd --config \(Defaults.configPath)\n"))
        XCTAssertTrue(service.contains("ExecStartPre=/usr/sbin/udprelayd --check-config --config \(Defaults.configPath)\n"))
        XCTAssertTrue(service.contains("Type=notify\n"))
        // The example socket's name must be a listener of the example configuration.
        let socket = try String(contentsOfFile: Self.socket, encoding: .utf8)
        let name = try XCTUnwrap(socket.split(separator: "\n").first { $0.hasPrefix("FileDescriptorName=") }?.dropFirst("FileDescriptorName=".count))
        let config = try ConfigLoader.load(path: Self.root.appendingPathComponent("config/udprelayd.ini").path)
        XCTAssertTrue(config.listeners.contains { $0.name == name }, "FileDescriptorName=\(name) names no listener of config/udprelayd.ini")
    }
}
