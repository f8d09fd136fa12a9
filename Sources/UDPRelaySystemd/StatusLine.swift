/// The one-line summary systemd shows as `Status:` in `systemctl status` (`STATUS=`).
/// Pure: the caller samples counters; this only formats.
public struct StatusLine: Sendable {
    /// Counter totals at one moment, summed over all listeners.
    public struct Sample: Sendable, Equatable {
        public var received: UInt64
        public var sent: UInt64
        public var dropped: UInt64
        /// Seconds on a monotonic clock.
        public var at: Double

        public init(received: UInt64, sent: UInt64, dropped: UInt64, at: Double) {
            self.received = received
            self.sent = sent
            self.dropped = dropped
            self.at = at
        }
    }

    public var listeners: Int
    public var sockets: Int
    public var sessions: Int?
    public var generation: Int
    /// nil before any reload; otherwise whether the last one worked, when (`HH:MM:SSZ`), and
    /// its first error.
    public var lastReload: (ok: Bool, at: String, firstError: String?, errorCount: Int)?

    public init(
        listeners: Int, sockets: Int, sessions: Int? = nil, generation: Int,
        lastReload: (ok: Bool, at: String, firstError: String?, errorCount: Int)? = nil
    ) {
        self.listeners = listeners
        self.sockets = sockets
        self.sessions = sessions
        self.generation = generation
        self.lastReload = lastReload
    }

    /// Per-second rates between two samples (0 when counters went backwards, e.g. a listener
    /// was replaced by a reload and its counters started again).
    public static func rates(from a: Sample, to b: Sample) -> (received: Double, sent: Double, dropped: Double) {
        let dt = b.at - a.at
        guard dt > 0 else { return (0, 0, 0) }
        func rate(_ x: UInt64, _ y: UInt64) -> Double { y >= x ? Double(y - x) / dt : 0 }
        return (rate(a.received, b.received), rate(a.sent, b.sent), rate(a.dropped, b.dropped))
    }

    /// E.g. `2 listeners (3 sockets), 1520 pkt/s in, 1520 pkt/s out, 0 drops/s; config gen 3, reloaded 19:40:01Z`
    /// or `...; config gen 3, RELOAD FAILED 19:41:07Z: FILE:4: [listener a] mode: ... (+1 more)`.
    public func render(rates: (received: Double, sent: Double, dropped: Double)?) -> String {
        var s = "\(listeners) listener\(listeners == 1 ? "" : "s") (\(sockets) socket\(sockets == 1 ? "" : "s"))"
        if let rates {
            s += ", \(Self.format(rates.received)) pkt/s in, \(Self.format(rates.sent)) pkt/s out, \(Self.format(rates.dropped)) drops/s"
        }
        if let sessions { s += ", \(sessions) session\(sessions == 1 ? "" : "s")" }
        s += "; config gen \(generation)"
        if let r = lastReload {
            if r.ok {
                s += ", reloaded \(r.at)"
            } else {
                s += ", RELOAD FAILED \(r.at)"
                if let e = r.firstError { s += ": \(e)" }
                if r.errorCount > 1 { s += " (+\(r.errorCount - 1) more)" }
            }
        }
        return s
    }

    static func format(_ x: Double) -> String {
        x >= 10 || x == 0 ? "\(Int(x.rounded()))" : "\(Double(Int(x * 10)) / 10)"
    }
}
