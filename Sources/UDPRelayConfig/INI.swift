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
    /// The file it was read from (the main file, or one it includes).
    var file = ""
    /// False for a header that could not be read (already reported): its entries are kept
    /// apart so that nothing after it is taken for the previous section, and then ignored.
    var isValid = true
}

/// The lexer: splits text into sections and entries. Knows nothing about keys or types.
///
/// Syntax:
/// - `;` or `#` starts a comment at the start of a line, or after whitespace inside a line.
/// - `[kind]` or `[kind name]` opens a section.
/// - `key = value`; the value may be wrapped in double quotes to keep `;` or `#` in it
///   (escapes: `\"`, `\\`, `\n`, `\t`, `\xHH`).
enum INILexer {
    /// Lexes the bytes of a file. Lines end at LF (a CR before it is dropped, so CRLF files read
    /// as they look); a UTF-8 byte order mark at the start is skipped. A line that is not UTF-8,
    /// holds a control character other than tab, or is longer than `ConfigLimits.maxLineLength`
    /// is one error and is otherwise ignored.
    static func lex(_ bytes: [UInt8], file: String) -> (sections: [INISection], errors: ErrorCollector) {
        var sections: [INISection] = []
        var errors = ErrorCollector(file: file)
        var lineNumber = 0
        var start = bytes.starts(with: [0xEF, 0xBB, 0xBF]) ? 3 : 0
        while start <= bytes.count {
            let newline = bytes[start...].firstIndex(of: 0x0A)
            var end = newline ?? bytes.count
            let next = end + 1
            if end > start && bytes[end - 1] == 0x0D { end -= 1 }
            lineNumber += 1
            defer { start = next }
            if newline == nil && start == end { break }  // nothing after the last newline
            if end - start > ConfigLimits.maxLineLength {
                errors.add(
                    line: lineNumber, section: sections.last.flatMap { $0.isValid ? $0.header : nil },
                    message: "line is \(end - start) bytes long; the limit is \(ConfigLimits.maxLineLength)")
                continue
            }
            let raw = bytes[start..<end]
            if let problem = textProblem(raw) {
                errors.add(line: lineNumber, section: sections.last.flatMap { $0.isValid ? $0.header : nil }, message: problem)
                continue
            }
            lexLine(Substring(String(decoding: raw, as: UTF8.self)), number: lineNumber, into: &sections, errors: &errors)
        }
        for i in sections.indices { sections[i].file = file }
        return (sections, errors)
    }

    /// Why a line cannot be read as text, or nil: invalid UTF-8 or a control character.
    static func textProblem(_ line: ArraySlice<UInt8>) -> String? {
        for (offset, byte) in line.enumerated() where (byte < 0x20 && byte != 0x09) || byte == 0x7F {
            let name = byte == 0x7F ? "DEL" : controlNames[Int(byte)]
            return "control character \(name) (byte 0x\(hex(byte))) at column \(offset + 1); a configuration line is text, "
                + "and tab is the only control character it may hold (write bytes in a quoted value as \\xHH)"
        }
        guard let text = String(validating: line, as: UTF8.self) else {
            // Find the first byte that does not decode.
            var parser = Unicode.UTF8.ForwardParser()
            var iterator = line.makeIterator()
            var offset = 0
            while true {
                switch parser.parseScalar(from: &iterator) {
                case .valid(let encoded):
                    offset += encoded.count
                    continue
                case .emptyInput: offset = 0
                case .error: break
                }
                break
            }
            let bad = line[line.startIndex + offset]
            return "not valid UTF-8 (byte 0x\(hex(bad)) at column \(offset + 1)); save the file as UTF-8"
        }
        for (offset, scalar) in text.unicodeScalars.enumerated() where (0x80...0x9F).contains(scalar.value) {
            return "control character U+00\(hex(UInt8(scalar.value))) at character \(offset + 1); a configuration line is text"
        }
        return nil
    }

    static let controlNames = [
        "NUL", "SOH", "STX", "ETX", "EOT", "ENQ", "ACK", "BEL", "BS", "TAB", "LF", "VT", "FF", "CR",
        "SO", "SI", "DLE", "DC1", "DC2", "DC3", "DC4", "NAK", "SYN", "ETB", "CAN", "EM", "SUB",
        "ESC", "FS", "GS", "RS", "US",
    ]

    static func hex(_ byte: UInt8) -> String {
        let digits = Array("0123456789ABCDEF")
        return String([digits[Int(byte >> 4)], digits[Int(byte & 15)]])
    }

    static func lexLine(_ line: Substring, number lineNumber: Int, into sections: inout [INISection], errors: inout ErrorCollector) {
        let trimmed = line.trimmingSpaces()
        if trimmed.isEmpty || trimmed.first == ";" || trimmed.first == "#" { return }

        // Errors name the section they are in; after an unreadable header, none.
        let current = sections.last.flatMap { $0.isValid ? $0.header : nil }
        if trimmed.first == "[" {
            let content = stripComment(trimmed)
            let ignored = "; the lines up to the next section header are ignored"
            func invalid(_ message: String, kind: Substring?) {
                errors.add(line: lineNumber, message: message + ignored)
                sections.append(INISection(header: String(content), kind: String(kind ?? ""), name: nil, line: lineNumber, isValid: false))
            }
            let inner = content.dropFirst().dropLast().trimmingSpaces()
            let words = inner.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard content.last == "]" else {
                invalid("section header must end with ']': '\(trimmed)'", kind: content.dropFirst().split(separator: " ").first)
                return
            }
            guard let kind = words.first, words.count <= 2 else {
                invalid("expected '[section]' or '[section name]', got '\(content)'", kind: words.first)
                return
            }
            let name = words.count == 2 ? String(words[1]) : nil
            let header = name.map { "\(kind) \($0)" } ?? String(kind)
            sections.append(INISection(header: header, kind: String(kind), name: name, line: lineNumber))
            return
        }

        guard let eq = trimmed.firstIndex(of: "=") else {
            errors.add(line: lineNumber, section: current, message: "expected 'key = value', got '\(stripComment(trimmed))'")
            return
        }
        let key = trimmed[..<eq].trimmingSpaces()
        let rest = trimmed[trimmed.index(after: eq)...].trimmingSpaces()
        guard !key.isEmpty else {
            errors.add(line: lineNumber, section: current, message: "missing key before '='")
            return
        }
        let value: String
        do {
            value = try parseValue(rest)
        } catch {
            errors.add(line: lineNumber, section: current, key: String(key), message: error.message)
            return
        }
        guard !sections.isEmpty else {
            errors.add(
                line: lineNumber, key: String(key),
                message: "key outside of any section; put it under [daemon], [status] or [listener NAME]")
            return
        }
        sections[sections.count - 1].entries.append(INIEntry(key: String(key), value: value, line: lineNumber))
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
