/// One problem found in a configuration file, located by file, line, section and key.
///
/// Rendered as `file:line: [section] key: message`, the form editors and `grep -n` understand.
public struct ConfigError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Path of the file as given by the user.
    public var file: String
    /// 1-based line number; 0 when the problem concerns the whole file.
    public var line: Int
    /// The section header without brackets (`daemon`, `listener echo`), if any.
    public var section: String?
    /// The key, if the problem concerns one.
    public var key: String?
    /// What was wrong and what was expected.
    public var message: String

    public init(file: String, line: Int, section: String? = nil, key: String? = nil, message: String) {
        self.file = file
        self.line = line
        self.section = section
        self.key = key
        self.message = message
    }

    public var description: String {
        var out = line > 0 ? "\(file):\(line):" : "\(file):"
        if let section { out += " [\(section)]" }
        if let key { out += " \(key):" } else if section != nil { out += ":" }
        out += " \(message)"
        return out
    }
}

/// Every problem found while loading a file. Loading never stops at the first error, so an
/// operator fixes them all in one pass; but only the first `ConfigLimits.maxReportedErrors`
/// (by line) are kept, logged and shown, followed by one line that counts the rest, so a file
/// of garbage costs a bounded log and a bounded `/status`.
public struct ConfigErrors: Error, Sendable, Equatable, CustomStringConvertible {
    /// The errors kept, in line order; when some were left out, the last one says how many.
    public var errors: [ConfigError]
    /// How many problems were found in all, including those left out.
    public var total: Int

    public init(_ errors: [ConfigError], total: Int? = nil) {
        self.errors = errors
        self.total = total ?? errors.count
    }

    public var description: String {
        errors.map(\.description).joined(separator: "\n")
    }
}

/// Bounds on what a configuration file may cost to load, whoever wrote it.
public enum ConfigLimits {
    /// Largest file read: about ten times a file with a thousand listeners.
    public static let maxFileSize = 1 << 20
    /// Longest line: room for a list of a few thousand addresses or networks.
    public static let maxLineLength = 64 << 10
    /// Errors kept, logged and shown; the rest are counted.
    public static let maxReportedErrors = 100
    /// Errors stored while parsing (before sorting by line); beyond it they are only counted.
    static let maxStoredErrors = 1000
    /// Longest message text kept; longer ones lose their middle (a quoted value, usually).
    static let maxMessageLength = 1024
    /// Longest key shown in a message.
    static let maxKeyLength = 64
    /// Most files `include =` may add, and most bytes all files together may hold: a glob
    /// over a large directory costs a bounded load.
    public static let maxIncludedFiles = 1024
    public static let maxTotalSize = 16 << 20
}

/// Collects errors with bounded memory: long keys and messages are shortened, and past
/// `maxStoredErrors` errors are only counted.
struct ErrorCollector {
    /// The main file: errors name it unless they say otherwise.
    let file: String
    private(set) var stored: [ConfigError] = []
    private(set) var uncounted = 0
    /// The files in the order they were read (the main file, then included ones): errors are
    /// reported file by file in this order, each file's by line.
    private(set) var files: [String]

    init(file: String) {
        self.file = file
        files = [file]
    }

    var isEmpty: Bool { stored.isEmpty }
    var total: Int { stored.count + uncounted }

    /// Notes that `file` was read now, so its errors come after those of the files before it.
    mutating func register(file: String) {
        if !files.contains(file) { files.append(file) }
    }

    mutating func add(file: String? = nil, line: Int, section: String? = nil, key: String? = nil, message: String) {
        guard stored.count < ConfigLimits.maxStoredErrors else {
            uncounted += 1
            return
        }
        let file = file ?? self.file
        register(file: file)
        stored.append(
            ConfigError(
                file: file, line: line, section: section.map { Self.excerpt(Self.printable($0), ConfigLimits.maxKeyLength) },
                key: key.map { Self.excerpt(Self.printable($0), ConfigLimits.maxKeyLength) },
                message: Self.excerpt(Self.printable(message), ConfigLimits.maxMessageLength)))
    }

    mutating func append(contentsOf other: ErrorCollector) {
        for f in other.files { register(file: f) }
        for e in other.stored { add(file: e.file, line: e.line, section: e.section, key: e.key, message: e.message) }
        uncounted += other.uncounted
    }

    /// The first `maxReportedErrors` by file and line, then one line counting the rest.
    var result: ConfigErrors {
        // Stable: errors on one line stay in the order they were found.
        var rank: [String: Int] = [:]
        for (i, f) in files.enumerated() where rank[f] == nil { rank[f] = i }
        let sorted = stored.enumerated().sorted {
            (rank[$0.element.file] ?? 0, $0.element.line, $0.offset) < (rank[$1.element.file] ?? 0, $1.element.line, $1.offset)
        }.map(\.element)
        let limit = ConfigLimits.maxReportedErrors
        guard total > limit else { return ConfigErrors(sorted) }
        var kept = Array(sorted.prefix(limit))
        kept.append(
            ConfigError(
                file: sorted[limit].file, line: sorted[limit].line,
                message: "and \(total - limit) more error(s) not shown; fix the ones above and check again"))
        return ConfigErrors(kept, total: total)
    }

    /// `s` with control characters written as `\xHH`: a quoted value may hold any byte
    /// (`"\n"`, `"\x00"`), and a message quoting it must stay one readable log line.
    static func printable(_ s: String) -> String {
        guard s.unicodeScalars.contains(where: isControl) else { return s }
        var out = String.UnicodeScalarView()
        for scalar in s.unicodeScalars {
            if isControl(scalar) {
                let digits = Array("0123456789abcdef".unicodeScalars)
                out.append(contentsOf: ["\\", "x", digits[Int(scalar.value >> 4)], digits[Int(scalar.value & 15)]])
            } else {
                out.append(scalar)
            }
        }
        return String(out)
    }

    static func isControl(_ scalar: Unicode.Scalar) -> Bool {
        scalar.value < 0x20 || (0x7F...0x9F).contains(scalar.value)
    }

    /// `s` itself, or its start and end around `…(N characters left out)…` when longer than `limit`.
    static func excerpt(_ s: String, _ limit: Int) -> String {
        guard s.utf8.count > limit else { return s }
        let scalars = Array(s.unicodeScalars)
        guard scalars.count > limit else { return s }
        let head = limit * 3 / 4, tail = limit / 4
        var out = String.UnicodeScalarView()
        out.append(contentsOf: scalars[..<head])
        let omitted = scalars.count - head - tail
        out.append(contentsOf: "…(\(omitted) characters left out)…".unicodeScalars)
        out.append(contentsOf: scalars[(scalars.count - tail)...])
        return String(out)
    }
}

/// A value-level problem without a location; the parser adds file, line, section and key.
struct ValueError: Error {
    var message: String
    init(_ message: String) { self.message = message }
}
