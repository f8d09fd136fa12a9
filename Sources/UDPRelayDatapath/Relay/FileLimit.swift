import Logging
import NIOConcurrencyHelpers

#if canImport(Glibc)
import Glibc
#endif

/// Each relay session holds one descriptor, so `max_sessions` needs a matching RLIMIT_NOFILE.
/// The soft limit (often 1024) is raised to the hard limit, as daemons do, the first time a
/// relay listener opens; what still does not fit is said once.
enum FileLimit {
    /// The largest need already warned about: a rebuild or reload that needs no more stays quiet.
    private static let warned = NIOLockedValueBox<UInt64>(0)

    /// Raises the soft limit to the hard limit (when it is lower and the process may: under
    /// the shipped unit `setrlimit` is filtered and `LimitNOFILE=` sets both). Returns the soft
    /// limit in effect, 0 when it cannot be read.
    @discardableResult
    static func raiseSoftLimit() -> UInt64 {
        var rl = rlimit()
        guard getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &rl) == 0 else { return 0 }
        if rl.rlim_cur < rl.rlim_max {
            var wanted = rl
            wanted.rlim_cur = rl.rlim_max
            if setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &wanted) == 0 { rl = wanted }
        }
        return UInt64(rl.rlim_cur)
    }

    /// Makes room for `needed` descriptors as far as the hard limit allows; returns the soft
    /// limit in effect. Logs one warning, with what to change, when it stays below `needed`
    /// and no larger need was warned about before (so not again at every rebuild).
    @discardableResult
    static func ensure(_ needed: UInt64, listener: String, logger: Logger) -> UInt64 {
        let limit = raiseSoftLimit()
        guard limit < needed else { return limit }
        let warn = warned.withLockedValue { w -> Bool in
            guard needed > w else { return false }
            w = needed
            return true
        }
        if warn {
            logger.warning(
                "max_sessions exceeds the open-file limit; sessions beyond it fail (session_errors)",
                metadata: [
                    "listener.name": "\(listener)", "files.needed": "\(needed)", "files.limit": "\(limit)",
                    "hint":
                        "raise the hard limit to \(needed) (LimitNOFILE= in the systemd unit, ulimit -n, or /etc/security/limits.conf) or lower max_sessions or workers",
                ])
        }
        return limit
    }
}
