import ArgumentParser
import Logging
import ServiceLifecycle
import UDPRelayConfig
import UDPRelayDatapath
import UDPRelaySystemd
import UnixSignals

#if canImport(Glibc)
import Glibc
#endif

/// Exit status for a bad configuration (sysexits.h EX_CONFIG).
let exitConfigError: Int32 = 78

@main
struct UDPRelayCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "udprelayd",
        abstract: "UDP echo and relay daemon.",
        discussion: "Reads an INI configuration file and serves every listener it names until SIGTERM or SIGINT.",
        version: BuildInfo.version
    )

    @Option(name: .shortAndLong, help: "Configuration file.")
    var config: String = Defaults.configPath

    @Flag(name: .long, help: "Parse and validate the configuration exactly as a start would, without binding, then exit (0 if valid, 78 if not).")
    var checkConfig = false

    @Option(name: .long, help: "Log level, overriding [daemon] log_level: trace|debug|info|notice|warning|error|critical.")
    var logLevel: String?

    func validate() throws {
        // Keywords are case-insensitive, on the command line as in the file.
        if let logLevel, LogLevel(rawValue: logLevel.lowercased()) == nil {
            throw ValidationError("--log-level must be one of \(LogLevel.allCases.map(\.rawValue).joined(separator: "|")), got '\(logLevel)'")
        }
    }

    func run() async throws {
        let configuration: Configuration
        do {
            configuration = try ConfigLoader.load(path: config)
        } catch {
            for e in error.errors { printError("error: \(e)") }
            if checkConfig { printError("configuration invalid: \(error.total) error(s)") }
            throw ExitCode(exitConfigError)
        }
        if checkConfig {
            print("configuration OK: \(configuration.listeners.count) listener\(configuration.listeners.count == 1 ? "" : "s")")
            return
        }

        let level = Logger.Level(rawValue: logLevel?.lowercased() ?? configuration.daemon.logLevel.rawValue) ?? .info
        // stderr to the journal: priorities and fields via journald's socket, else `<N>` prefixes.
        let journal = Journal.isStderrJournal
        let native = Journal.isSocketAvailable
        // One level for every logger; a reload may change it unless --log-level pins it.
        let logLevelControl = LogLevelControl(level)
        LoggingSystem.bootstrap { label in
            let output =
                journal
                ? JournalLogHandler(logLevel: .trace, native: native) as any LogHandler
                : StderrLogHandler(logLevel: .trace, label: label)
            return LevelControlledLogHandler(inner: output, control: logLevelControl)
        }
        let logger = Logger(label: "udprelayd")

        // Sockets systemd passed in serve the listeners they are named after; those the previous
        // process left in the file descriptor store serve the listeners on their address (and
        // its relay sessions continue); the rest are bound.
        let notifier = SystemdNotifier(logger: logger)
        let continuity = Continuity(notifier: notifier, logger: logger)
        let inherited: [String: [Int32]]
        let datapath: Datapath
        var carried = Continuity.CarriedOver()
        do {
            let sockets = try SocketActivation.takeInheritedSockets()
            carried = continuity.sortOut(
                listeners: SocketActivation.storedListenerSockets(sockets),
                sessions: SocketActivation.storedSessionDescriptors(sockets))
            inherited = try SocketActivation.assign(sockets, toListeners: configuration.listeners.map(\.name), configFile: config)
            datapath = try Datapath(configuration: configuration, logger: logger, inherited: inherited, stored: carried.listenerSockets)
        } catch {
            logger.critical("cannot start: \(error)")
            throw ExitCode(1)
        }
        // The datapath serves duplicates of the stored sockets it kept.
        for fds in carried.listenerSockets.values { for fd in fds { close(fd) } }
        for (name, fds) in inherited.sorted(by: { $0.key < $1.key }) {
            logger.info("using sockets passed by systemd", metadata: ["listener.name": "\(name)", "sockets": "\(fds.count)"])
        }
        if !carried.sessions.isEmpty {
            let taken = await datapath.takeOver(carried.sessions)
            logger.info(
                "sessions of the previous process continued",
                metadata: [
                    "sessions.adopted": "\(taken.adopted)", "sessions.refused": "\(taken.refused)",
                ])
        }

        logger.info("starting", metadata: ["version": "\(BuildInfo.version)", "config": "\(config)", "pid": "\(getpid())"])
        let daemonState = DaemonState(configPath: config)
        // Registered before READY=1: systemd may send SIGHUP (ExecReload) right after it.
        let hangups = await UnixSignalsSequence(trapping: .sighup)
        let drainSignals = await UnixSignalsSequence(trapping: .sigusr1, .sigusr2)
        let systemd = SystemdService(
            configPath: config, datapath: datapath, state: daemonState, notifier: notifier,
            hangups: hangups, logger: logger, running: RunningConfiguration(configuration),
            startedWith: (configuration.status, configuration.daemon),
            logLevel: logLevel == nil ? logLevelControl : nil,
            afterReload: { continuity.storeListeners(of: datapath) })
        var datapathService = DatapathService(datapath: datapath, logger: logger)
        datapathService.onReady = {
            continuity.storeListeners(of: datapath)
            notifier.ready(status: SystemdService.statusLine(datapath: datapath, state: daemonState, rates: nil))
        }
        datapathService.onStopping = { notifier.stopping() }
        if notifier.isEnabled {
            datapathService.handOverSessions = { continuity.storeSessions($0) }
        }
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [
            .init(service: datapathService),
            .init(service: systemd),
            .init(service: DrainService(state: daemonState, signals: drainSignals, logger: logger)),
        ]
        // Bound before READY=1 (sent when the datapath service starts), so a ready daemon answers.
        do {
            let source = DaemonStatusSource(datapath: datapath, state: daemonState)
            if let status = try await StatusService.start(configuration.status, source: source, logger: logger) {
                services.append(.init(service: status))
            }
        } catch {
            logger.critical("cannot start: \(error)")
            await datapath.stop()
            throw ExitCode(1)
        }
        if let interval = WatchdogService.configuredInterval() {
            services.append(
                .init(
                    service: WatchdogService(interval: interval, notifier: notifier, logger: logger) { timeout in
                        await datapath.probe(timeout: timeout)
                    }))
        }
        let group = ServiceGroup(
            configuration: .init(
                services: services,
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger
            ))
        try await group.run()
    }
}

func printError(_ s: String) {
    writeStderr(s + "\n")
}
