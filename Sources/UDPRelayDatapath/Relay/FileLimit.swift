#if canImport(Glibc)
import Glibc
#endif
import Logging
import NIOConcurrencyHelpers

/// Each relay session holds one descriptor, so `max_sessions` needs a matching RLIMIT_NOFILE.
/// The soft limit (often 1024) is raised towards the hard limit once, as far as needed.
enum FileLimit {
    private static let raised = NIOLockedValueBox<UInt64>(0)

    /// Makes room for `needed` descriptors if the hard limit allows; returns the soft limit in
    /// effect and logs a warning when it stays below `needed`.
    @discardableResult
    static func ensure(_ needed: UInt64, listener: String, logger: Logger) -> UInt64 {
        raised.withLockedValue { current -> UInt64 in
            var rl = rlimit()
            guard getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &rl) == 0 else { return 0 }
            if rl.rlim_cur < rlim_t(needed) && rl.rlim_cur < rl.rlim_max {
                var wanted = rl
                wanted.rlim_cur = min(rlim_t(needed), rl.rlim_max)
                if setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &wanted) == 0 { rl = wanted }
            }
            current = UInt64(rl.rlim_cur)
            if rl.rlim_cur < rlim_t(needed) {
                logger.warning("max_sessions exceeds the open-file limit; sessions beyond it fail (session_errors)", metadata: [
                    "listener.name": "\(listener)", "files.needed": "\(needed)", "files.limit": "\(rl.rlim_cur)",
                ])
            }
            return UInt64(rl.rlim_cur)
        }
    }
}
