#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import CSystemd
import Logging
import ServiceLifecycle
import UDPRelayConfig
import UDPRelayDatapath

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
        if let logLevel, LogLevel(rawValue: logLevel) == nil {
            throw ValidationError("--log-level must be one of \(LogLevel.allCases.map(\.rawValue).joined(separator: "|")), got '\(logLevel)'")
        }
    }

    func run() async throws {
        let configuration: Configuration
        do {
            configuration = try ConfigLoader.load(path: config)
        } catch {
            for e in error.errors { printError("error: \(e)") }
            if checkConfig { printError("configuration invalid: \(error.errors.count) error(s)") }
            throw ExitCode(exitConfigError)
        }
        if checkConfig {
            print("configuration OK: \(configuration.listeners.count) listener\(configuration.listeners.count == 1 ? "" : "s")")
            return
        }

        let level = Logger.Level(rawValue: logLevel ?? configuration.daemon.logLevel.rawValue) ?? .info
        LoggingSystem.bootstrap { label in StderrLogHandler(logLevel: level, label: label) }
        var logger = Logger(label: "udprelayd")
        logger.logLevel = level

        let datapath: Datapath
        do {
            datapath = try Datapath(configuration: configuration, logger: logger)
        } catch {
            logger.critical("cannot start: \(error)")
            throw ExitCode(1)
        }

        logger.info("starting", metadata: ["version": "\(BuildInfo.version)", "config": "\(config)", "pid": "\(getpid())"])
        let group = ServiceGroup(configuration: .init(
            services: [.init(service: DatapathService(datapath: datapath, logger: logger))],
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger
        ))
        try await group.run()
    }
}

func printError(_ s: String) {
    writeStderr(s + "\n")
}
