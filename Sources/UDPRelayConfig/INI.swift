/// A raw `key = value` line of an INI file, before typing.
struct INIEntry: Sendable {
    var key: String
    var value: String
    var line: Int
}

/// A raw `[kind name]` section of an INI file with its entries in file order.
struct INISection: Sendable {
    /// The whole header text between brackets, whitespace-normalised (`listener echo`).
    var header: String
    /// First word of the header (`listener`).
    var kind: String
    /// Rest of the header (`echo`), if any.
    var name: String?
    var line: Int
    var entries: [INIEntry] = []
}

/// The lexer: splits text into sections and entries. Knows nothing about keys or types.
///
/// Syntax:
/// - `;` or `#` starts a comment at the start of a line, or after whitespace inside a line.
/// - `[kind]` or `[kind name]` opens a section.
/// - `key = value`; the value may be wrapped in double quotes to keep `;` or `#` in it
///   (escapes: `\"`, `\\`, `\n`, `\t`, `\xHH`).
enum INILexer {
    static func lex(_ text: String, file: String) -> (sections: [INISection], errors: ErrorCollector) {
        var sections: [INISection] = []
        var errors = ErrorCollector(file: file)
        var lineNumber = 0
        for rawLine in text.split(separator: "\n", omittingEmptySubsequences: false) {
            lineNumber += 1
            if rawLine.utf8.count > ConfigLimits.maxLineLength {
                errors.add(line: lineNumber, section: sections.last?.header,
                           message: "line is \(rawLine.utf8.count) bytes long; the limit is \(ConfigLimits.maxLineLength)")
                continue
            }
            var line = Substring(rawLine)
            if line.hasSuffix("\r") { line = line.dropLast() }
            let trimmed = line.trimmingSpaces()
            if trimmed.isEmpty || trimmed.first == ";" || trimmed.first == "#" { continue }

            if trimmed.first == "[" {
                let content = stripComment(trimmed)
                guard content.last == "]" else {
                    errors.add(line: lineNumber, message: "section header must end with ']': '\(trimmed)'")
                    continue
                }
                let inner = content.dropFirst().dropLast().trimmingSpaces()
                let words = inner.split(whereSeparator: { $0 == " " || $0 == "\t" })
                guard let kind = words.first, words.count <= 2 else {
                    errors.add(line: lineNumber, message: "expected '[section]' or '[section name]', got '\(content)'")
                    continue
                }
                let name = words.count == 2 ? String(words[1]) : nil
                let header = name.map { "\(kind) \($0)" } ?? String(kind)
                sections.append(INISection(header: header, kind: String(kind), name: name, line: lineNumber))
                continue
            }

            guard let eq = trimmed.firstIndex(of: "=") else {
                errors.add(line: lineNumber, section: sections.last?.header,
                                          message: "expected 'key = value', got '\(stripComment(trimmed))'")
                continue
            }
            let key = trimmed[..<eq].trimmingSpaces()
            let rest = trimmed[trimmed.index(after: eq)...].trimmingSpaces()
            guard !key.isEmpty else {
                errors.add(line: lineNumber, section: sections.last?.header,
                                          message: "missing key before '='")
                continue
            }
            let value: String
            do {
                value = try parseValue(rest)
            } catch {
                errors.add(line: lineNumber, section: sections.last?.header,
                                          key: String(key), message: error.message)
                continue
            }
            guard !sections.isEmpty else {
                errors.add(line: lineNumber, key: String(key),
                                          message: "key outside of any section; put it under [daemon], [status] or [listener NAME]")
                continue
            }
            sections[sections.count - 1].entries.append(INIEntry(key: String(key), value: value, line: lineNumber))
        }
        return (sections, errors)
    }

    /// Removes a trailing comment: `;` or `#` at the start or preceded by whitespace.
    static func stripComment(_ s: Substring) -> Substring {
        var previousIsSpace = true
        for index in s.indices {
            let c = s[index]
            if (c == ";" || c == "#") && previousIsSpace {
                return s[..<index].trimmingSpaces()
            }
            previousIsSpace = c == " " || c == "\t"
        }
        return s.trimmingSpaces()
    }

    static func parseValue(_ rest: Substring) throws(ValueError) -> String {
        guard rest.first == "\"" else { return String(stripComment(rest)) }
        var out = ""
        var index = rest.index(after: rest.startIndex)
        while index < rest.endIndex {
            let c = rest[index]
            if c == "\"" {
                let tail = stripComment(rest[rest.index(after: index)...])
                guard tail.isEmpty else { throw ValueError("unexpected text after closing quote: '\(tail)'") }
                return out
            }
            if c == "\\" {
                index = rest.index(after: index)
                guard index < rest.endIndex else { break }
                switch rest[index] {
                case "\"": out.append("\"")
                case "\\": out.append("\\")
                case "n": out.append("\n")
                case "t": out.append("\t")
                case "x":
                    let h1 = rest.index(after: index)
                    guard h1 < rest.endIndex, rest.index(after: h1) < rest.endIndex,
                          let byte = UInt8(String(rest[h1...rest.index(after: h1)]), radix: 16)
                    else { throw ValueError("'\\x' must be followed by two hex digits") }
                    out.unicodeScalars.append(Unicode.Scalar(byte))
                    index = rest.index(after: h1)
                default:
                    throw ValueError("unknown escape '\\\(rest[index])' in quoted value (use \\\", \\\\, \\n, \\t or \\xHH)")
                }
            } else {
                out.append(c)
            }
            index = rest.index(after: index)
        }
        throw ValueError("unterminated quoted value")
    }
}

extension Substring {
    func trimmingSpaces() -> Substring {
        var s = self
        while let f = s.first, f == " " || f == "\t" { s = s.dropFirst() }
        while let l = s.last, l == " " || l == "\t" { s = s.dropLast() }
        return s
    }
}

extension String {
    func trimmingSpaces() -> Substring { Substring(self).trimmingSpaces() }
}
