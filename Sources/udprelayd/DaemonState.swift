import NIOConcurrencyHelpers
import UDPRelayConfig

#if canImport(Glibc)
import Glibc
#endif

/// What the daemon knows about itself and its configuration: shared by reload (writes it),
/// the status endpoint and the systemd STATUS= line (read it).
final class DaemonState: Sendable {
    /// The outcome of the last load or reload.
    struct LoadResult: Sendable, Equatable {
        var ok: Bool
        /// Wall-clock time, seconds since the epoch.
        var at: Double
        /// One line per problem (at most `ConfigLimits.maxReportedErrors`, then one line that
        /// counts the rest); empty when `ok`.
        var errors: [String]
        /// Problems found in all.
        var errorCount: Int
    }

    struct Snapshot: Sendable {
        var configPath: String
        /// 1 after start-up; +1 for every successful reload.
        var generation: Int
        /// When the running configuration was loaded (seconds since the epoch).
        var loadedAt: Double
        /// The last reload attempt, nil if there was none.
        var lastReload: LoadResult?
        /// Draining (SIGUSR1 until SIGUSR2): `/healthz` fails, traffic is still served.
        var draining = false
    }

    let pid: Int32 = getpid()
    /// Process start, seconds since the epoch.
    let startTime: Double = SystemClock.wallSeconds()
    private let state: NIOLockedValueBox<Snapshot>

    init(configPath: String) {
        state = NIOLockedValueBox(Snapshot(configPath: configPath, generation: 1, loadedAt: SystemClock.wallSeconds(), lastReload: nil))
    }

    var snapshot: Snapshot { state.withLockedValue { $0 } }

    /// Records a successful reload: the generation increments.
    func reloadSucceeded() {
        let now = SystemClock.wallSeconds()
        state.withLockedValue {
            $0.generation += 1
            $0.loadedAt = now
            $0.lastReload = LoadResult(ok: true, at: now, errors: [], errorCount: 0)
        }
    }

    /// Records a failed reload: the running configuration (and generation) stay as they were.
    func reloadFailed(_ errors: [String], total: Int) {
        let now = SystemClock.wallSeconds()
        state.withLockedValue { $0.lastReload = LoadResult(ok: false, at: now, errors: errors, errorCount: total) }
    }

    /// Starts or ends draining; returns whether that changed anything.
    func setDraining(_ on: Bool) -> Bool {
        state.withLockedValue { s in
            defer { s.draining = on }
            return s.draining != on
        }
    }

    /// Kept only for `StatusService.swift` until it calls `SystemClock.wallSeconds()` itself;
    /// to be removed then.
    static func now() -> Double { SystemClock.wallSeconds() }
}
