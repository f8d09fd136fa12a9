import Foundation
import Logging
import TestSupport
import UDPRelayConfig
import XCTest

@testable import UDPRelayDatapath

#if canImport(Glibc)
import Glibc
#endif

/// `session_log`: one record per ended session, with what it was (client, upstream, source
/// port, start, duration, datagrams and bytes each way) and why it ended; at most
/// `session_log_rate` a second per worker, the rest counted in one line a second.
final class SessionLogTests: XCTestCase, ConfigFileTests {
    /// A forward listener `fwd` over `upstream` with the session log on and the extra keys,
    /// logging to `log`.
    func startRelay(
        _ upstream: SocketAddress, log: RecordLog, extra: String = "", tuning: DatapathTuning = DatapathTuning()
    ) throws -> (Datapath, Listener) {
        let text = "[listener fwd]\nlisten = 127.0.0.1:0\nmode = forward\nupstream = \(upstream)\nsession_log = yes\n" + extra
        let datapath = try Datapath(configuration: try configuration(text), logger: Logger(label: "t") { _ in log }, tuning: tuning)
        datapath.startBlocking()
        return (datapath, try XCTUnwrap(datapath.listener(named: "fwd")))
    }

    /// Waits for the session record of `client` and returns it (nil after 5 s).
    func record(of client: UDPClient, in log: RecordLog) -> [String: String]? {
        var found: [String: String]?
        _ = waitUntil(5) {
            found = log.records.first { $0["session.client"] == "\(client.localAddress)" }
            return found != nil
        }
        return found
    }

    /// The counts of a record: datagrams and bytes to the upstream, then to the client.
    func counts(_ r: [String: String]?) -> [String?] {
        ["session.datagrams_to_upstream", "session.bytes_to_upstream", "session.datagrams_to_client", "session.bytes_to_client"].map { r?[$0] }
    }

    func testASessionThatIdlesOutHasOneRecordWithItsCounts() throws {
        let log = RecordLog()
        let upstream = try UDPClient()
        let (datapath, relay) = try startRelay(upstream.localAddress, log: log, extra: "session_timeout = 200ms\n")
        defer { datapath.stopBlocking() }
        let client = try UDPClient()
        let before = Date()
        client.send(Array("hello".utf8), to: relay.boundAddresses[0])
        let first = try XCTUnwrap(upstream.receive())
        client.send(Array("hi!".utf8), to: relay.boundAddresses[0])
        XCTAssertNotNil(upstream.receive())
        upstream.send(Array("reply:1".utf8), to: first.from)
        XCTAssertNotNil(client.receive())

        let r = try XCTUnwrap(record(of: client, in: log), "a record once it idles out: \(log.lines)")
        XCTAssertEqual(r["session.end"], "idle_timeout")
        XCTAssertEqual(counts(r), ["2", "8", "1", "7"])
        XCTAssertEqual(r["session.upstream"], "\(upstream.localAddress)")
        XCTAssertEqual(r["session.source_port"], "\(first.from.port)", "the port the upstream saw")
        XCTAssertEqual(r["listener.name"], "fwd")
        XCTAssertGreaterThanOrEqual(Int(r["session.duration_ms"] ?? "") ?? -1, 200, "idle for session_timeout at least")
        let start = try XCTUnwrap(ISO8601DateFormatter.withMilliseconds.date(from: r["session.start"] ?? ""), r["session.start"] ?? "none")
        XCTAssertEqual(start.timeIntervalSince(before), 0, accuracy: 1, "the wall-clock time of its first datagram")
        XCTAssertEqual(relay.counters()[.sessionsExpired], 1)
        XCTAssertEqual(log.lines.filter { $0.hasPrefix("info session ended") }.count, 1, "one record: \(log.lines)")
    }

    func testAnEvictedSessionHasItsRecordAndShutdownEndsTheOthers() throws {
        let log = RecordLog()
        let upstream = try UDPClient()
        let (datapath, relay) = try startRelay(upstream.localAddress, log: log, extra: "max_sessions = 1\n")
        let a = try UDPClient(), b = try UDPClient()
        a.send(Array("abc".utf8), to: relay.boundAddresses[0])
        let fromA = try XCTUnwrap(upstream.receive()).from
        upstream.send(Array("wxyz".utf8), to: fromA)
        XCTAssertNotNil(a.receive())
        b.send(Array("hello b".utf8), to: relay.boundAddresses[0])
        XCTAssertNotNil(upstream.receive())

        let ra = try XCTUnwrap(record(of: a, in: log), "a is evicted by b: \(log.lines)")
        XCTAssertEqual(ra["session.end"], "evicted")
        XCTAssertEqual(counts(ra), ["1", "3", "1", "4"])
        XCTAssertEqual(ra["session.source_port"], "\(fromA.port)")
        XCTAssertEqual(log.records.count, 1, "b's session goes on")

        datapath.stopBlocking()
        let rb = try XCTUnwrap(record(of: b, in: log), "b ends at stop: \(log.lines)")
        XCTAssertEqual(rb["session.end"], "shutdown")
        XCTAssertEqual(counts(rb), ["1", "7", "0", "0"])
        XCTAssertEqual(log.records.count, 2)
    }

    func testASessionEndedBySessionMaxRepliesHasItsRecord() throws {
        let log = RecordLog()
        let upstream = try UDPClient()
        let (datapath, relay) = try startRelay(upstream.localAddress, log: log, extra: "session_max_replies = 1\n")
        defer { datapath.stopBlocking() }
        let client = try UDPClient()
        client.send(Array("q?".utf8), to: relay.boundAddresses[0])
        let q = try XCTUnwrap(upstream.receive())
        upstream.send(Array("12345".utf8), to: q.from)
        upstream.send(Array("one too many".utf8), to: q.from)  // beyond the limit: not forwarded, not counted
        XCTAssertNotNil(client.receive())
        let r = try XCTUnwrap(record(of: client, in: log), "\(log.lines)")
        XCTAssertEqual(r["session.end"], "max_replies")
        XCTAssertEqual(counts(r), ["1", "2", "1", "5"])
        XCTAssertTrue(waitUntil(5) { relay.counters()[.repliesIgnored] == 1 })
        XCTAssertEqual(log.records.count, 1)
    }

    func testASessionWhoseUpstreamRefusesHasItsRecord() throws {
        let log = RecordLog()
        var upstream: UDPClient? = try UDPClient()
        let (datapath, relay) = try startRelay(upstream!.localAddress, log: log)
        defer { datapath.stopBlocking() }
        let client = try UDPClient()
        client.send([1], to: relay.boundAddresses[0])
        XCTAssertNotNil(upstream?.receive())
        upstream = nil  // closed: the next datagram is refused (ICMP port unreachable)
        client.send([2], to: relay.boundAddresses[0])
        let r = try XCTUnwrap(record(of: client, in: log), "\(log.lines)")
        XCTAssertEqual(r["session.end"], "upstream_refused")
        XCTAssertEqual(r["session.datagrams_to_client"], "0")
    }

    func testNoRecordsWithoutSessionLog() throws {
        let log = RecordLog()
        let upstream = try UDPClient()
        let text = "[listener fwd]\nlisten = 127.0.0.1:0\nmode = forward\nupstream = \(upstream.localAddress)\nsession_timeout = 50ms\n"
        let datapath = try Datapath(configuration: try configuration(text), logger: Logger(label: "t") { _ in log })
        datapath.startBlocking()
        let relay = try XCTUnwrap(datapath.listener(named: "fwd"))
        let client = try UDPClient()
        client.send([1], to: relay.boundAddresses[0])
        XCTAssertNotNil(upstream.receive())
        XCTAssertTrue(waitUntil(5) { relay.counters()[.sessionsExpired] == 1 })
        datapath.stopBlocking()
        XCTAssertEqual(log.records.count, 0, "session_log is off by default: \(log.lines)")
    }

    func testTheStartIsWrittenInUTCWithMilliseconds() {
        XCTAssertEqual(SessionRecord.timestamp(wallNanos: 1_795_000_000_007_900_000), "2026-11-18T11:06:40.007Z")
        XCTAssertEqual(SessionRecord.timestamp(wallNanos: 0), "1970-01-01T00:00:00.000Z")
        // The start of a handed-over session from its age; an age beyond the clock is clamped.
        XCTAssertEqual(SessionRecord.started(ageMilliseconds: 5, now: 9_000_000), 4_000_000)
        XCTAssertEqual(SessionRecord.started(ageMilliseconds: .max, now: 9_000_000), 0)
    }

    // MARK: handover

    /// Stops `datapath` with its worker's live sessions handed over instead of closed.
    func stopHandingOver(_ datapath: Datapath, _ relay: Listener) throws -> [HandedOverSession] {
        let worker = try XCTUnwrap(relay.workers.first as? RelayWorker)
        let handed = LockedBox<[HandedOverSession]>([])
        worker.handSessionsOverAtStop(socket: 0) { handed.value = $0 }
        datapath.stopBlocking()
        return handed.value
    }

    func testAHandedOverSessionHasOneRecordWhereItEndsCountingItsWholeLife() throws {
        let upstream = try UpstreamServer(reply: { Array("re:".utf8) + $0 })
        let oldLog = RecordLog(), newLog = RecordLog()
        let (old, oldRelay) = try startRelay(upstream.address, log: oldLog)
        let client = try UDPClient()
        client.send(Array("one".utf8), to: oldRelay.boundAddresses[0])
        XCTAssertNotNil(client.receive())
        let handed = try stopHandingOver(old, oldRelay)
        XCTAssertEqual(handed.count, 1)
        XCTAssertEqual(handed.first.map { [$0.entry.requestBytes, $0.entry.replyBytes] }, [3, 6])
        XCTAssertEqual(oldLog.records.count, 0, "handed over, not ended: \(oldLog.lines)")

        let (new, newRelay) = try startRelay(upstream.address, log: newLog, extra: "session_timeout = 200ms\n")
        defer { new.stopBlocking() }
        let worker = try XCTUnwrap(newRelay.workers.first as? RelayWorker)
        XCTAssertEqual(worker.takeOver(handed).adopted, 1)
        client.send(Array("three".utf8), to: newRelay.boundAddresses[0])
        XCTAssertNotNil(client.receive())
        let r = try XCTUnwrap(record(of: client, in: newLog), "\(newLog.lines)")
        XCTAssertEqual(r["session.end"], "idle_timeout")
        XCTAssertEqual(counts(r), ["2", "8", "2", "14"], "both datagrams and replies, the old worker's too")
        XCTAssertEqual(r["session.source_port"], "\(upstream.datagrams[0].from.port)")
        XCTAssertEqual(newLog.records.count, 1)
    }

    func testAHandedOverSessionWhoseUpstreamWasRemovedEndsSaying() throws {
        let removed = try UpstreamServer(), kept = try UpstreamServer()
        let oldLog = RecordLog(), newLog = RecordLog()
        let (old, oldRelay) = try startRelay(removed.address, log: oldLog)
        let client = try UDPClient()
        client.send(Array("four".utf8), to: oldRelay.boundAddresses[0])
        XCTAssertNotNil(client.receive())
        let handed = try stopHandingOver(old, oldRelay)
        let (new, newRelay) = try startRelay(kept.address, log: newLog)
        defer { new.stopBlocking() }
        let worker = try XCTUnwrap(newRelay.workers.first as? RelayWorker)
        XCTAssertEqual(worker.takeOver(handed).upstreamRemoved, 1)
        let r = try XCTUnwrap(record(of: client, in: newLog), "\(newLog.lines)")
        XCTAssertEqual(r["session.end"], "upstream_removed")
        XCTAssertEqual(counts(r), ["1", "4", "1", "4"])
        XCTAssertEqual(r["session.upstream"], "\(removed.address)")
        XCTAssertEqual(r["session.source_port"], "\(removed.datagrams[0].from.port)")
    }

    // MARK: bounded

    /// 10,000 new clients at once (each from its own loopback address) through a table of 8:
    /// nearly every session is evicted, yet at most `session_log_rate` records a second are
    /// written, and one line a second counts the ones left out, so that every evicted session
    /// is either recorded or counted.
    func testAFloodOfNewSessionsWritesAtMostTheRatePlusOneCountASecond() throws {
        let log = RecordLog()
        let upstream = try UDPClient()
        var tuning = DatapathTuning()
        tuning.closedSessionHold = 0  // every evicted session frees its port at once: all 10,000 are served
        let rate = 50, clients = 10_000
        let (datapath, relay) = try startRelay(
            upstream.localAddress, log: log, extra: "max_sessions = 8\nsession_log_rate = \(rate)\nrcvbuf = 16m\n", tuning: tuning)
        defer { datapath.stopBlocking() }
        let started = SystemClock.monotonicNanos()
        for i in 0..<clients {
            let source = SocketAddress(ip: .v4(0x7F01_0000 | UInt32(i / 250) << 8 | UInt32(i % 250 + 1)), port: 0)
            let client = try UDPClient(bind: source)
            client.send([UInt8(truncatingIfNeeded: i)], to: relay.boundAddresses[0])
        }
        let sent = Double(SystemClock.monotonicNanos() - started) / 1e9
        // Datagrams are read in order: once one from `marker` is read, every one before it was
        // read or counted as dropped for a full receive buffer (the count comes with it).
        let marker = try UDPClient()
        XCTAssertTrue(
            waitUntil(30) {
                marker.send([0], to: relay.boundAddresses[0])
                let c = relay.counters()
                return c[.receivedPackets] + c[.dropReceiveBufferFull] > UInt64(clients)
            }, "the flood is read: \(relay.counters()[.receivedPackets])")
        let created = relay.counters()[.sessionsCreated], evicted = relay.counters()[.sessionsEvicted]
        XCTAssertEqual(evicted, created - 8, "all but the last 8 are evicted")
        // Without the forced 16 MiB receive buffer (not root) the kernel may drop part of the
        // flood: what gets through must still be far beyond the rate.
        XCTAssertGreaterThan(created, UInt64(20 * rate), "the flood opened sessions")
        // Every evicted session is in a record or in a count, once the last count is written.
        func suppressed() -> UInt64 {
            log.entries.filter { $0.message == "session records left out" }.reduce(0) { $0 + (UInt64($1.metadata["log.suppressed"] ?? "") ?? 0) }
        }
        XCTAssertTrue(
            waitUntil(5) { UInt64(log.records.count) + suppressed() == evicted }, "records \(log.records.count) + left out \(suppressed()) = \(evicted)")
        let entries = log.entries
        let lastLine = try XCTUnwrap(entries.last).time
        let seconds = Int((lastLine - started) / 1_000_000_000) + 1
        let records = entries.filter { $0.message == "session ended" }.count
        let counts = entries.filter { $0.message == "session records left out" }.count
        print(
            "session log flood: \(clients) clients sent in \(String(format: "%.2f", sent)) s, \(created) sessions, "
                + "\(records) records and \(counts) count lines over \(seconds) s")
        XCTAssertFalse(entries.contains { $0.message == "session records left out" && $0.metadata["log.suppressed"] == "0" }, "no empty counts")
        XCTAssertGreaterThanOrEqual(records, rate, "the first second's records are written")
        XCTAssertLessThanOrEqual(records, rate * seconds, "at most \(rate) records a second")
        XCTAssertLessThanOrEqual(counts, seconds, "one count line a second")
        // The limit counts in windows of one second from the first record: any second of the
        // clock overlaps at most two of them.
        let times = entries.filter { $0.message == "session ended" || $0.message == "session records left out" }.map(\.time)
        var windowStart = 0
        var most = 0
        for (i, t) in times.enumerated() {
            while t - times[windowStart] >= 1_000_000_000 { windowStart += 1 }
            most = max(most, i - windowStart + 1)
        }
        XCTAssertLessThanOrEqual(most, 2 * (rate + 1), "session lines within any one second")
        print("session log flood: at most \(most) session lines within any one second")
    }
}

extension ISO8601DateFormatter {
    /// `2026-11-28T05:40:12.345Z`.
    static var withMilliseconds: ISO8601DateFormatter {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return f
    }
}
