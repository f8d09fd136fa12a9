import Logging
import UDPRelayConfig

#if canImport(Glibc)
import Glibc
#endif

/// Why a session ended, as its record (`session_log`) says it (`session.end`).
enum SessionEnd: String, Sendable {
    /// Idle for `session_timeout`.
    case idleTimeout = "idle_timeout"
    /// The least recently used, for a new client at `max_sessions` (or no room for it when
    /// handed over).
    case evicted
    /// It had its `session_max_replies` for every request.
    case maxReplies = "max_replies"
    /// Nothing listens on the upstream (ICMP port unreachable).
    case upstreamRefused = "upstream_refused"
    /// Sending to the upstream failed otherwise (unreachable, a firewall's EPERM).
    case upstreamFailed = "upstream_failed"
    /// Handed over by a reload whose upstream list no longer has its upstream.
    case upstreamRemoved = "upstream_removed"
    /// Handed over, but its client had opened a newer session here meanwhile.
    case replaced
    /// Handed over, but its socket could not be taken on.
    case unusable
    /// The listener stopped (the daemon stops, or a reload removes the listener).
    case shutdown

    init(_ reason: SessionTable.CloseReason) {
        self =
            switch reason {
            case .evicted: .evicted
            case .expired: .idleTimeout
            case .answered: .maxReplies
            case .failed: .upstreamFailed
            case .refused: .upstreamRefused
            case .shutdown: .shutdown
            }
    }
}

/// What the record of an ended session says, besides the listener (the logger's metadata)
/// and the reason.
struct SessionRecord {
    var client: SocketAddress?
    var upstream: SocketAddress?
    /// The source port the upstream saw; 0 when not known.
    var sourcePort: UInt16
    /// When the session opened (monotonic nanoseconds).
    var started: UInt64
    var requests: UInt32
    var requestBytes: UInt64
    var replies: UInt32
    var replyBytes: UInt64

    init(_ session: Session, upstream: SocketAddress?) {
        client = session.clientAddress
        self.upstream = upstream
        sourcePort = session.sourcePort
        started = session.started
        requests = session.requests
        requestBytes = session.requestBytes
        replies = session.replies
        replyBytes = session.replyBytes
    }

    init(_ entry: SessionArchive.Entry, sourcePort: UInt16, now: UInt64) {
        client = entry.client
        upstream = entry.upstream
        self.sourcePort = sourcePort
        started = SessionRecord.started(ageMilliseconds: entry.ageMilliseconds, now: now)
        requests = entry.requests
        requestBytes = entry.requestBytes
        replies = entry.replies
        replyBytes = entry.replyBytes
    }

    /// The start (monotonic nanoseconds) of a session `age` milliseconds old at `now`.
    static func started(ageMilliseconds age: UInt64, now: UInt64) -> UInt64 {
        let nanos = age.multipliedReportingOverflow(by: 1_000_000)
        return nanos.overflow || nanos.partialValue > now ? 0 : now - nanos.partialValue
    }

    /// The record's metadata at `now` (monotonic nanoseconds) and `wallNanos` (the same
    /// instant on the wall clock, nanoseconds since the epoch).
    func metadata(end: SessionEnd, now: UInt64, wallNanos: UInt64) -> Logger.Metadata {
        let age = now > started ? now - started : 0
        return [
            "session.client": "\(client.map { "\($0)" } ?? "?")",
            "session.upstream": "\(upstream.map { "\($0)" } ?? "?")",
            "session.source_port": "\(sourcePort)",
            "session.start": "\(Self.timestamp(wallNanos: wallNanos > age ? wallNanos - age : 0))",
            "session.duration_ms": "\(age / 1_000_000)",
            "session.datagrams_to_upstream": "\(requests)",
            "session.bytes_to_upstream": "\(requestBytes)",
            "session.datagrams_to_client": "\(replies)",
            "session.bytes_to_client": "\(replyBytes)",
            "session.end": "\(end.rawValue)",
        ]
    }

    /// RFC 3339 in UTC with milliseconds: `2026-11-28T05:40:12.345Z`.
    static func timestamp(wallNanos: UInt64) -> String {
        var seconds = time_t(wallNanos / 1_000_000_000)
        var t = tm()
        gmtime_r(&seconds, &t)
        func pad(_ v: Int32, _ width: Int) -> String {
            let digits = String(v)
            return String(repeating: "0", count: max(0, width - digits.count)) + digits
        }
        let ms = Int32(wallNanos / 1_000_000 % 1000)
        return "\(pad(t.tm_year + 1900, 4))-\(pad(t.tm_mon + 1, 2))-\(pad(t.tm_mday, 2))T"
            + "\(pad(t.tm_hour, 2)):\(pad(t.tm_min, 2)):\(pad(t.tm_sec, 2)).\(pad(ms, 3))Z"
    }
}

/// The session log (`session_log = yes`): one `info` line, "session ended", per session that
/// ends on this worker, with what it was and why it ended as metadata (journald fields under
/// systemd). A session handed over to another worker or process has not ended: its record
/// comes from where it ends, counted from its start. At most `session_log_rate` records a
/// second per worker; the ones left out are counted in one line a second ("session records
/// left out", `log.suppressed`), so a flood of new clients cannot flood the log. Records are
/// built when a session ends, never per datagram.
extension RelayWorker {
    /// Writes the record of a session that ended, if the log is on and the rate allows.
    func recordSessionEnd(_ record: @autoclosure () -> SessionRecord, _ end: SessionEnd) {
        guard sessionRecords != nil else { return }
        let now = SystemClock.monotonicNanos()
        flushSessionRecords(now: now)
        guard let skipped = sessionRecords?.admit(now: now) else { return }
        if skipped > 0 { logSessionRecordsLeftOut(skipped) }
        let (seconds, nanoseconds) = SystemClock.wallTime()
        let wall = UInt64(max(0, seconds)) &* 1_000_000_000 &+ UInt64(max(0, nanoseconds))
        logger.info("session ended", metadata: record().metadata(end: end, now: now, wallNanos: wall))
    }

    /// Once a second's records are over: the number left out in it, in a line of its own.
    func flushSessionRecords(now: UInt64) {
        if let skipped = sessionRecords?.flush(now: now) { logSessionRecordsLeftOut(skipped) }
    }

    /// At stop: the number left out that no line has said yet, whatever the time.
    func flushSessionRecordsAtStop() {
        if let skipped = sessionRecords?.suppressed, skipped > 0 { logSessionRecordsLeftOut(skipped) }
    }

    private func logSessionRecordsLeftOut(_ count: UInt64) {
        logger.info("session records left out", metadata: ["log.suppressed": "\(count)", "session_log_rate": "\(sessionRecords?.lines ?? 0)"])
    }

    /// The local port of a session socket, for its record; 0 when it cannot be had.
    static func sourcePort(_ fd: Int32) -> UInt16 {
        guard fd >= 0 else { return 0 }
        return (try? Syscall.localAddress(fd))?.port ?? 0
    }
}
