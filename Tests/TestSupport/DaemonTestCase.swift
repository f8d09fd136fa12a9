import Foundation
import UDPRelayConfig
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// Starting and reading the daemon from a test: each starts it with the test's configuration
/// after a `[status]` section and stops it when the test ends.
extension XCTestCase {
    /// Starts the daemon with `[status] listen = off` (or on a free loopback port when
    /// `status`) before `config`, without waiting for it.
    public func launchDaemon(
        _ config: String, status: Bool = false, arguments: [String] = [],
        environment: [String: String] = [:], inheritedSocket: (fd: Int32, name: String)? = nil,
        journalStream: Bool = false, fileLimit: Int? = nil
    ) throws -> DaemonProcess {
        let d = try DaemonProcess(
            config: (status ? "[status]\nlisten = 127.0.0.1:0\n" : "[status]\nlisten = off\n") + config,
            arguments: arguments, environment: environment,
            inheritedSocket: inheritedSocket, journalStream: journalStream, fileLimit: fileLimit)
        addTeardownBlock { d.stop() }
        return d
    }

    /// Starts the daemon as `launchDaemon` does and waits until it serves; returns it and the
    /// addresses each listener bound.
    public func startDaemon(
        _ config: String, status: Bool = false, arguments: [String] = [],
        inheritedSocket: (fd: Int32, name: String)? = nil,
        fileLimit: Int? = nil
    ) throws -> (DaemonProcess, [String: [SocketAddress]]) {
        let d = try launchDaemon(config, status: status, arguments: arguments, inheritedSocket: inheritedSocket, fileLimit: fileLimit)
        return (d, try d.waitUntilReady())
    }

    /// Starts the daemon with its status endpoint on a free loopback port; returns it, the bound
    /// addresses and the status endpoint's address.
    public func startDaemonWithStatus(_ config: String) throws -> (DaemonProcess, [String: [SocketAddress]], SocketAddress) {
        let (d, bound) = try startDaemon(config, status: true)
        let line = try XCTUnwrap(d.log.first { $0.contains(" status listening ") }, d.log.joined(separator: "\n"))
        return (d, bound, try SocketAddress(parsing: try XCTUnwrap(DaemonProcess.field("address", in: line))))
    }

    /// Stops the daemon (it must exit 0) and returns the `totals` line of `listener`.
    public func stopAndTotals(_ d: DaemonProcess, _ listener: String, file: StaticString = #filePath, line: UInt = #line) throws -> String {
        XCTAssertEqual(d.stop(), 0, file: file, line: line)
        return try XCTUnwrap(d.totals(listener), d.log.joined(separator: "\n"), file: file, line: line)
    }

    /// Sends `text` to `address` and returns the reply, if one comes within 3 s.
    public func echo(_ client: UDPClient, _ address: SocketAddress, _ text: String) -> String? {
        client.send(Array(text.utf8), to: address)
        return client.receive(timeout: 3).map { String(decoding: $0.bytes, as: UTF8.self) }
    }

    /// The body of `GET path` from the status endpoint at `status`.
    public func httpBody(_ path: String, from status: SocketAddress) throws -> String {
        try Self.httpBody(path, from: status)
    }

    /// `httpBody` for code without a test case at hand (a thread in a network namespace).
    public static func httpBody(_ path: String, from status: SocketAddress) throws -> String {
        let tcp = try TCPClient(to: status)
        tcp.send("GET \(path) HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        let response = try XCTUnwrap(tcp.readResponse(), "no answer from \(path)")
        return String(try XCTUnwrap(response.range(of: "\r\n\r\n").map { response[$0.upperBound...] }))
    }

    /// The object of listener `name` in the status endpoint's `GET /status`.
    public func listenerStatus(_ status: SocketAddress, _ name: String) throws -> [String: Any] {
        try Self.listenerStatus(status, name)
    }

    /// `listenerStatus` for code without a test case at hand (a thread in a network namespace).
    public static func listenerStatus(_ status: SocketAddress, _ name: String) throws -> [String: Any] {
        let body = try httpBody("/status", from: status)
        let doc = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any])
        let listeners = try XCTUnwrap(doc["listeners"] as? [[String: Any]])
        return try XCTUnwrap(listeners.first { $0["name"] as? String == name }, "no listener \(name) in \(body)")
    }

    /// Skips the test unless it runs as root (CI does), saying what root is needed for.
    public func requireRoot(_ why: String) throws {
        if getuid() != 0 { throw XCTSkip("needs root \(why) (CI runs as root)") }
    }
}

extension DaemonProcess {
    /// The `totals` line the daemon logged for `listener` at shutdown, if any yet.
    public func totals(_ listener: String) -> String? {
        log.first { $0.contains(" totals ") && Self.field("listener.name", in: $0) == listener }
    }

    /// The number in `key=N` of `line`, if the line has that field.
    public static func number(_ key: String, in line: String?) -> Int? {
        line.flatMap { field(key, in: $0) }.flatMap { Int($0) }
    }

    /// The number in `key=N` of `line`, or -1 when the line or the field is missing.
    public static func count(_ key: String, in line: String?) -> Int {
        number(key, in: line) ?? -1
    }
}
