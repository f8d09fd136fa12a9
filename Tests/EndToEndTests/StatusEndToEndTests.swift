import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif
import TestSupport
import UDPRelayConfig

/// The status endpoint of the real binary, checked with curl, Python requests, jsonschema,
/// prometheus_client and headless Chromium (Tests/EndToEndTests/status_e2e.py).
final class StatusEndToEndTests: XCTestCase {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// Starts the daemon and returns it with the status address it logged.
    func start(_ config: String) throws -> (DaemonProcess, [String: [SocketAddress]], SocketAddress) {
        let d = try DaemonProcess(config: config)
        addTeardownBlock { d.stop() }
        let bound = try d.waitUntilReady()
        let line = try XCTUnwrap(d.log.first { $0.contains(" status listening ") }, d.log.joined(separator: "\n"))
        let address = try SocketAddress(parsing: try XCTUnwrap(DaemonProcess.field("address", in: line)))
        return (d, bound, address)
    }

    /// A UDP port that was free a moment ago (for an upstream that must be known before start).
    func freeUDPPort() throws -> UInt16 {
        try UDPClient().localAddress.port
    }

    func testPythonClientsCurlAndChromiumAgainstTheRealDaemon() throws {
        let upstreamPort = try freeUDPPort()
        let (daemon, bound, status) = try start("""
        [status]
        listen = 127.0.0.1:0
        [listener dns]
        listen = 127.0.0.1:\(upstreamPort), [::1]:0
        [listener games]
        listen = 127.0.0.1:0
        workers = 2
        [listener relay]
        mode = forward
        listen = 127.0.0.1:0
        upstream = 127.0.0.1:\(upstreamPort)
        """)
        func spec(_ name: String) -> String {
            "\(name)=" + (bound[name] ?? []).map { "\($0)" }.joined(separator: ",")
        }
        let screenshot = Self.repository.appendingPathComponent(".build/status-page.png").path
        let python = Process()
        python.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        python.arguments = [
            Self.repository.appendingPathComponent("Tests/EndToEndTests/status_e2e.py").path,
            "--base", "http://\(status)",
            "--schema", Self.repository.appendingPathComponent("docs/status.schema.json").path,
            "--screenshot", screenshot,
            "--echo", spec("dns"), "--echo", spec("games"), "--relay", spec("relay"),
        ]
        let output = Pipe()
        python.standardOutput = output
        python.standardError = output
        python.standardInput = FileHandle.nullDevice
        try python.run()
        // Bounded: kill the script (only it, by PID) if it hangs.
        let watchdog = DispatchWorkItem { [pid = python.processIdentifier] in kill(pid, SIGKILL) }
        DispatchQueue.global().asyncAfter(deadline: .now() + 240, execute: watchdog)
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        python.waitUntilExit()
        watchdog.cancel()
        print(text, terminator: "")
        XCTAssertEqual(python.terminationStatus, 0,
                       "status_e2e.py failed:\n\(text)\ndaemon log (tail):\n\(daemon.log.suffix(60).joined(separator: "\n"))")
        XCTAssertTrue(FileManager.default.fileExists(atPath: screenshot))
    }

    func testStatusOffListensNowhere() throws {
        let d = try DaemonProcess(config: "[status]\nlisten = off\n[listener a]\nlisten = 127.0.0.1:0\n")
        addTeardownBlock { d.stop() }
        _ = try d.waitUntilReady()
        XCTAssertNil(d.log.first { $0.contains("status listening") })
    }

    func testTakenStatusPortStopsTheStartWithAClearMessage() throws {
        let (_, _, status) = try start("[status]\nlisten = 127.0.0.1:0\n[listener a]\nlisten = 127.0.0.1:0\n")
        let second = try DaemonProcess(config: "[status]\nlisten = \(status)\n[listener b]\nlisten = 127.0.0.1:0\n")
        XCTAssertEqual(second.waitForExit(), 1)
        let log = second.log.joined(separator: "\n")
        XCTAssertTrue(log.contains("status endpoint: cannot listen on \(status)"), log)
    }

    func testOverIPv6AndCountersSeenByCurl() throws {
        let (_, bound, status) = try start("[status]\nlisten = [::1]:0\n[listener six]\nlisten = [::1]:0\n")
        let address = try XCTUnwrap(bound["six"]?.first)
        let client = try UDPClient(ipv6: true)
        for i in 0..<5 {
            client.send(payload(100, seed: UInt64(i + 1)), to: address)
            XCTAssertNotNil(client.receive())
        }
        let received = "\nudprelayd_packets_received_total{listener=\"six\"} 5\n"
        let sent = "\nudprelayd_bytes_sent_total{listener=\"six\"} 500\n"
        // The worker counts what it sent just after the send, so the client can hold the last
        // reply a moment before the counter moves: ask again (up to 10 s) until it has.
        var curlStatus: Int32 = -1
        var text = ""
        let deadline = Date().addingTimeInterval(10)
        repeat {
            let curl = Process()
            curl.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
            curl.arguments = ["-sS", "--max-time", "10", "-g", "http://\(status)/metrics"]
            let out = Pipe()
            curl.standardOutput = out
            try curl.run()
            text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            curl.waitUntilExit()
            curlStatus = curl.terminationStatus
            if curlStatus != 0 || (text.contains(received) && text.contains(sent)) { break }
            usleep(50_000)
        } while Date() < deadline
        XCTAssertEqual(curlStatus, 0)
        XCTAssertTrue(text.contains(received), text)
        XCTAssertTrue(text.contains(sent), text)
    }
}
