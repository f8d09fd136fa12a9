#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Loads and validates configuration files. `--check-config`, start-up and reload all call
/// `load(path:)`, so they accept and reject exactly the same files.
public enum ConfigLoader {
    /// Reads and parses a file; throws every problem found, each with `file:line`.
    public static func load(path: String) throws(ConfigErrors) -> Configuration {
        let text: String
        do {
            text = try readFile(path)
        } catch {
            throw ConfigErrors([ConfigError(file: path, line: 0, message: "cannot read configuration file: \(error.message)")])
        }
        return try parse(text, file: path)
    }

    /// Parses configuration text; `file` is used in messages only.
    public static func parse(_ text: String, file: String) throws(ConfigErrors) -> Configuration {
        var parser = ConfigParser(file: file)
        let (sections, lexErrors) = INILexer.lex(text, file: file)
        parser.errors = lexErrors
        let configuration = parser.build(sections)
        guard parser.errors.isEmpty, let configuration else {
            throw ConfigErrors(parser.errors.sorted { $0.line < $1.line })
        }
        return configuration
    }

    static func readFile(_ path: String) throws(ValueError) -> String {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw ValueError(String(cString: strerror(errno))) }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw ValueError(String(cString: strerror(errno)))
            }
            if n == 0 { break }
            bytes.append(contentsOf: chunk[0..<n])
            if bytes.count > 16 << 20 { throw ValueError("file is larger than 16 MiB") }
        }
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw ValueError("file is not valid UTF-8")
        }
        return text
    }
}
