import Logging
import Synchronization
import UDPRelayConfig
import UDPRelayDatapath
import UDPRelaySystemd

#if canImport(Glibc)
import Glibc
#endif

/// One line per event on stderr: `LEVEL message key=value ...`, metadata sorted by key.
/// A timestamp is added when stderr is not the journal (which stamps lines itself).
struct StderrLogHandler: LogHandler {
    var logLevel: Logger.Level
    var metadata: Logger.Metadata = [:]
    let label: String

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var merged = metadata
        if let extra = event.metadata { merged.merge(extra) { $1 } }
        var line = "\(Self.timestamp()) \(event.level.rawValue.uppercased()) \(event.message)"
        for (k, v) in merged.sorted(by: { $0.key < $1.key }) {
            line += " \(k)=\(v)"
        }
        line += "\n"
        writeStderr(line)
    }

    static func timestamp() -> String {
        let now = SystemClock.wallTime()
        var tm = tm()
        var t = time_t(now.seconds)
        gmtime_r(&t, &tm)
        var buf = [CChar](repeating: 0, count: 32)
        _ = strftime(&buf, buf.count, "%Y-%m-%dT%H:%M:%S", &tm)
        let ms = now.nanoseconds / 1_000_000
        let msText = ms < 10 ? "00\(ms)" : (ms < 100 ? "0\(ms)" : "\(ms)")
        let base = String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return "\(base).\(msText)Z"
    }
}

/// Writes to stderr through the daemon's one stderr writer (in UDPRelaySystemd).
func writeStderr(_ s: String) {
    JournalLogHandler.writeStderr(s)
}

/// The daemon's one log level, shared by every logger, so a reload can change it
/// (`[daemon] log_level`) without restarting.
final class LogLevelControl: Sendable {
    private let raw: Atomic<UInt8>

    init(_ level: Logger.Level) {
        raw = Atomic(Self.index(level))
    }

    var level: Logger.Level {
        get { Logger.Level.allCases[Int(raw.load(ordering: .relaxed))] }
        set { raw.store(Self.index(newValue), ordering: .relaxed) }
    }

    private static func index(_ level: Logger.Level) -> UInt8 {
        UInt8(Logger.Level.allCases.firstIndex(of: level)!)
    }
}

/// Wraps the output handler (stderr or journal) so its level is the shared, reloadable one.
struct LevelControlledLogHandler: LogHandler {
    var inner: any LogHandler
    let control: LogLevelControl

    var logLevel: Logger.Level {
        get { control.level }
        set { control.level = newValue }
    }

    var metadata: Logger.Metadata {
        get { inner.metadata }
        set { inner.metadata = newValue }
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { inner[metadataKey: key] }
        set { inner[metadataKey: key] = newValue }
    }

    /// Events that name a peer pass the process-wide flood gate first (see `LogFloodGate`).
    func log(event: LogEvent) {
        var event = event
        if event.metadata?["peer.address"] != nil || inner.metadata["peer.address"] != nil {
            guard let skipped = LevelControlledLogHandler.gate.admit("\(event.level) \(event.message)", now: SystemClock.coarseMonotonicNanos()) else {
                return
            }
            if skipped > 0 {
                // Added to what a call site's own limiter left out, if it says.
                let already = event.metadata?["log.suppressed"].flatMap { UInt64("\($0)") } ?? 0
                if event.metadata == nil { event.metadata = [:] }
                event.metadata?["log.suppressed"] = "\(already + skipped)"
            }
        }
        inner.log(event: event)
    }

    /// One gate for the process: every logger's handler shares it. Looser than the call sites'
    /// own limiters (20 a second per kind and worker), so it only acts where they are missing
    /// or many workers add up.
    static let gate = LogFloodGate(lines: 50, per: .seconds(1))
}
