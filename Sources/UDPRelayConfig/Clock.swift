#if canImport(Glibc)
import Glibc
#endif

/// The process's one reading of the time, for every module: the datapath (timeouts, rate
/// limits, log windows), the status endpoint (rates, `Date:`), systemd glue (`MONOTONIC_USEC`,
/// the status line) and the daemon (log timestamps, reload times). It lives in the lowest
/// module, which all others import, so no module reads a clock of its own; the configuration
/// itself never reads it.
///
/// Logic that depends on time takes the time as a parameter (`now:`) and its tests pass a fake
/// value; only the outermost callers read `SystemClock`.
public enum SystemClock {
    /// CLOCK_MONOTONIC in nanoseconds: session timeouts, holds, turns of the read loop, health.
    @inlinable
    public static func monotonicNanos() -> UInt64 {
        read(CLOCK_MONOTONIC).nanos
    }

    /// CLOCK_MONOTONIC_COARSE in nanoseconds: cheaper, with the resolution of the kernel's tick
    /// (a few ms), which is plenty for rate limits and log windows on the per-datagram path.
    @inlinable
    public static func coarseMonotonicNanos() -> UInt64 {
        read(CLOCK_MONOTONIC_COARSE).nanos
    }

    /// CLOCK_MONOTONIC in seconds: intervals for rates (status line, `/status` history).
    public static func monotonicSeconds() -> Double {
        read(CLOCK_MONOTONIC).seconds
    }

    /// CLOCK_REALTIME in seconds since the epoch: times shown to people (`Date:`, reload times).
    public static func wallSeconds() -> Double {
        read(CLOCK_REALTIME).seconds
    }

    /// CLOCK_REALTIME as whole seconds since the epoch and the nanoseconds past them (log
    /// timestamps).
    public static func wallTime() -> (seconds: Int, nanoseconds: Int) {
        let ts = read(CLOCK_REALTIME).spec
        return (Int(ts.tv_sec), Int(ts.tv_nsec))
    }

    @usableFromInline
    struct Reading {
        @usableFromInline let spec: timespec
        @inlinable init(_ spec: timespec) { self.spec = spec }
        @inlinable var nanos: UInt64 { UInt64(spec.tv_sec) &* 1_000_000_000 &+ UInt64(spec.tv_nsec) }
        @inlinable var seconds: Double { Double(spec.tv_sec) + Double(spec.tv_nsec) / 1e9 }
    }

    @inlinable
    static func read(_ clock: clockid_t) -> Reading {
        var ts = timespec()
        clock_gettime(clock, &ts)
        return Reading(ts)
    }
}

extension Duration {
    /// Whole nanoseconds, saturating (0 for a negative duration).
    public var nanoseconds: UInt64 {
        let (s, a) = components
        guard s >= 0 else { return 0 }
        let (v, o) = UInt64(s).multipliedReportingOverflow(by: 1_000_000_000)
        return o ? .max : v &+ UInt64(a / 1_000_000_000)
    }
}
