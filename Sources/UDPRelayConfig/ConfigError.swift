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
/// operator fixes them all in one pass.
public struct ConfigErrors: Error, Sendable, Equatable, CustomStringConvertible {
    public var errors: [ConfigError]

    public init(_ errors: [ConfigError]) {
        self.errors = errors
    }

    public var description: String {
        errors.map(\.description).joined(separator: "\n")
    }
}

/// A value-level problem without a location; the parser adds file, line, section and key.
struct ValueError: Error {
    var message: String
    init(_ message: String) { self.message = message }
}
