import Foundation
import Logging
import TestSupport
import UDPRelayConfig
import XCTest

@testable import UDPRelayDatapath

/// A session whose client came through a proxy (`accept_proxy_protocol`) replies to the proxy,
/// which a handed-over session (reload, restart) does not carry: it is closed instead, and the
/// client's next datagram through the proxy opens a new session whose replies reach the proxy.
final class ProxyAcceptHandoverTests: XCTestCase, ConfigFileTests {
    func startRelay(_ upstream: SocketAddress) throws -> (Datapath, Listener, RelayWorker) {
        let text = """
            [listener fwd]
            listen = 127.0.0.1:0
            mode = forward
            upstream = \(upstream)
            accept_proxy_protocol = v2
            proxy_protocol_from = 127.0.0.2/32
            """
        let datapath = try Datapath(configuration: try configuration(text), logger: Logger(label: "test"))
        datapath.startBlocking()
        let listener = try XCTUnwrap(datapath.listener(named: "fwd"))
        return (datapath, listener, try XCTUnwrap(listener.workers.first as? RelayWorker))
    }

    func testASessionBehindAProxyIsClosedNotHandedOver() throws {
        let upstream = try UpstreamServer(reply: { Array("re:".utf8) + $0 })
        defer { upstream.stop() }
        let proxy = try UDPClient(bind: SocketAddress(ip: .v4(0x7F00_0002), port: 0))
        let client = SocketAddress(ip: .v4(0xC612_0001), port: 1111)
        let (old, oldListener, oldWorker) = try startRelay(upstream.address)
        let header = ProxyProtocolV2.header(source: client, destination: oldListener.boundAddresses[0])
        proxy.send(header + Array("one".utf8), to: oldListener.boundAddresses[0])
        XCTAssertEqual(proxy.receive()?.bytes, Array("re:one".utf8))

        let handed = LockedBox<[HandedOverSession]>([])
        oldWorker.handSessionsOverAtStop(socket: 0) { handed.value = $0 }
        old.stopBlocking()
        XCTAssertEqual(handed.value.map(\.entry.client), [], "handed over, its replies would go to \(client) instead of the proxy")

        let (new, newListener, _) = try startRelay(upstream.address)
        defer { new.stopBlocking() }
        proxy.send(header + Array("two".utf8), to: newListener.boundAddresses[0])
        XCTAssertEqual(proxy.receive()?.bytes, Array("re:two".utf8))
        XCTAssertEqual(newListener.counters()[.sessionsCreated], 1)
    }
}
