import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif
import TestSupport
import UDPRelayConfig

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

    /// Starts the daemon on a range of `count` free ports. Another process may take a port
    /// between the probe and the daemon's bind, so a start that reports it cannot bind is
    /// retried on another range (three times at most).
    func startOnFreeRange(count: Int) throws -> (DaemonProcess, [SocketAddress], SocketAddress, UInt16) {
        var lastLog = ""
        for _ in 0..<3 {
            let low = try XCTUnwrap(freeRange(count: count), "no \(count) consecutive free ports on 127.0.0.1")
            let high = low + UInt16(count - 1)
            do {
                let (d, bound, status) = try startDaemonWithStatus("[listener range]\nmode = echo\nlisten = 127.0.0.1:\(low)-\(high)\n")
                return (d, bound["range"] ?? [], status, low)
            } catch let error as DaemonError {
                lastLog = error.description
                guard lastLog.contains("cannot bind") else { throw error }
            }
        }
        throw DaemonError.notReady("three ranges were taken before the daemon could bind them; the last log:\n\(lastLog)")
    }

    func testEveryPortOfARangeOf100Echoes() throws {
        let (d, bound, status, low) = try startOnFreeRange(count: Self.ports)
        let expected = (0..<Self.ports).map { SocketAddress(ip: Self.loopback, port: low + UInt16($0)) }
        XCTAssertEqual(bound, expected, "the daemon binds one socket per port of the range, in order")

        let client = try UDPClient()
        var silent: [UInt16] = []
        for address in expected {
            let text = "port \(address.port)"
            client.send(Array(text.utf8), to: address)
            guard let reply = client.receive(timeout: 3) else { silent.append(address.port); continue }
            XCTAssertEqual(String(decoding: reply.bytes, as: UTF8.self), text)
            XCTAssertEqual(reply.from, address, "the reply leaves from the port it was sent to")
        }
        XCTAssertEqual(silent, [], "ports that did not echo")

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
}
