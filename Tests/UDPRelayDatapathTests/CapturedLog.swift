import Logging
import UDPRelayConfig
import XCTest

@testable import UDPRelayDatapath

#if canImport(Glibc)
import Glibc
#endif

/// A log handler that keeps messages.
final class CapturedLog: LogHandler, @unchecked Sendable {
    // @unchecked: `stored` is guarded by `lock`; the LogHandler value properties are test-only.
    private let lock = NSLock()
    private var stored: [String] = []
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace
    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }
    func log(event: LogEvent) {
        lock.lock()
        stored.append("\(event.level) \(event.message)")
        lock.unlock()
    }
    var lines: [String] {
        lock.lock()
        defer { lock.unlock() }
        return stored
    }
}

/// Keeps every log event with its metadata (the logger's and the event's) and when it came
/// (monotonic nanoseconds).
final class RecordLog: LogHandler, @unchecked Sendable {
    // @unchecked: `stored` is guarded by `lock`; the LogHandler value properties are test-only.
    struct Entry {
        var level: Logger.Level
        var message: String
        var metadata: [String: String]
        var time: UInt64
    }

    private let lock = NSLock()
    private var stored: [Entry] = []
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace
    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }
    func log(event: LogEvent) {
        let all = metadata.merging(event.metadata ?? [:]) { $1 }.mapValues { "\($0)" }
        let entry = Entry(level: event.level, message: "\(event.message)", metadata: all, time: SystemClock.monotonicNanos())
        lock.lock()
        stored.append(entry)
        lock.unlock()
    }
    var entries: [Entry] {
        lock.lock()
        defer { lock.unlock() }
        return stored
    }
    /// The metadata of every session record ("session ended", at info).
    var records: [[String: String]] { entries.filter { $0.message == "session ended" && $0.level == .info }.map(\.metadata) }
    /// `level message key=value ...`, for failure messages.
    var lines: [String] {
        entries.map { e in "\(e.level) \(e.message) " + e.metadata.keys.sorted().map { "\($0)=\(e.metadata[$0]!)" }.joined(separator: " ") }
    }
}
