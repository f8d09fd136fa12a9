import Foundation
import TestSupport
import UDPRelayConfig
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// Runs the real binary and talks to it over loopback.
final class EchoEndToEndTests: XCTestCase {
    func testEchoesPayloadsByteForByteOnSeveralListenersOverIPv4AndIPv6() throws {
        let (_, bound) = try startDaemon(
            """
            [listener one]
            listen = 127.0.0.1:0, [::1]:0
            [listener two]
            listen = 127.0.0.1:0, [::1]:0
            """)
        XCTAssertEqual(bound["one"]?.count, 2)
        XCTAssertEqual(bound["two"]?.count, 2)
        for (name, addresses) in bound {
            for address in addresses {
                let client = try UDPClient(ipv6: address.ip.isIPv6)
                let maxSize = address.ip.isIPv6 ? 65527 : 65507
                for size in [0, 1, 1400, maxSize] {
                    let sent = payload(size, seed: UInt64(size + 1))
                    XCTAssertEqual(client.send(sent, to: address), size)
                    guard let reply = client.receive() else {
                        XCTFail("\(name) \(address): no reply to \(size) bytes")
                        continue
                    }
                    XCTAssertEqual(reply.bytes.count, size, "\(name) \(address)")
                    XCTAssertTrue(reply.bytes == sent, "\(name) \(address): \(size)-byte payload changed")
                    XCTAssertEqual(reply.from, address, "reply must come from the listener's address")
                }
            }
        }
    }

    func testWildcardListenerRepliesFromTheAddressTheDatagramWasSentTo() throws {
        let (_, bound) = try startDaemon(
            """
            [listener any]
            listen = 0.0.0.0:0, [::]:0
            """)
        let v4Port = try XCTUnwrap(bound["any"]?.first { !$0.ip.isIPv6 }?.port)
        let v6Port = try XCTUnwrap(bound["any"]?.first { $0.ip.isIPv6 }?.port)
        // 127.0.0.2 and 127.0.0.3 are local addresses on every Linux loopback.
        for target in ["127.0.0.1", "127.0.0.2", "127.0.0.3"] {
            let to = SocketAddress(ip: IPAddress(literal: target)!, port: v4Port)
            let client = try UDPClient(bind: SocketAddress(ip: IPAddress(literal: target)!, port: 0))
            client.send(Array("hi \(target)".utf8), to: to)
            let reply = try XCTUnwrap(client.receive(), "no reply via \(target)")
            XCTAssertEqual(String(decoding: reply.bytes, as: UTF8.self), "hi \(target)")
            XCTAssertEqual(reply.from, to, "reply must leave from \(target)")
        }
        let to6 = SocketAddress(ip: .v6(high: 0, low: 1), port: v6Port)
        let client6 = try UDPClient(ipv6: true)
        client6.send(Array("hi6".utf8), to: to6)
        let reply6 = try XCTUnwrap(client6.receive())
        XCTAssertEqual(reply6.bytes, Array("hi6".utf8))
        XCTAssertEqual(reply6.from, to6)
    }

    /// A burst from one client that the daemon reads in one batch (it is stopped while the
    /// burst is sent) goes back as segmented sends with packet info on a wildcard socket: the
    /// replies must still be the same datagrams, in order, from the address the client used.
    func testBurstToAWildcardListenerComesBackIntactInOrderFromTheAddressUsed() throws {
        let (daemon, bound) = try startDaemon(
            """
            [listener any]
            listen = 0.0.0.0:0, [::]:0
            """)
        let v4Port = try XCTUnwrap(bound["any"]?.first { !$0.ip.isIPv6 }?.port)
        let v6Port = try XCTUnwrap(bound["any"]?.first { $0.ip.isIPv6 }?.port)
        let targets = [SocketAddress(ip: IPAddress(literal: "127.0.0.2")!, port: v4Port), SocketAddress(ip: .v6(high: 0, low: 1), port: v6Port)]
        for (t, to) in targets.enumerated() {
            let client = try UDPClient(bind: SocketAddress(ip: to.ip, port: 0))
            let sent = (0..<40).map { payload($0 == 39 ? 77 : 512, seed: UInt64(t * 100 + $0)) }
            daemon.signal(SIGSTOP)
            for p in sent { client.send(p, to: to) }
            daemon.signal(SIGCONT)
            var got: [[UInt8]] = []
            while got.count < sent.count, let r = client.receive() {
                XCTAssertEqual(r.from, to, "reply must leave from \(to.ip)")
                got.append(r.bytes)
            }
            XCTAssertEqual(got.count, sent.count, "\(to)")
            XCTAssertTrue(got == sent, "\(to): every reply intact and in order")
        }
    }

    func testBurstFromManyClientsIsAllAnswered() throws {
        let (_, bound) = try startDaemon(
            """
            [listener burst]
            listen = 127.0.0.1:0
            """)
        let address = try XCTUnwrap(bound["burst"]?.first)
        let clients = try (0..<10).map { _ in try UDPClient() }
        let rounds = 10, perRound = 40
        for round in 0..<rounds {
            for (c, client) in clients.enumerated() {
                for i in 0..<perRound {
                    client.send(payload(64 + i, seed: UInt64(round * 100_000 + c * 1000 + i)), to: address)
                }
            }
            for (c, client) in clients.enumerated() {
                let got = client.receiveMany(perRound)
                XCTAssertEqual(got.count, perRound, "client \(c) round \(round)")
                let expected = Set((0..<perRound).map { payload(64 + $0, seed: UInt64(round * 100_000 + c * 1000 + $0)) })
                XCTAssertEqual(Set(got), expected, "client \(c) got someone else's or corrupted replies")
            }
        }
    }

    func testOversizedDatagramIsCountedAndNotEchoed() throws {
        let (daemon, bound) = try startDaemon(
            """
            [listener small]
            listen = 127.0.0.1:0
            max_datagram = 1000
            """)
        let address = try XCTUnwrap(bound["small"]?.first)
        let client = try UDPClient()
        client.send(payload(1001, seed: 1), to: address)
        client.send(payload(1000, seed: 2), to: address)
        let reply = try XCTUnwrap(client.receive())
        XCTAssertEqual(reply.bytes, payload(1000, seed: 2), "only the datagram within max_datagram comes back")
        XCTAssertNil(client.receive(timeout: 0.3), "the oversized datagram must not be echoed, not even cut short")
        XCTAssertEqual(daemon.stop(), 0)
        let totals = try XCTUnwrap(daemon.log.first { $0.contains("totals") && $0.contains("listener.name=small") })
        XCTAssertEqual(DaemonProcess.field("received", in: totals), "2")
        XCTAssertEqual(DaemonProcess.field("sent", in: totals), "1")
        XCTAssertEqual(DaemonProcess.field("drop.too_large", in: totals), "1")
    }

    func testSigtermExitsZeroPromptly() throws {
        let (daemon, _) = try startDaemon(
            """
            [listener a]
            listen = 127.0.0.1:0, [::1]:0
            [listener b]
            listen = 127.0.0.1:0
            """)
        let start = Date()
        XCTAssertEqual(daemon.stop(timeout: 5), 0)
        XCTAssertLessThan(Date().timeIntervalSince(start), 2.0, "idle shutdown must be prompt")
        XCTAssertNotNil(daemon.log.first { $0.contains("stopped") })
    }

    func testSigintExitsZero() throws {
        let (daemon, _) = try startDaemon("[listener a]\nlisten = 127.0.0.1:0\n")
        daemon.signal(SIGINT)
        XCTAssertEqual(daemon.waitForExit(), 0)
    }

    func testBadConfigExits78NamingFileAndLine() throws {
        let d = try DaemonProcess(config: "[listener a]\nlisten = 127.0.0.1:0\nmode = relay\n")
        XCTAssertEqual(d.waitForExit(), 78)
        XCTAssertNotNil(d.log.first { $0.contains("\(d.configPath):3: [listener a] mode: expected one of") }, d.log.joined(separator: "\n"))
    }

    func testCheckConfigReportsOKAndErrors() throws {
        let ok = try DaemonProcess(config: "[listener a]\nlisten = 127.0.0.1:7\n[listener b]\nlisten = [::1]:7\n", arguments: ["--check-config"])
        XCTAssertEqual(ok.waitForExit(), 0)
        XCTAssertTrue(ok.standardOutput.contains("configuration OK: 2 listeners"), ok.standardOutput)

        let bad = try DaemonProcess(config: "[listener a]\nlisten = 127.0.0.1:7\nfoo = 1\n[listener a]\n", arguments: ["--check-config"])
        XCTAssertEqual(bad.waitForExit(), 78)
        let log = bad.log.joined(separator: "\n")
        XCTAssertTrue(log.contains("\(bad.configPath):3: [listener a] foo: unknown key"), log)
        XCTAssertTrue(log.contains("\(bad.configPath):4: [listener a]: repeated listener name"), log)
    }

    func testBindFailureNamesListenerAndAddress() throws {
        let holder = try UDPClient()  // occupies a port
        let taken = holder.localAddress
        let d = try DaemonProcess(config: "[status]\nlisten = off\n[listener busy]\nlisten = \(taken)\n")
        let status = d.waitForExit()
        XCTAssertNotNil(status)
        XCTAssertNotEqual(status, 0)
        let log = d.log.joined(separator: "\n")
        XCTAssertTrue(log.contains("listener 'busy': cannot bind \(taken)"), log)
        XCTAssertTrue(log.contains("Address already in use"), log)
    }
}
