import Foundation
import Logging
import TestSupport
import UDPRelayConfig
import XCTest

@testable import UDPRelayDatapath

/// Health probes of a `proxy_protocol = v2` listener carry the LOCAL header, so an upstream
/// that requires a header on every datagram (dnsdist with `setProxyProtocolACL`) answers them
/// instead of marking itself down by dropping them.
final class ProxyProbeTests: XCTestCase, ConfigFileTests {
    func testTheLocalHeaderIsTheSpecsSixteenBytes() {
        // proxy-protocol.txt 2.2: signature, 0x20 (version 2, LOCAL), 0x00 (UNSPEC), length 0.
        XCTAssertEqual(
            ProxyProtocolV2.localHeader,
            [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, 0x20, 0x00, 0x00, 0x00])
    }

    func probes(proxy: Bool) async throws -> [UInt8] {
        let upstream = try UpstreamServer(reply: { $0 })
        let text =
            "[listener f]\nlisten = 127.0.0.1:0\nmode = forward\nupstream = \(upstream.address)\n"
            + "health_probe = ping\nhealth_interval = 100ms\n" + (proxy ? "proxy_protocol = v2\n" : "")
        let datapath = try Datapath(configuration: try configuration(text), logger: Logger(label: "test"))
        await datapath.start()
        XCTAssertGreaterThanOrEqual(upstream.waitForCount(1), 1, "a probe arrives")
        await datapath.stop()
        return try XCTUnwrap(upstream.datagrams.first).bytes
    }

    func testProbesOfAProxyListenerStartWithTheLocalHeaderAndOthersArePlain() async throws {
        let withHeader = try await probes(proxy: true)
        XCTAssertEqual(withHeader, ProxyProtocolV2.localHeader + Array("ping".utf8))
        let plain = try await probes(proxy: false)
        XCTAssertEqual(plain, Array("ping".utf8))
    }
}
