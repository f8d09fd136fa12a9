import Foundation
import TestSupport
import UDPRelayConfig
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// `listen = 127.0.0.1:LOW-HIGH` with the real binary: one socket per port of the range, each
/// echoing, and the status endpoint grouping the range under its listener.
final class PortRangeEndToEndTests: XCTestCase {
    static let ports = 100
    static let loopback = IPAddress.v4(0x7F00_0001)

    /// A first port of `count` consecutive ports that are free on 127.0.0.1 now (each bound
    /// once, then released), below the usual ephemeral range so that sockets other tests open
    /// meanwhile rarely take one. At most 50 tries.
    func freeRange(count: Int) -> UInt16? {
        for _ in 0..<50 {
            let low = UInt16.random(in: 20_000...(32_000 - UInt16(count)))
            var held: [UDPClient] = []
            for port in low..<(low + UInt16(count)) {
                guard let s = try? UDPClient(bind: SocketAddress(ip: Self.loopback, port: port)) else { break }
                held.append(s)
            }
            if held.count == count { return low }
        }
        return nil
    }

    /// Starts the daemon on a range of `count` free ports (or the first `configured` of them),
    /// with an `other` listener beside it. Another process may take a port between the probe
    /// and the daemon's bind, so a start that reports it cannot bind is retried on another
    /// range (three times at most).
    func startOnFreeRange(count: Int, configured: Int? = nil) throws -> (DaemonProcess, [SocketAddress], SocketAddress, UInt16) {
        var lastLog = ""
        for _ in 0..<3 {
            let low = try XCTUnwrap(freeRange(count: count), "no \(count) consecutive free ports on 127.0.0.1")
            let high = low + UInt16((configured ?? count) - 1)
            do {
                let (d, bound, status) = try startDaemonWithStatus(
                    "[listener range]\nmode = echo\nlisten = 127.0.0.1:\(low)-\(high)\n[listener other]\nlisten = 127.0.0.1:0\n")
                return (d, bound["range"] ?? [], status, low)
            } catch let error as DaemonError {
                lastLog = error.description
                guard lastLog.contains("cannot bind") else { throw error }
            }
        }
        throw DaemonError.notReady("three ranges were taken before the daemon could bind them; the last log:\n\(lastLog)")
    }

    /// Sends one datagram to each address from one client; returns the ports that did not echo
    /// it back from that address.
    func silentPorts(_ addresses: [SocketAddress]) throws -> [UInt16] {
        let client = try UDPClient()
        var silent: [UInt16] = []
        for address in addresses {
            let text = "port \(address.port)"
            client.send(Array(text.utf8), to: address)
            guard let reply = client.receive(timeout: 3) else {
                silent.append(address.port)
                continue
            }
            XCTAssertEqual(String(decoding: reply.bytes, as: UTF8.self), text)
            XCTAssertEqual(reply.from, address, "the reply leaves from the port it was sent to")
        }
        return silent
    }

    func testEveryPortOfARangeOf100Echoes() throws {
        let (d, bound, status, low) = try startOnFreeRange(count: Self.ports)
        let expected = (0..<Self.ports).map { SocketAddress(ip: Self.loopback, port: low + UInt16($0)) }
        XCTAssertEqual(bound, expected, "the daemon binds one socket per port of the range, in order")

        XCTAssertEqual(try silentPorts(expected), [], "ports that did not echo")

        // Status: every address in /status and /metrics, the range on one line of the page.
        let object = try listenerStatus(status, "range")
        XCTAssertEqual((object["addresses"] as? [String])?.count, Self.ports)
        let metrics = try httpBody("/metrics", from: status)
        XCTAssertEqual(metrics.split(separator: "\n").filter { $0.hasPrefix("udprelayd_listener_bound{listener=\"range\"") }.count, Self.ports)
        let page = try httpBody("/", from: status)
        XCTAssertTrue(page.contains("<code>127.0.0.1:\(low)-\(low + UInt16(Self.ports - 1)) (100 ports)</code>"), page)
        XCTAssertFalse(page.contains("<code>127.0.0.1:\(low + 1)</code>"), "no port of the range on a line of its own")

        XCTAssertEqual(d.stop(), 0)
        let totals = d.totals("range")
        XCTAssertEqual(DaemonProcess.field("received", in: totals ?? ""), "\(Self.ports)", totals ?? d.log.joined(separator: "\n"))
        XCTAssertEqual(DaemonProcess.field("sent", in: totals ?? ""), "\(Self.ports)", totals ?? "")
    }

    /// A reload that moves the range rebuilds the listener: the ports it drops close, the ports
    /// it adds open, the ports both share keep echoing, and a listener beside it is untouched.
    func testReloadThatMovesARangeRebuildsOnlyThatListener() throws {
        let (d, bound, status, low) = try startOnFreeRange(count: 100, configured: 50)
        XCTAssertEqual(bound.count, 50)
        let other = try XCTUnwrap(try d.waitUntilReady()["other"]?.first, "the listener beside the range")
        // low..low+49 becomes low+25..low+99: 25 ports dropped, 25 kept, 50 added.
        let config = try String(contentsOfFile: d.configPath, encoding: .utf8)
        try config.replacingOccurrences(of: "127.0.0.1:\(low)-\(low + 49)", with: "127.0.0.1:\(low + 25)-\(low + 99)")
            .write(toFile: d.configPath, atomically: true, encoding: .utf8)
        let before = d.log.count
        d.signal(SIGHUP)
        let outcome = try XCTUnwrap(
            d.waitForLine(after: before) { $0.contains("reload rejected") || $0.contains(" reloaded ") },
            d.log.joined(separator: "\n"))
        XCTAssertTrue(outcome.contains(" reloaded "), d.log.dropFirst(before).joined(separator: "\n"))
        XCTAssertEqual(DaemonProcess.field("listeners.changed", in: outcome), "range", outcome)
        XCTAssertEqual(DaemonProcess.field("listeners.unchanged", in: outcome), "1", outcome)

        let expected = (25..<100).map { SocketAddress(ip: Self.loopback, port: low + UInt16($0)) }
        XCTAssertEqual(try listenerStatus(status, "range")["addresses"] as? [String], expected.map(\.description))
        XCTAssertEqual(try silentPorts(expected), [], "ports that did not echo after the reload")
        XCTAssertEqual(try silentPorts([other]), [], "the other listener still echoes")
        // The dropped ports are closed: binding one succeeds again.
        XCTAssertNoThrow(try UDPClient(bind: SocketAddress(ip: Self.loopback, port: low)), "port \(low) is released")
        XCTAssertTrue(try httpBody("/", from: status).contains("<code>127.0.0.1:\(low + 25)-\(low + 99) (75 ports)</code>"))
    }
}
