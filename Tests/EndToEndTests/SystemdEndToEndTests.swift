import Foundation
import TestSupport
import UDPRelayConfig
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// The systemd contract without systemd: a fake NOTIFY_SOCKET, sockets passed like socket
/// activation does, SIGHUP reloads, journald priority prefixes. (Under a real systemd:
/// NspawnEndToEndTests.)
final class SystemdEndToEndTests: XCTestCase {
    func launch(
        _ config: String, notify: NotifySocket? = nil, environment: [String: String] = [:],
        inheritedSocket: (fd: Int32, name: String)? = nil, journalStream: Bool = false
    ) throws -> DaemonProcess {
        var env = environment
        if let notify { env["NOTIFY_SOCKET"] = notify.path }
        return try launchDaemon(config, environment: env, inheritedSocket: inheritedSocket, journalStream: journalStream)
    }

    func rewrite(_ d: DaemonProcess, _ config: String) throws {
        try ("[status]\nlisten = off\n" + config).write(toFile: d.configPath, atomically: true, encoding: .utf8)
    }

    func testNotifiesReadyStatusReloadingAndStopping() throws {
        let notify = try NotifySocket()
        let d = try launch("[listener a]\nlisten = 127.0.0.1:0\n", notify: notify)
        var seen: [String] = []
        let ready = try XCTUnwrap(notify.wait(seen: &seen) { $0.contains("READY=1") }, "no READY=1; log:\n\(d.log.joined(separator: "\n"))")
        XCTAssertEqual(ready, "READY=1\nSTATUS=1 listener (1 socket); config gen 1")
        // READY=1 comes only after the listener serves.
        let bound = try d.waitUntilReady()
        let address = try XCTUnwrap(bound["a"]?.first)
        let client = try UDPClient()
        XCTAssertEqual(echo(client, address, "one"), "one")

        // The live summary is refreshed every few seconds with rates.
        let live = try XCTUnwrap(notify.wait(seen: &seen) { $0.hasPrefix("STATUS=") && $0.contains("pkt/s") })
        XCTAssertTrue(live.hasPrefix("STATUS=1 listener (1 socket), "), live)

        // A good reload: RELOADING=1 with MONOTONIC_USEC, then READY=1 with the new generation.
        try rewrite(d, "[listener a]\nlisten = \(address)\n[listener b]\nlisten = 127.0.0.1:0\n")
        d.signal(SIGHUP)
        let reloading = try XCTUnwrap(notify.wait(seen: &seen) { $0.contains("RELOADING=1") })
        XCTAssertTrue(reloading.hasPrefix("RELOADING=1\nMONOTONIC_USEC="), reloading)
        let reloaded = try XCTUnwrap(notify.wait(seen: &seen) { $0.contains("READY=1") })
        XCTAssertTrue(reloaded.hasPrefix("READY=1\nSTATUS=2 listeners (2 sockets); config gen 2, reloaded "), reloaded)
        XCTAssertNotNil(d.waitForLine(containing: "reloaded generation=2"))
        XCTAssertEqual(echo(client, address, "two"), "two")

        // A bad reload keeps serving and says so in STATUS=; each error is logged once.
        try rewrite(d, "[listener a]\nlisten = \(address)\nmode = nonsense\nbogus = 1\n")
        d.signal(SIGHUP)
        _ = try XCTUnwrap(notify.wait(seen: &seen) { $0.contains("RELOADING=1") })
        let rejected = try XCTUnwrap(notify.wait(seen: &seen) { $0.contains("READY=1") })
        XCTAssertTrue(rejected.contains("config gen 2, RELOAD FAILED "), rejected)
        XCTAssertTrue(rejected.contains("\(d.configPath):5: [listener a] mode: "), rejected)
        XCTAssertTrue(rejected.hasSuffix("(+1 more)"), rejected)
        XCTAssertNotNil(d.waitForLine(containing: "reload rejected"))
        XCTAssertEqual(d.log.filter { $0.contains("reload: \(d.configPath):6: [listener a] bogus: unknown key") }.count, 1, d.log.joined(separator: "\n"))
        XCTAssertEqual(echo(client, address, "three"), "three", "a bad reload keeps serving")

        d.signal(SIGTERM)
        XCTAssertNotNil(notify.wait(seen: &seen) { $0 == "STOPPING=1" })
        XCTAssertEqual(d.waitForExit(), 0)
    }

    func testWatchdogPingsStopWhileTheProcessIsFrozen() throws {
        let notify = try NotifySocket()
        let d = try launch("[listener a]\nlisten = 127.0.0.1:0\n", notify: notify, environment: ["WATCHDOG_USEC": "400000"])
        var seen: [String] = []
        XCTAssertNotNil(notify.wait(seen: &seen) { $0.contains("READY=1") })
        XCTAssertNotNil(notify.wait(timeout: 2, seen: &seen) { $0 == "WATCHDOG=1" })
        XCTAssertNotNil(d.waitForLine(containing: "watchdog enabled"))
        d.signal(SIGSTOP)
        while notify.receive(timeout: 0.1) != nil {}  // anything sent before the stop
        XCTAssertNil(notify.receive(timeout: 0.8), "no pings from a frozen process")
        d.signal(SIGCONT)
        XCTAssertNotNil(notify.wait(timeout: 2, seen: &seen) { $0 == "WATCHDOG=1" })
    }

    func testInheritedSocketServesTheListenerOfTheSameName() throws {
        // Bound by "systemd" (this test) and passed in as fd 3 named "act".
        let passed = try UDPClient()
        let address = passed.localAddress
        let d = try launch(
            """
            [listener act]
            listen = 127.0.0.1:9
            [listener plain]
            listen = 127.0.0.1:0
            """, inheritedSocket: (passed.fd, "act"))
        let bound = try d.waitUntilReady()
        XCTAssertEqual(bound["act"], [address], "the inherited socket replaces the configured address")
        XCTAssertEqual(bound["plain"]?.count, 1, "listeners not passed in are bound as usual")
        XCTAssertNotNil(d.log.first { $0.contains("using sockets passed by systemd") && $0.contains("listener.name=act") })
        let client = try UDPClient()
        XCTAssertEqual(echo(client, address, "activated"), "activated")
        XCTAssertEqual(echo(client, try XCTUnwrap(bound["plain"]?.first), "plain"), "plain")
        // A reload that changes the listener serves the same inherited socket.
        try rewrite(d, "[listener act]\nlisten = 127.0.0.1:9\nmax_datagram = 1000\n[listener plain]\nlisten = 127.0.0.1:0\n")
        d.signal(SIGHUP)
        XCTAssertNotNil(d.waitForLine(containing: "reloaded generation=2"))
        XCTAssertEqual(echo(client, address, "still"), "still")
        XCTAssertEqual(d.stop(), 0)
    }

    func testInheritedSocketWithAnUnknownNameIsAClearError() throws {
        let passed = try UDPClient()
        let d = try launch("[listener echo]\nlisten = 127.0.0.1:0\n", inheritedSocket: (passed.fd, "udprelayd.socket"))
        XCTAssertEqual(d.waitForExit(), 1)
        let log = d.log.joined(separator: "\n")
        XCTAssertTrue(
            log.contains("socket 'udprelayd.socket' passed by systemd (fd 3) matches no [listener udprelayd.socket] in \(d.configPath) (listeners: echo)"), log)
    }

    /// 20 reloads while a client sends numbered datagrams to an unchanged listener: none lost.
    func testTwentyReloadsUnderTrafficLoseNothing() throws {
        let d = try launch("[listener steady]\nlisten = 127.0.0.1:0\n")
        let steady = try XCTUnwrap(try d.waitUntilReady()["steady"]?.first)
        let client = try UDPClient()
        var sent = 0
        var received = Set<Int>()
        func drain() {
            while let r = client.receive(timeout: 0) { received.insert(Int(String(decoding: r.bytes, as: UTF8.self))!) }
        }
        let start = Date()
        for round in 1...20 {
            // "steady" is unchanged (same text, port 0 included): it must keep its socket.
            var text = "[listener steady]\nlisten = 127.0.0.1:0\n[listener churn]\nlisten = 127.0.0.1:0\nmax_datagram = \(1000 + round)\n"
            if round % 2 == 0 { text += "[listener extra]\nlisten = [::1]:0\n" }
            try rewrite(d, text)
            let mark = d.log.count
            let before = sent
            d.signal(SIGHUP)
            // Keep sending while the reload happens, until it is logged and 200 more were sent.
            while sent - before < 200 || d.waitForLine(containing: "reloaded generation=\(round + 1)", after: mark, timeout: 0.001) == nil {
                for _ in 0..<20 {
                    client.send(Array("\(sent)".utf8), to: steady)
                    sent += 1
                }
                drain()
                XCTAssertLessThan(Date().timeIntervalSince(start), 60, "reloads take too long")
                if Date().timeIntervalSince(start) > 60 { return }
                usleep(500)
            }
        }
        while received.count < sent, let r = client.receive(timeout: 3) {
            received.insert(Int(String(decoding: r.bytes, as: UTF8.self))!)
        }
        XCTAssertGreaterThanOrEqual(sent, 20 * 200)
        XCTAssertEqual(received.count, sent, "lost \(sent - received.count) of \(sent) datagrams across 20 reloads")
        XCTAssertEqual(d.stop(), 0)
        let totals = try XCTUnwrap(d.log.first { $0.contains("totals") && $0.contains("listener.name=steady") })
        XCTAssertEqual(DaemonProcess.field("received", in: totals), "\(sent)", "the unchanged listener kept its counters")
    }

    /// The outcome of reloads is visible in /status too (the status endpoint reads DaemonState).
    func testReloadOutcomeShowsInStatusJSON() throws {
        let (d, _, status) = try startDaemonWithStatus("[listener a]\nlisten = 127.0.0.1:0\n")
        let config = try String(contentsOfFile: d.configPath, encoding: .utf8)
        func configObject() throws -> [String: Any] {
            let c = try TCPClient(to: status)
            XCTAssertTrue(c.send("GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
            let response = try XCTUnwrap(c.readResponse())
            let body = try XCTUnwrap(response.range(of: "\r\n\r\n").map { String(response[$0.upperBound...]) })
            let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any])
            return try XCTUnwrap(json["config"] as? [String: Any])
        }
        XCTAssertEqual(try configObject()["generation"] as? Int, 1)

        try (config + "mode = nonsense\n").write(toFile: d.configPath, atomically: true, encoding: .utf8)
        d.signal(SIGHUP)
        XCTAssertNotNil(d.waitForLine(containing: "reload rejected"))
        var c = try configObject()
        XCTAssertEqual(c["generation"] as? Int, 1)
        var last = try XCTUnwrap(c["last_reload"] as? [String: Any])
        XCTAssertEqual(last["ok"] as? Bool, false)
        let errors = try XCTUnwrap(last["errors"] as? [String])
        XCTAssertEqual(errors.count, 1)
        XCTAssertTrue(errors[0].hasPrefix("\(d.configPath):5: [listener a] mode: "), errors[0])

        try config.write(toFile: d.configPath, atomically: true, encoding: .utf8)
        d.signal(SIGHUP)
        XCTAssertNotNil(d.waitForLine(containing: "reloaded generation=2"))
        c = try configObject()
        XCTAssertEqual(c["generation"] as? Int, 2)
        last = try XCTUnwrap(c["last_reload"] as? [String: Any])
        XCTAssertEqual(last["ok"] as? Bool, true)
    }

    func testReloadAppliesANewLogLevel() throws {
        let notify = try NotifySocket()
        let d = try launch("[daemon]\nlog_level = warning\n[listener a]\nlisten = 127.0.0.1:0\n", notify: notify)
        var seen: [String] = []
        XCTAssertNotNil(notify.wait(seen: &seen) { $0.contains("READY=1") })
        XCTAssertNil(d.log.first { $0.contains(" INFO ") }, "nothing below warning at log_level = warning")
        try rewrite(d, "[daemon]\nlog_level = info\n[listener a]\nlisten = 127.0.0.1:0\n")
        d.signal(SIGHUP)
        XCTAssertNotNil(d.waitForLine(containing: "NOTICE log level changed log.level=info"), d.log.joined(separator: "\n"))
        XCTAssertNotNil(d.waitForLine(containing: "NOTICE reloaded generation=2"))
        XCTAssertEqual(d.stop(), 0)
        XCTAssertNotNil(d.log.first { $0.contains(" INFO stopped") }, "info lines appear after the reload")
    }

    func testJournalStderrGetsPriorityPrefixesWhenTheJournalSocketIsAbsent() throws {
        guard access("/run/systemd/journal/socket", F_OK) != 0 else {
            throw XCTSkip("a journald runs here; the journal path is covered by NspawnEndToEndTests")
        }
        let d = try launch("[listener a]\nlisten = 127.0.0.1:0\n", journalStream: true)
        XCTAssertNotNil(d.waitForLine(containing: "<6>ready"), d.log.joined(separator: "\n"))
        XCTAssertNotNil(d.log.first { $0.hasPrefix("<6>starting ") })
        XCTAssertNotNil(d.log.first { $0.hasPrefix("<6>listening ") && $0.contains("listener.name=a") })
        try rewrite(d, "[listener a]\nlisten = 127.0.0.1:0\nfoo = 1\n")
        d.signal(SIGHUP)
        XCTAssertNotNil(d.waitForLine(containing: "<3>reload: "), d.log.joined(separator: "\n"))
        XCTAssertNotNil(d.waitForLine(containing: "<5>reloading"))
    }
}
