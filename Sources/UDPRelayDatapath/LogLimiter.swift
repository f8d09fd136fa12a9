import NIOConcurrencyHelpers

/// Bounds how often one kind of log event is written: at most `lines` per `interval`, and
/// the next line written says how many were left out in between. One per event kind and
/// owner; use it at every log site a remote peer can trigger, so that no flood, at any log
/// level, turns into a flood of log lines.
///
/// A value: not thread-safe; its owner keeps it on one queue (or behind a lock). Time is passed
/// in (monotonic nanoseconds), so tests drive it with a fake clock. Allocates nothing.
public struct LogLimiter: Sendable {
    public let lines: Int
    public let interval: UInt64
    private var windowStart: UInt64 = 0
    private var used = 0
    private var started = false
    /// Events left out since the last line written.
    public private(set) var suppressed: UInt64 = 0

    public init(lines: Int, per interval: Duration) {
        precondition(lines > 0)
        self.lines = lines
        self.interval = interval.nanoseconds
    }

    /// Whether to write this event's line: nil to leave it out (counted), else the number of
    /// events left out since the last line written (to be said in this one).
    @inline(__always)
    public mutating func admit(now: UInt64) -> UInt64? {
        if !started || now &- windowStart >= interval {
            started = true
            windowStart = now
            used = 0
        }
        guard used < lines else {
            suppressed &+= 1
            return nil
        }
        used += 1
        defer { suppressed = 0 }
        return suppressed
    }

    /// When the current window ends (monotonic nanoseconds).
    public var windowEnd: UInt64 { windowStart &+ interval }

    /// Once the window is over: the events left out that no line has reported yet, to be said
    /// in a line of their own (which counts as the first of a new window), or nil when there
    /// are none or the window is not over. For owners that report a count even when no further
    /// event comes to carry it.
    public mutating func flush(now: UInt64) -> UInt64? {
        guard suppressed > 0, now &- windowStart >= interval else { return nil }
        windowStart = now
        used = 1
        defer { suppressed = 0 }
        return suppressed
    }
}

/// The process-wide bound on log lines that remote peers can cause, behind every call-site
/// limiter: a log event that names a peer (`peer.address` metadata) is written at most `lines`
/// times per `interval` per kind (level and message), whatever the log level; the next line
/// written of that kind carries the number left out (`log.suppressed`). Events about the daemon
/// itself (start-up, listeners, reloads) name no peer and always pass.
///
/// Thread-safe (one lock, taken only for events that name a peer). At most `kinds` kinds are
/// tracked; the ones beyond share one limiter.
public final class LogFloodGate: Sendable {
    private struct State {
        var limiters: [String: LogLimiter] = [:]
        var others: LogLimiter
    }

    private let state: NIOLockedValueBox<State>
    private let template: LogLimiter
    private let kinds: Int

    public init(lines: Int = 50, per interval: Duration = .seconds(1), kinds: Int = 256) {
        template = LogLimiter(lines: lines, per: interval)
        self.kinds = kinds
        state = NIOLockedValueBox(State(others: template))
    }

    /// Whether to write an event of `kind` now: nil to leave it out, else the number of events
    /// of that kind left out since the last one written.
    public func admit(_ kind: String, now: UInt64) -> UInt64? {
        state.withLockedValue { s in
            if s.limiters[kind] == nil {
                guard s.limiters.count < kinds else { return s.others.admit(now: now) }
                s.limiters[kind] = template
            }
            return s.limiters[kind]!.admit(now: now)
        }
    }
}
