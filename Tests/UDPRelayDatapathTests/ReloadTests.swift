import Dispatch
import Foundation
import Logging
import TestSupport
import UDPRelayConfig
import XCTest

@testable import UDPRelayDatapath

#if canImport(Glibc)
import Glibc
#endif

/// `Datapath.apply`: reload as a diff, in process.
final class ReloadTests: XCTestCase, ConfigFileTests {
    /// A port that was free a moment ago (for tests that must name a fixed port).
    func freePort() throws -> UInt16 {
        let fd = try UDPSocket.bound(to: SocketAddress(ip: .v4(0x7F00_0001), port: 0))
        defer { close(fd) }
        return try UDPSocket.localAddress(fd).port
    }

    func testUnchangedListenerKeepsSocketAndCountersAndLosesNothingAcrossReloads() throws {
        let base = "[listener steady]\nlisten = 127.0.0.1:0\n"
        let datapath = try Datapath(configuration: try configuration(base), logger: Logger(label: "test"))
        datapath.startBlocking()
        defer { datapath.stopBlocking() }
        let steady = try XCTUnwrap(datapath.listener(named: "steady"))
        let address = steady.boundAddresses[0]
        let client = try UDPClient()

        let stopSending = LockedBox(false)
        let sent = LockedBox(0)
        let progress = LockedBox(0)
        // Replies seen so far: the sender keeps at most `window` datagrams unanswered, so a
        // slow datapath (ThreadSanitizer, a loaded machine) is never flooded past its socket
        // buffers; whatever goes missing is lost by the reloads, not by the test's pace.
        let answered = LockedBox(0)
        let window = 400  // fits the client's receive buffer even at a default rmem_max (about 500 small datagrams)
        // The sender thread only sends and this thread only receives on the client's socket.
        nonisolated(unsafe) let sending = client
        let sender = Thread {
            var i = 0
            while !stopSending.value && i < 2_000_000 {
                // Numbered datagrams, paced so the socket buffers never overflow.
                if i - answered.value >= window {
                    usleep(200)
                    continue
                }
                sending.send(Array("\(i)".utf8), to: address)
                i += 1
                if i % 50 == 0 {
                    progress.value = i
                    usleep(1000)
                }
            }
            sent.value = i
        }
        // Replies are read as they come, so the client's receive buffer never overflows
        // however long the reloads take on a loaded machine.
        let seenShared = LockedBox(Set<Int>())
        // Set once the sender has stopped: the number of datagrams it sent.
        let expected = LockedBox<Int?>(nil)
        let receiverDone = DispatchSemaphore(value: 0)
        nonisolated(unsafe) let receiving = client
        let receiver = Thread {
            var local = Set<Int>()
            var idleSince = Date()
            while true {
                if let r = receiving.receive(timeout: 0.2) {
                    local.insert(Int(String(decoding: r.bytes, as: UTF8.self))!)
                    answered.value = local.count
                    idleSince = Date()
                }
                // Done when every datagram sent is answered, or nothing more came for 10 s
                // after the sender stopped (the missing ones are lost).
                if let want = expected.value, local.count >= want || Date().timeIntervalSince(idleSince) > 10 {
                    break
                }
            }
            seenShared.value = local
            receiverDone.signal()
        }
        receiver.start()
        sender.start()
        for round in 0..<20 {
            // Reload while datagrams are in flight: wait for a few hundred more to be sent.
            let target = progress.value + 300
            let deadline = Date().addingTimeInterval(10)
            while progress.value < target && Date() < deadline { usleep(1000) }
            // Alternate adding and removing another listener, and changing a third.
            var text = base + "[listener churn]\nlisten = 127.0.0.1:0\nmax_datagram = \(1000 + round)\n"
            if round % 2 == 0 { text += "[listener extra]\nlisten = [::1]:0\n" }
            let changes = try datapath.applyBlocking(try configuration(text))
            XCTAssertEqual(changes.unchanged.first, "steady")
            XCTAssertTrue(datapath.listener(named: "steady") === steady, "an unchanged listener is the same object")
        }
        stopSending.value = true
        while sent.value == 0 { usleep(1000) }
        let total = sent.value
        expected.value = total
        XCTAssertEqual(receiverDone.wait(timeout: .now() + 60), .success)
        let seen = seenShared.value
        // Each round waited for 300 more sends, so at least 6000 went out during the reloads;
        // on a fast machine the sender may stop at exactly that many.
        XCTAssertGreaterThanOrEqual(total, 20 * 300)
        XCTAssertEqual(seen.count, total, "lost \(total - seen.count) of \(total) datagrams during 20 reloads")
        XCTAssertEqual(steady.counters()[.receivedPackets], UInt64(total), "counters survive reloads")
    }

    func testUnchangedRelayListenerKeepsItsSessions() throws {
        // An echo listener stands in for the upstream of a forward listener.
        let upstream = try Datapath(configuration: try configuration("[listener up]\nlisten = 127.0.0.1:0\n"), logger: Logger(label: "test"))
        upstream.startBlocking()
        defer { upstream.stopBlocking() }
        let up = try XCTUnwrap(upstream.listener(named: "up")?.boundAddresses.first)
        let relay = "[listener fwd]\nlisten = 127.0.0.1:0\nmode = forward\nupstream = \(up)\nmax_sessions = 100\n"
        let datapath = try Datapath(configuration: try configuration(relay), logger: Logger(label: "test"))
        datapath.startBlocking()
        defer { datapath.stopBlocking() }
        let fwd = try XCTUnwrap(datapath.listener(named: "fwd"))
        let client = try UDPClient()
        XCTAssertEqual(echo(client, fwd.boundAddresses[0], "first"), "first")
        XCTAssertEqual(fwd.counters()[.sessionsCreated], 1)
        let changes = try datapath.applyBlocking(try configuration(relay + "[listener other]\nlisten = 127.0.0.1:0\n"))
        XCTAssertEqual(changes.unchanged, ["fwd"])
        XCTAssertEqual(echo(client, fwd.boundAddresses[0], "second"), "second")
        XCTAssertEqual(fwd.counters()[.sessionsCreated], 1, "the client's session survived the reload")
        XCTAssertEqual(fwd.counters()[.sessionsActive], 1)
    }

    func testChangedListenerOnTheSamePortIsRebuiltWithoutRebinding() throws {
        let port = try freePort()
        let datapath = try Datapath(configuration: try configuration("[listener a]\nlisten = 127.0.0.1:\(port)\n"), logger: Logger(label: "test"))
        datapath.startBlocking()
        defer { datapath.stopBlocking() }
        let address = SocketAddress(ip: .v4(0x7F00_0001), port: port)
        let client = try UDPClient()
        XCTAssertEqual(echo(client, address, "before"), "before")
        let changes = try datapath.applyBlocking(try configuration("[listener a]\nlisten = 127.0.0.1:\(port)\nmax_datagram = 10\n"))
        XCTAssertEqual(changes.changed, ["a"])
        XCTAssertEqual(datapath.listener(named: "a")?.configuration.maxDatagram, 10)
        XCTAssertEqual(echo(client, address, "after"), "after")
        client.send(Array("longer than ten".utf8), to: address)
        XCTAssertNil(client.receive(timeout: 0.3), "the new max_datagram applies")
    }

    func testRemovedListenerClosesAndNewOneBinds() async throws {
        let datapath = try Datapath(configuration: try configuration("[listener a]\nlisten = 127.0.0.1:0\n"), logger: Logger(label: "test"))
        await datapath.start()
        defer { datapath.stopBlocking() }
        let oldAddress = try XCTUnwrap(datapath.listener(named: "a")?.boundAddresses.first)
        let changes = try await datapath.apply(try configuration("[listener b]\nlisten = 127.0.0.1:0\n"))
        XCTAssertEqual(changes, ListenerChanges(removed: ["a"], added: ["b"]))
        XCTAssertNil(datapath.listener(named: "a"))
        let b = try XCTUnwrap(datapath.listener(named: "b")?.boundAddresses.first)
        let client = try UDPClient()
        XCTAssertEqual(echo(client, b, "new"), "new")
        // The removed listener's port is free again.
        let fd = try UDPSocket.bound(to: oldAddress)
        close(fd)
        XCTAssertEqual(datapath.snapshot().map(\.name), ["b"])
        // A healthy probe returns as soon as every queue answered; the timeout only bounds a
        // wedged one, so it is generous for a slow (ThreadSanitizer) machine.
        let problems = await datapath.probe(timeout: .seconds(10))
        XCTAssertEqual(problems, [])
    }

    /// A queue wedged while a reload retires it must still fail the liveness probe (and so
    /// stop the watchdog pings), not vanish from the set while the reload hangs on it.
    func testAQueueWedgedDuringAReloadStillFailsTheProbe() async throws {
        let datapath = try Datapath(configuration: try configuration("[listener old]\nlisten = 127.0.0.1:0\n"), logger: Logger(label: "test"))
        await datapath.start()
        let release = DispatchSemaphore(value: 0)
        datapath.listener(named: "old")!.workers[0].queue.async { release.wait() }
        let next = try configuration("[listener new]\nlisten = 127.0.0.1:0\n")
        let applying = Task { _ = try? await datapath.apply(next) }
        let problems = await datapath.probe(timeout: .milliseconds(300))
        XCTAssertEqual(problems.count, 1, "\(problems)")
        XCTAssertTrue(problems.first?.hasPrefix("listener 'old' queue") ?? false, "\(problems)")
        release.signal()
        await applying.value
        XCTAssertEqual(datapath.listeners.map(\.name), ["new"])
        await datapath.stop()
    }

    func testFailedApplyChangesNothing() throws {
        let datapath = try Datapath(configuration: try configuration("[listener a]\nlisten = 127.0.0.1:0\n"), logger: Logger(label: "test"))
        datapath.startBlocking()
        defer { datapath.stopBlocking() }
        let a = try XCTUnwrap(datapath.listener(named: "a"))
        let holder = try UDPClient()
        XCTAssertThrowsError(
            try datapath.applyBlocking(
                try configuration(
                    """
                    [listener b]
                    listen = 127.0.0.1:0
                    [listener busy]
                    listen = \(holder.localAddress)
                    """))
        ) { error in
            XCTAssertEqual((error as? BindError)?.listener, "busy")
        }
        XCTAssertEqual(datapath.listeners.map(\.name), ["a"])
        XCTAssertTrue(datapath.listener(named: "a") === a)
        let client = try UDPClient()
        XCTAssertEqual(echo(client, a.boundAddresses[0], "still"), "still")
    }

    func testInheritedSocketServesTheListenerInsteadOfABind() throws {
        // Stands in for a socket systemd passes in: bound, blocking, not close-on-exec.
        let passed = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        defer { close(passed) }
        var (storage, length) = TestAddress.storage(SocketAddress(ip: .v4(0x7F00_0001), port: 0))
        XCTAssertEqual(withUnsafePointer(to: &storage) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(passed, $0, length) } }, 0)
        let address = try UDPSocket.localAddress(passed)
        let config = try configuration("[listener act]\nlisten = 127.0.0.1:9\n[listener plain]\nlisten = 127.0.0.1:0\n")
        let datapath = try Datapath(configuration: config, logger: Logger(label: "test"), inherited: ["act": [passed]])
        datapath.startBlocking()
        XCTAssertEqual(datapath.listener(named: "act")?.boundAddresses, [address])
        let client = try UDPClient()
        XCTAssertEqual(echo(client, address, "activated"), "activated")
        // A changed listener takes the inherited socket again.
        try datapath.applyBlocking(try configuration("[listener act]\nlisten = 127.0.0.1:9\nmax_datagram = 100\n[listener plain]\nlisten = 127.0.0.1:0\n"))
        XCTAssertEqual(echo(client, address, "again"), "again")
        datapath.stopBlocking()
        // The datapath served duplicates: the passed-in descriptor is still open.
        XCTAssertNotEqual(fcntl(passed, F_GETFD), -1)
    }
}
