import CSystemd
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// journald integration for logs.
public enum Journal {
    /// True when stderr is connected to the journal: `JOURNAL_STREAM` (set by systemd for
    /// `StandardError=journal`) names the device and inode of fd 2 (see systemd.exec(5)).
    public static var isStderrJournal: Bool {
        guard let value = getenv("JOURNAL_STREAM") else { return false }
        return matches(journalStream: String(cString: value), fd: 2)
    }

    /// True when `journalStream` ("DEVICE:INODE", decimal) is the file `fd` refers to.
    public static func matches(journalStream: String, fd: Int32) -> Bool {
        let parts = journalStream.split(separator: ":")
        guard parts.count == 2, let dev = UInt64(parts[0]), let ino = UInt64(parts[1]) else { return false }
        var st = stat()
        guard fstat(fd, &st) == 0 else { return false }
        return UInt64(st.st_dev) == dev && UInt64(st.st_ino) == ino
    }

    /// journald's native socket. `sd_journal_sendv` reports success when it is missing (it
    /// drops the entry silently), so the handler checks for it once at start-up.
    public static let socketPath = "/run/systemd/journal/socket"

    /// True when the native journal socket exists and this process may write to it.
    public static var isSocketAvailable: Bool { access(socketPath, W_OK) == 0 }

    /// syslog(3) priority of a log level: what journald shows and filters with `-p`.
    public static func priority(_ level: Logger.Level) -> Int {
        switch level {
        case .trace, .debug: 7  // LOG_DEBUG
        case .info: 6  // LOG_INFO
        case .notice: 5  // LOG_NOTICE
        case .warning: 4  // LOG_WARNING
        case .error: 3  // LOG_ERR
        case .critical: 2  // LOG_CRIT
        }
    }

    /// A metadata key as a journal field name: upper case, `[A-Z0-9_]`, prefixed `UDPRELAYD_`.
    /// `listener.name` and `peer.address` also get the short names `LISTENER` and `PEER`.
    public static func fieldName(_ key: String) -> String {
        let mapped = key.uppercased().map { c -> Character in
            c.isASCII && (c.isLetter || c.isNumber) ? c : "_"
        }
        return String(("UDPRELAYD_" + String(mapped)).prefix(64))
    }

    static let shortFields = ["listener.name": "LISTENER", "peer.address": "PEER"]
}

/// Logs straight to journald with `sd_journal_sendv(3)`: the priority, the message (with its
/// metadata as `key=value`, as on stderr) and each metadata value as a field of its own
/// (`LISTENER=`, `PEER=`, `UDPRELAYD_<KEY>=`), so `journalctl -p`, `LISTENER=echo` and `-o json`
/// work. With `native: false` (no journal socket), or when a send fails, the line goes to
/// stderr with a `<N>` priority prefix, which journald's stream reader understands too.
public struct JournalLogHandler: LogHandler {
    public var logLevel: Logger.Level
    public var metadata: Logger.Metadata = [:]
    public let identifier: String
    public let native: Bool

    public init(logLevel: Logger.Level, identifier: String = "udprelayd", native: Bool = Journal.isSocketAvailable) {
        self.logLevel = logLevel
        self.identifier = identifier
        self.native = native
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var merged = metadata
        if let extra = event.metadata { merged.merge(extra) { $1 } }
        let sorted = merged.sorted { $0.key < $1.key }
        var text = "\(event.message)"
        for (k, v) in sorted { text += " \(k)=\(v)" }
        let priority = Journal.priority(event.level)
        guard native else {
            Self.writeStderr("<\(priority)>\(text)\n")
            return
        }

        var fields = ["MESSAGE=\(text)", "PRIORITY=\(priority)", "SYSLOG_IDENTIFIER=\(identifier)"]
        for (k, v) in sorted {
            if let short = Journal.shortFields[k] { fields.append("\(short)=\(v)") }
            fields.append("\(Journal.fieldName(k))=\(v)")
        }
        if Self.send(fields) < 0 {
            Self.writeStderr("<\(priority)>\(text)\n")
        }
    }

    /// `sd_journal_sendv` with one iovec per field; returns its result (negative errno).
    static func send(_ fields: [String]) -> Int32 {
        var bytes: [UInt8] = []
        var ranges: [Range<Int>] = []
        for f in fields {
            let start = bytes.count
            bytes.append(contentsOf: f.utf8)
            ranges.append(start..<bytes.count)
        }
        return bytes.withUnsafeMutableBytes { buf in
            let iov = ranges.map { r in iovec(iov_base: buf.baseAddress! + r.lowerBound, iov_len: r.count) }
            return iov.withUnsafeBufferPointer { sd_journal_sendv($0.baseAddress, Int32($0.count)) }
        }
    }

    /// Writes the whole string to fd 2 in as few write(2) calls as possible, so concurrent
    /// lines do not interleave. The one stderr writer of the daemon.
    public static func writeStderr(_ s: String) {
        var s = s
        s.withUTF8 { buf in
            var offset = 0
            while offset < buf.count {
                let n = write(2, buf.baseAddress! + offset, buf.count - offset)
                if n < 0 {
                    if errno == EINTR { continue }
                    return
                }
                offset += n
            }
        }
    }
}
