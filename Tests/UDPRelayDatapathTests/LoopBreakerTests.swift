import Foundation
import Logging
import TestSupport
import UDPRelayConfig
import XCTest

@testable import UDPRelayDatapath

#if canImport(Glibc)
import Glibc
#endif

/// A relay whose upstream is itself (in any spelling) or another
/// relay listener of the daemon must not loop until descriptors run out. The configurations are
/// built in code, past any check `--check-config` makes, so the runtime breaker is what is tested.
final class LoopBreakerTests: XCTestCase {
    /// A UDP port free on every address a moment ago.
    func freePort() throws -> UInt16 {
        let probe = try UDPClient(bind: SocketAddress(ip: .v4(0), port: 0))
        return probe.localAddress.port
    }

    func relay(_ name: String, listen: String, upstream: String, mode: ListenerMode = .forward) throws -> ListenerConfiguration {
        ListenerConfiguration(
            name: name, listen: [try SocketAddress(parsing: listen)], mode: mode,
            upstreams: [try UpstreamEndpoint(parsing: upstream)])
    }

    func waitFor(_ deadline: Double = 10, _ condition: () -> Bool) -> Bool {
        let end = Date().addingTimeInterval(deadline)
        while !condition() {
            if Date() > end { return false }
            usleep(2000)
        }
        return true
    }

    func testARelayToItselfOrToAnotherRelayOfTheDaemonEndsAtTheFirstDatagram() throws {
        let p = try freePort(), p1 = try freePort(), p2 = try freePort(), pm = try freePort()
        let echo = ListenerConfiguration(name: "echo", listen: [SocketAddress(ip: .v4(0x7F00_0001), port: 0)])
        let listeners = [
            try relay("self", listen: "0.0.0.0:\(p)", upstream: "127.0.0.9:\(p)"),
            try relay("one", listen: "127.0.0.1:\(p1)", upstream: "127.0.0.1:\(p2)"),
            try relay("two", listen: "127.0.0.1:\(p2)", upstream: "127.0.0.1:\(p1)"),
            try relay("mirror", listen: "[::]:\(pm)", upstream: "[::1]:\(pm)", mode: .mirror),
            echo,
        ]
        var configuration = try ConfigLoader.parse("[status]\nlisten = off\n[listener x]\nlisten = 127.0.0.1:0\n", file: "t.ini")
        configuration.listeners = listeners
        let datapath = try Datapath(configuration: configuration, logger: Logger(label: "test"))
        datapath.startBlocking()
        defer { datapath.stopBlocking() }
        let client = try UDPClient()
        let client6 = try UDPClient(ipv6: true)
        client.send(Array("self".utf8), to: SocketAddress(ip: .v4(0x7F00_0001), port: p))
        client.send(Array("pair".utf8), to: SocketAddress(ip: .v4(0x7F00_0001), port: p1))
        client6.send(Array("mirror".utf8), to: SocketAddress(ip: .v6(high: 0, low: 1), port: pm))
        let own = try XCTUnwrap(datapath.listener(named: "self")), one = try XCTUnwrap(datapath.listener(named: "one"))
        let two = try XCTUnwrap(datapath.listener(named: "two")), mirror = try XCTUnwrap(datapath.listener(named: "mirror"))
        XCTAssertTrue(waitFor { own.counters()[.dropLoop] == 1 }, "\(own.counters()[.receivedPackets]) received")
        XCTAssertTrue(waitFor { one.counters()[.dropLoop] == 1 })
        XCTAssertTrue(waitFor { mirror.counters()[.receivedPackets] == 1 })
        // A relay to this daemon's echo listener is not a loop, and is served.
        let echoPort = try XCTUnwrap(datapath.listener(named: "echo")?.boundAddresses.first?.port)
        let toEcho = try relay("to-echo", listen: "127.0.0.1:0", upstream: "127.0.0.1:\(echoPort)")
        configuration.listeners.append(toEcho)
        try datapath.applyBlocking(configuration)
        let relayToEcho = try XCTUnwrap(datapath.listener(named: "to-echo")?.boundAddresses.first)
        client.send(Array("via echo".utf8), to: relayToEcho)
        XCTAssertEqual(client.receive()?.bytes, Array("via echo".utf8))
        // Sent through every listener: nothing more arrived anywhere, and the mirror copied
        // nothing to itself.
        client.send([1], to: relayToEcho)
        XCTAssertEqual(client.receive()?.bytes, [1])
        XCTAssertEqual(own.counters()[.receivedPackets], 1)
        XCTAssertEqual(own.counters()[.sessionsCreated], 0)
        XCTAssertEqual(one.counters()[.receivedPackets], 1)
        XCTAssertEqual(two.counters()[.receivedPackets], 0, "one never sent to two")
        XCTAssertEqual(mirror.counters()[.receivedPackets], 1)
        XCTAssertEqual(mirror.counters()[.sentPackets], 0)
    }
}
