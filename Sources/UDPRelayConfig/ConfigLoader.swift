#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Loads and validates configuration files. `--check-config`, start-up and reload all call
/// `load(path:)`, so they accept and reject exactly the same files, included ones too.
public enum ConfigLoader {
    /// Reads and parses a file; throws every problem found, each with `file:line`.
    public static func load(path: String) throws(ConfigErrors) -> Configuration {
        let bytes: [UInt8]
        do {
            bytes = try readFile(path)
        } catch {
            throw ConfigErrors([ConfigError(file: path, line: 0, message: "cannot read configuration file: \(error.message)")])
        }
        return try parse(bytes: bytes, file: path)
    }

    /// Parses configuration text; `file` is used in messages only.
    public static func parse(_ text: String, file: String) throws(ConfigErrors) -> Configuration {
        try parse(bytes: Array(text.utf8), file: file)
    }

    /// Parses the bytes of a configuration file; `file` names it in messages and is where
    /// relative `include` paths start.
    public static func parse(bytes: [UInt8], file: String) throws(ConfigErrors) -> Configuration {
        var parser = ConfigParser(file: file)
        var (sections, lexErrors) = INILexer.lex(bytes, file: file)
        parser.errors = lexErrors
        parser.includedFiles = Includes.load(into: &sections, file: file, mainSize: bytes.count, errors: &parser.errors)
        let configuration = parser.build(sections)
        guard parser.errors.isEmpty, let configuration else {
            throw parser.errors.result
        }
        return configuration
    }

    /// Reads a regular file of at most `ConfigLimits.maxFileSize` bytes. Anything else (a FIFO,
    /// a device, a directory, a socket) is refused before a single read, so a reload can never
    /// block on it: the open is non-blocking (a FIFO without writer would block in `open`),
    /// and only a regular file is read.
    static func readFile(_ path: String) throws(ValueError) -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY)
        guard fd >= 0 else { throw ValueError(String(cString: strerror(errno))) }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw ValueError(String(cString: strerror(errno))) }
        guard st.st_mode & S_IFMT == S_IFREG else {
            throw ValueError("not a regular file (\(fileType(st.st_mode))); give the path of an INI file")
        }
        let limit = ConfigLimits.maxFileSize
        let tooLarge = "file is larger than \(limit / 1024) KiB (\(limit) bytes), the most a configuration may be"
        guard st.st_size <= limit else { throw ValueError(tooLarge) }
        // The size may change under us: read at most one byte past the limit.
        var bytes = [UInt8](repeating: 0, count: limit + 1)
        var count = 0
        while count < bytes.count {
            let n = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress! + count, $0.count - count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw ValueError(String(cString: strerror(errno)))
            }
            if n == 0 { break }
            count += n
        }
        guard count <= limit else { throw ValueError(tooLarge) }
        bytes.removeSubrange(count...)
        return bytes
    }

    static func fileType(_ mode: mode_t) -> String {
        switch mode & S_IFMT {
        case S_IFIFO: "a FIFO"
        case S_IFDIR: "a directory"
        case S_IFCHR: "a character device"
        case S_IFBLK: "a block device"
        case S_IFSOCK: "a socket"
        default: "not a regular file"
        }
    }
}
