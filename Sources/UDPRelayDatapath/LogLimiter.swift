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
}
