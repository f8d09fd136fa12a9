import CSystemd
import Logging
import ServiceLifecycle

#if canImport(Glibc)
import Glibc
#endif

/// The systemd watchdog (`WatchdogSec=`): every half interval, probes the datapath and sends
/// `WATCHDOG=1` only if every worker queue answered. A wedged queue therefore stops the pings
/// and systemd restarts the service, instead of a healthy side thread keeping it "alive".
public struct WatchdogService: Service {
    /// The interval systemd expects pings within, or nil when the watchdog is off for this
    /// process (`sd_watchdog_enabled(3)`: `WATCHDOG_USEC`, and `WATCHDOG_PID` if set, is us).
    public static func configuredInterval() -> Duration? {
        var usec: UInt64 = 0
        let rc = sd_watchdog_enabled(0, &usec)
        guard rc > 0, usec > 0 else { return nil }
        return .microseconds(Int64(clamping: usec))
    }

    let interval: Duration
    let notifier: SystemdNotifier
    let probe: @Sendable (Duration) async -> [String]
    let logger: Logger

    /// `probe(timeout)` returns one line per queue that did not answer, empty when all did.
    public init(
        interval: Duration, notifier: SystemdNotifier, logger: Logger,
        probe: @escaping @Sendable (Duration) async -> [String]
    ) {
        self.interval = interval
        self.notifier = notifier
        self.logger = logger
        self.probe = probe
    }

    /// Ping period (half the interval) and probe timeout (a quarter, at most one second), so a
    /// slow probe still leaves time to ping before systemd's deadline.
    var period: Duration { interval / 2 }
    var probeTimeout: Duration { min(interval / 4, .seconds(1)) }

    public func run() async throws {
        logger.info("watchdog enabled", metadata: ["watchdog.interval": "\(interval)"])
        var wedged = false
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            let problems = await probe(probeTimeout)
            if problems.isEmpty {
                notifier.watchdog()
                if wedged {
                    logger.notice("datapath answers again; watchdog pings resumed")
                    wedged = false
                }
            } else if !wedged {
                // Logged once per episode: systemd restarts us if it lasts.
                for p in problems { logger.error("datapath liveness probe failed; withholding watchdog ping", metadata: ["problem": "\(p)"]) }
                wedged = true
            }
            do {
                try await cancelWhenGracefulShutdown { try await Task.sleep(for: period) }
            } catch {
                return
            }
        }
    }
}
