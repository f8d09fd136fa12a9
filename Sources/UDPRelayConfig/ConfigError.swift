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
}

/// Collects errors with bounded memory: long keys and messages are shortened, and past
/// `maxStoredErrors` errors are only counted.
struct ErrorCollector {
    let file: String
    private(set) var stored: [ConfigError] = []
    private(set) var uncounted = 0

    init(file: String) {
        self.file = file
    }

    var isEmpty: Bool { stored.isEmpty }
    var total: Int { stored.count + uncounted }

    mutating func add(line: Int, section: String? = nil, key: String? = nil, message: String) {
        guard stored.count < ConfigLimits.maxStoredErrors else {
            uncounted += 1
            return
        }
        stored.append(ConfigError(file: file, line: line, section: section.map { Self.excerpt(Self.printable($0), ConfigLimits.maxKeyLength) },
                                  key: key.map { Self.excerpt(Self.printable($0), ConfigLimits.maxKeyLength) },
                                  message: Self.excerpt(Self.printable(message), ConfigLimits.maxMessageLength)))
    }

    mutating func append(contentsOf other: ErrorCollector) {
        for e in other.stored { add(line: e.line, section: e.section, key: e.key, message: e.message) }
        uncounted += other.uncounted
    }

    /// The first `maxReportedErrors` by line, then one line counting the rest.
    var result: ConfigErrors {
        // Stable: errors on one line stay in the order they were found.
        let sorted = stored.enumerated().sorted { ($0.element.line, $0.offset) < ($1.element.line, $1.offset) }.map(\.element)
        let limit = ConfigLimits.maxReportedErrors
        guard total > limit else { return ConfigErrors(sorted) }
        var kept = Array(sorted.prefix(limit))
        kept.append(ConfigError(file: file, line: sorted[limit].line,
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
