import Logging
import NIOConcurrencyHelpers
import ServiceLifecycle
import UDPRelayConfig
import UDPRelayDatapath
import UDPRelaySystemd
import UnixSignals

#if canImport(Glibc)
import Glibc
#endif

/// Reload on SIGHUP and the live `STATUS=` line.
///
/// Reload re-reads the file with `ConfigLoader.load` (exactly what start-up and
/// `--check-config` run). A bad file changes nothing: every error is logged once, recorded in
/// `DaemonState` (for `/status`) and shown in `STATUS=`, and the daemon keeps serving. A good
/// file is applied as a diff by `Datapath.apply`, and the generation increments.
struct SystemdService: Service {
    let configPath: String
    let datapath: Datapath
    let state: DaemonState
    let notifier: SystemdNotifier
    /// SIGHUP, registered before the service group starts, so no reload request is lost.
    let hangups: UnixSignalsSequence
    let logger: Logger
    let running: RunningConfiguration
    /// The `[status]` and `[daemon]` sections the process started with: a reload does not
    /// apply them (except `log_level`), so a file is compared with these, not with the file
    /// before it, to say whether a change is waiting for a restart.
    let startedWith: (status: StatusConfiguration, daemon: DaemonConfiguration)
    /// The shared log level, which a reload sets from `[daemon] log_level`; nil when
    /// `--log-level` pins it.
    var logLevel: LogLevelControl?
    /// How often `STATUS=` is refreshed.
    var statusInterval: Duration = .seconds(3)
    /// Called after a reload was applied (the file descriptor store follows the new sockets).
    var afterReload: @Sendable () -> Void = {}

    func run() async throws {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await reloadLoop() }
            if notifier.isEnabled {
                group.addTask { await statusLoop() }
            }
            await group.waitForAll()
        }
    }

    func reloadLoop() async {
        for await _ in hangups.cancelOnGracefulShutdown() {
            await reload()
        }
    }

    func reload() async {
        notifier.reloading()
        logger.notice("reloading", metadata: ["config": "\(configPath)"])
        let configuration: Configuration
        do {
            configuration = try ConfigLoader.load(path: configPath)
        } catch {
            // At most ConfigLimits.maxReportedErrors lines and one counting the rest.
            for e in error.errors { logger.error("reload: \(e)") }
            rejected(error.errors.map(\.description), total: error.total)
            return
        }
        let changes: ListenerChanges
        do {
            changes = try await datapath.apply(configuration)
        } catch {
            logger.error("reload: \(error)")
            rejected([error.description])
            return
        }
        afterReload()
        let previous = running.replace(with: configuration)
        if let logLevel, let level = Logger.Level(rawValue: configuration.daemon.logLevel.rawValue), level != logLevel.level {
            logLevel.level = level
            logger.notice("log level changed", metadata: ["log.level": "\(level)"])
        } else if logLevel == nil, previous.daemon.logLevel != configuration.daemon.logLevel {
            logger.notice("[daemon] log_level changed in the file, but --log-level overrides it")
        }
        var otherDaemonKeys = startedWith.daemon
        otherDaemonKeys.logLevel = configuration.daemon.logLevel
        if otherDaemonKeys != configuration.daemon {
            logger.warning("[daemon] changes other than log_level take effect at the next restart")
        }
        if startedWith.status != configuration.status {
            logger.warning("[status] changes take effect at the next restart")
        }
        state.reloadSucceeded()
        let generation = state.snapshot.generation
        logger.notice(
            "reloaded",
            metadata: [
                "generation": "\(generation)",
                "listeners.unchanged": "\(changes.unchanged.count)", "listeners.changed": "\(changes.changed.joined(separator: ","))",
                "listeners.removed": "\(changes.removed.joined(separator: ","))", "listeners.added": "\(changes.added.joined(separator: ","))",
            ])
        notifier.ready(status: statusLine(rates: nil))
    }

    func rejected(_ errors: [String], total: Int? = nil) {
        state.reloadFailed(errors, total: total ?? errors.count)
        logger.error(
            "reload rejected; still serving the running configuration",
            metadata: [
                "generation": "\(state.snapshot.generation)", "errors": "\(total ?? errors.count)",
            ])
        notifier.ready(status: statusLine(rates: nil))
    }

    func statusLoop() async {
        var last = sample()
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            do {
                try await cancelWhenGracefulShutdown { try await Task.sleep(for: statusInterval) }
            } catch {
                return
            }
            let now = sample()
            notifier.status(statusLine(rates: StatusLine.rates(from: last, to: now)))
            last = now
        }
    }

    func sample() -> StatusLine.Sample {
        var total = CounterSnapshot()
        for l in datapath.snapshot() { total = total + l.counters }
        return StatusLine.Sample(
            received: total[.receivedPackets], sent: total[.sentPackets], dropped: total.dropped,
            at: SystemClock.monotonicSeconds())
    }

    /// The `STATUS=` text: listeners, rates, generation and the last reload's outcome.
    func statusLine(rates: (received: Double, sent: Double, dropped: Double)?) -> String {
        Self.statusLine(datapath: datapath, state: state, rates: rates)
    }

    static func statusLine(datapath: Datapath, state: DaemonState, rates: (received: Double, sent: Double, dropped: Double)?) -> String {
        let listeners = datapath.snapshot()
        let s = state.snapshot
        let reload = s.lastReload.map { r in
            (ok: r.ok, at: clockTime(r.at), firstError: r.errors.first, errorCount: r.errorCount)
        }
        // Relay listeners with sessions (forward, balance) report how many are open.
        let withSessions = datapath.listeners.filter { $0.configuration.mode.hasSessions }
        let sessions = withSessions.isEmpty ? nil : withSessions.reduce(0) { $0 + Int($1.counters()[.sessionsActive]) }
        return StatusLine(
            listeners: listeners.count, sockets: listeners.reduce(0) { $0 + $1.workers.count },
            sessions: sessions, generation: s.generation, lastReload: reload
        ).render(rates: rates)
    }

    /// `HH:MM:SSZ` of a wall-clock time in seconds since the epoch.
    static func clockTime(_ t: Double) -> String {
        var seconds = time_t(t)
        var tm = tm()
        gmtime_r(&seconds, &tm)
        func two(_ x: Int32) -> String { x < 10 ? "0\(x)" : "\(x)" }
        return "\(two(tm.tm_hour)):\(two(tm.tm_min)):\(two(tm.tm_sec))Z"
    }
}

/// The configuration in effect: replaced only by a successful reload.
final class RunningConfiguration: Sendable {
    private let value: NIOLockedValueBox<Configuration>
    init(_ configuration: Configuration) { value = NIOLockedValueBox(configuration) }
    var current: Configuration { value.withLockedValue { $0 } }
    /// Stores `configuration` and returns the one it replaces.
    func replace(with configuration: Configuration) -> Configuration {
        value.withLockedValue { old in
            defer { old = configuration }
            return old
        }
    }
}
