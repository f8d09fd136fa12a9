import CUDPRelay
import Foundation
import Logging
import TestSupport
import UDPRelayConfig
import XCTest

@testable import UDPRelayDatapath

#if canImport(Glibc)
import Glibc
#endif

/// `workers = N`: N sockets per address with SO_REUSEPORT, each with its own worker.
final class WorkersTests: XCTestCase, ConfigFileTests {
    func reusePort(_ fd: Int32) -> Int32 {
        (try? UDPSocket.getIntOption(fd, SOL_SOCKET, CUR_SO_REUSEPORT)) ?? -1
    }

    func testEachAddressGetsNSocketsOnThePortTheFirstLearned() throws {
        let datapath = try Datapath(
            configuration: try configuration("[listener a]\nlisten = 127.0.0.1:0, [::1]:0\nworkers = 3\n"),
            logger: Logger(label: "test"))
        datapath.startBlocking()
        defer { datapath.stopBlocking() }
        let a = try XCTUnwrap(datapath.listener(named: "a"))
        XCTAssertEqual(a.workers.count, 6)
        XCTAssertEqual(a.groups.map(\.count), [3, 3])
        XCTAssertEqual(a.boundAddresses.count, 2, "one entry per listen address, not per socket")
        XCTAssertNotEqual(a.boundAddresses[0].port, 0)
        for (group, address) in zip(a.groups, a.boundAddresses) {
            XCTAssertEqual(Set(group.map(\.localAddress)), [address])
            XCTAssertEqual(Set(group.map(\.fd)).count, 3, "distinct sockets")
            for w in group { XCTAssertEqual(reusePort(w.fd), 1) }
        }
        for address in a.boundAddresses {
            let clients = try (0..<16).map { _ in try UDPClient(ipv6: address.ip.isIPv6) }
            for (i, c) in clients.enumerated() { XCTAssertEqual(echo(c, address, "c\(i)"), "c\(i)", "\(address)") }
        }
        let snapshot = try XCTUnwrap(datapath.snapshot().first)
        XCTAssertEqual(snapshot.addresses, a.boundAddresses)
        XCTAssertEqual(snapshot.workers.count, 6)
        XCTAssertEqual(snapshot.workers.reduce(0) { $0 + $1.counters[.receivedPackets] }, 32)
        XCTAssertEqual(snapshot.counters[.receivedPackets], 32)
    }

    func testOneWorkerDoesNotShareThePort() throws {
        let datapath = try Datapath(configuration: try configuration("[listener a]\nlisten = 127.0.0.1:0\n"), logger: Logger(label: "test"))
        defer { datapath.stopBlocking() }
        let a = try XCTUnwrap(datapath.listener(named: "a"))
        XCTAssertEqual(a.workers.count, 1)
        XCTAssertEqual(reusePort(a.workers[0].fd), 0, "another process must not be able to join the port")
    }

    func testAutoMeansOnlineCPUs() {
        let cpus = Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))
        XCTAssertEqual(WorkerCount.auto.resolved(), min(max(cpus, 1), 64))
        XCTAssertEqual(WorkerCount.count(5).resolved(), 5)
    }

    func testATakenPortFailsCleanlyNamingTheAddress() throws {
        // Bound without SO_REUSEPORT: no worker socket may join it.
        let taken = try UDPSocket.bound(to: SocketAddress(ip: .v4(0x7F00_0001), port: 0))
        defer { close(taken) }
        let address = try UDPSocket.localAddress(taken)
        var lc = ListenerConfiguration(name: "x", listen: [address])
        lc.workers = .count(2)
        XCTAssertThrowsError(try Listener(lc, logger: Logger(label: "test"))) { error in
            XCTAssertTrue("\(error)".contains("listener 'x': cannot bind \(address)"), "\(error)")
        }
    }

    func testReloadChangingWorkersOnAFixedPortReopensTheListener() throws {
        let port = try {
            let fd = try UDPSocket.bound(to: SocketAddress(ip: .v4(0x7F00_0001), port: 0))
            defer { close(fd) }
            return try UDPSocket.localAddress(fd).port
        }()
        func config(_ workers: String) throws -> Configuration {
            try configuration("[listener a]\nlisten = 127.0.0.1:\(port)\n\(workers)")
        }
        let datapath = try Datapath(configuration: try config(""), logger: Logger(label: "test"))
        datapath.startBlocking()
        defer { datapath.stopBlocking() }
        let address = SocketAddress(ip: .v4(0x7F00_0001), port: port)
        let client = try UDPClient()
        XCTAssertEqual(echo(client, address, "one"), "one")
        // 1 -> 3: the running socket is taken over (it had no SO_REUSEPORT) and two join it.
        var changes = try datapath.applyBlocking(try config("workers = 3\n"))
        XCTAssertEqual(changes.changed, ["a"])
        XCTAssertEqual(datapath.listener(named: "a")?.workers.count, 3)
        XCTAssertEqual(datapath.listener(named: "a")?.boundAddresses, [address])
        let clients = try (0..<12).map { _ in try UDPClient() }
        for (i, c) in clients.enumerated() { XCTAssertEqual(echo(c, address, "three \(i)"), "three \(i)") }
        // 3 -> 2 and back to the default.
        changes = try datapath.applyBlocking(try config("workers = 2\n"))
        XCTAssertEqual(changes.changed, ["a"])
        XCTAssertEqual(datapath.listener(named: "a")?.workers.count, 2)
        for (i, c) in clients.enumerated() { XCTAssertEqual(echo(c, address, "two \(i)"), "two \(i)") }
        changes = try datapath.applyBlocking(try config(""))
        XCTAssertEqual(changes.changed, ["a"])
        XCTAssertEqual(datapath.listener(named: "a")?.workers.count, 1)
        for (i, c) in clients.enumerated() { XCTAssertEqual(echo(c, address, "back \(i)"), "back \(i)") }
        // The same file again: nothing is reopened.
        XCTAssertTrue(try datapath.applyBlocking(try config("")).isEmpty)
    }

    func testInheritedSocketIsServedAloneWhateverWorkersSays() throws {
        let passed = try UDPSocket.bound(to: SocketAddress(ip: .v4(0x7F00_0001), port: 0))
        defer { close(passed) }
        let address = try UDPSocket.localAddress(passed)
        let datapath = try Datapath(
            configuration: try configuration("[listener act]\nlisten = 127.0.0.1:9\nworkers = 4\n"),
            logger: Logger(label: "test"), inherited: ["act": [passed]])
        datapath.startBlocking()
        defer { datapath.stopBlocking() }
        let act = try XCTUnwrap(datapath.listener(named: "act"))
        XCTAssertEqual(act.workers.count, 1)
        XCTAssertEqual(act.boundAddresses, [address])
        XCTAssertEqual(echo(try UDPClient(), address, "activated"), "activated")
    }

    func testAWedgedWorkerIsNamedByItsNumber() async throws {
        let datapath = try Datapath(
            configuration: try configuration("[listener a]\nlisten = 127.0.0.1:0\nworkers = 2\n"),
            logger: Logger(label: "test"))
        await datapath.start()
        let a = try XCTUnwrap(datapath.listener(named: "a"))
        let release = DispatchSemaphore(value: 0)
        a.workers[1].queue.async { release.wait() }  // wedge the second worker
        // The healthy worker must answer within the timeout: 2 s allows for ThreadSanitizer on a
        // loaded machine (the wedged one never answers, whatever the timeout).
        let problems = await datapath.probe(timeout: .seconds(2))
        release.signal()
        await datapath.stop()
        XCTAssertEqual(problems, ["listener 'a' queue for \(a.boundAddresses[0]) (worker 2 of 2) did not answer within 2.0 seconds"])
    }
}
