#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `include = PATH-or-glob` in `[daemon]`: more files of `[listener NAME]` sections.
///
/// Several `include` lines are allowed, read in file order; a glob's matches are read in byte
/// order of their paths. A relative path is relative to the directory of the file that names
/// it. Each included file gets the main file's checks (a regular file, the size and line
/// limits) and its errors name it and its lines. Included files may hold only listeners, so an
/// include cannot include: there is no nesting to bound. A glob that matches nothing adds
/// nothing; an explicit path that does not exist is an error.
enum Includes {
    /// Reads the files the `include` entries of `sections` (the main file's) name, removes
    /// those entries, and appends the files' sections. Returns the files read, in order.
    static func load(into sections: inout [INISection], file: String, mainSize: Int, errors: inout ErrorCollector) -> [String] {
        var entries: [INIEntry] = []
        for i in sections.indices where sections[i].isValid && sections[i].kind == "daemon" && sections[i].name == nil {
            entries += sections[i].entries.filter { $0.key == "include" }
            sections[i].entries.removeAll { $0.key == "include" }
        }
        guard !entries.isEmpty else { return [] }
        let main = canonical(file)
        var read: [String: (path: String, line: Int)] = [:]
        var files: [String] = []
        var totalSize = mainSize
        func fail(_ entry: INIEntry, _ message: String) {
            errors.add(line: entry.line, section: "daemon", key: "include", message: message)
        }
        for entry in entries {
            guard !entry.value.isEmpty else {
                fail(entry, "missing value")
                continue
            }
            let pattern = resolve(entry.value, relativeTo: file)
            let paths: [String]
            if isPattern(entry.value) {
                do {
                    paths = try expand(pattern)
                } catch {
                    fail(entry, "cannot expand '\(pattern)': \(error.message)")
                    continue
                }
            } else {
                paths = [pattern]
            }
            for path in paths {
                guard files.count < ConfigLimits.maxIncludedFiles else {
                    fail(entry, "more than \(ConfigLimits.maxIncludedFiles) included files; '\(path)' and the rest are not read")
                    break
                }
                let real = canonical(path)
                if real == main {
                    fail(entry, "'\(path)' is the main configuration file itself")
                    continue
                }
                if let first = read[real] {
                    fail(entry, "'\(path)' is included twice (first as '\(first.path)' at line \(first.line))")
                    continue
                }
                read[real] = (path, entry.line)
                let bytes: [UInt8]
                do {
                    bytes = try ConfigLoader.readFile(path)
                } catch {
                    fail(entry, "cannot read included file '\(path)': \(error.message)")
                    continue
                }
                totalSize += bytes.count
                guard totalSize <= ConfigLimits.maxTotalSize else {
                    fail(
                        entry,
                        "the configuration with its included files is larger than \(ConfigLimits.maxTotalSize >> 20) MiB "
                            + "(\(ConfigLimits.maxTotalSize) bytes), the most it may be; '\(path)' and the rest are not read")
                    return files
                }
                files.append(path)
                errors.register(file: path)
                let (included, lexErrors) = INILexer.lex(bytes, file: path)
                errors.append(contentsOf: lexErrors)
                sections += included
            }
        }
        return files
    }

    /// Whether an `include` value is a glob (`*`, `?` or `[`) rather than one path.
    static func isPattern(_ value: String) -> Bool {
        value.contains { $0 == "*" || $0 == "?" || $0 == "[" }
    }

    /// `path` as given when absolute, else relative to the directory of `file` (unchanged
    /// when `file` names no directory, so it stays relative to the working directory as
    /// `file` is).
    static func resolve(_ path: String, relativeTo file: String) -> String {
        guard !path.hasPrefix("/"), let slash = file.lastIndex(of: "/") else { return path }
        return String(file[...slash]) + path
    }

    /// The paths `pattern` matches (glob(3)), in byte order; none when nothing matches.
    static func expand(_ pattern: String) throws(ValueError) -> [String] {
        var g = glob_t()
        defer { globfree(&g) }
        let rc = glob(pattern, 0, nil, &g)
        switch rc {
        case 0: break
        case GLOB_NOMATCH: return []
        case GLOB_NOSPACE: throw ValueError("out of memory")
        default: throw ValueError("read error")
        }
        var out: [String] = []
        for i in 0..<Int(g.gl_pathc) {
            if let p = g.gl_pathv[i] { out.append(String(cString: p)) }
        }
        return out.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
    }

    /// The real path of an existing file (symbolic links and `..` resolved), else `path`.
    static func canonical(_ path: String) -> String {
        guard let p = realpath(path, nil) else { return path }
        defer { free(p) }
        return String(cString: p)
    }
}
