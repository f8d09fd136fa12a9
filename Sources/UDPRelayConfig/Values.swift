/// Parsers for the typed values of the configuration file. Each returns a value or throws a
/// message that says what was expected; the caller adds file, line, section and key.
enum Values {
    static func bool(_ s: String) throws(ValueError) -> Bool {
        switch s.lowercased() {
        case "yes", "true", "on", "1": return true
        case "no", "false", "off", "0": return false
        default: throw ValueError("expected yes/no/true/false/on/off, got '\(s)'")
        }
    }

    static func integer(_ s: String, in range: ClosedRange<Int>) throws(ValueError) -> Int {
        guard let v = Int(s), range.contains(v) else {
            throw ValueError("expected a whole number from \(range.lowerBound) to \(range.upperBound), got '\(s)'")
        }
        return v
    }

    /// `1400`, `1400B`, `64KiB`, `64K`, `1MiB`, `1M`: binary multiples.
    static func size(_ s: String, in range: ClosedRange<Int>) throws(ValueError) -> Int {
        let units: [(String, Int)] = [("KiB", 1024), ("MiB", 1 << 20), ("GiB", 1 << 30),
                                      ("K", 1024), ("M", 1 << 20), ("G", 1 << 30), ("B", 1)]
        var number = Substring(s)
        var multiplier = 1
        for (suffix, m) in units where s.hasSuffix(suffix) {
            number = s.dropLast(suffix.count)
            multiplier = m
            break
        }
        let expected = "expected a size from \(range.lowerBound) to \(range.upperBound) bytes (e.g. 1400, 64KiB), got '\(s)'"
        guard let n = Int(number.trimmingSpaces()), n >= 0 else { throw ValueError(expected) }
        let (v, overflow) = n.multipliedReportingOverflow(by: multiplier)
        guard !overflow, range.contains(v) else { throw ValueError(expected) }
        return v
    }

    /// `250ms`, `30s`, `5m`, `1h`, `1d`; a bare number means seconds.
    static func duration(_ s: String, min: Duration = .zero, allowZero: Bool = false) throws(ValueError) -> Duration {
        let units: [(String, Int64)] = [("us", 1), ("ms", 1000), ("s", 1_000_000), ("m", 60_000_000),
                                        ("h", 3_600_000_000), ("d", 86_400_000_000)]
        var microsPerUnit: Int64 = 1_000_000
        var number = Substring(s)
        for (suffix, m) in units where s.hasSuffix(suffix) {
            number = s.dropLast(suffix.count)
            microsPerUnit = m
            break
        }
        let expected = "expected a duration such as 250ms, 30s, 5m or 1h, got '\(s)'"
        guard let n = Int64(number.trimmingSpaces()), n >= 0 else { throw ValueError(expected) }
        let (us, overflow) = n.multipliedReportingOverflow(by: microsPerUnit)
        guard !overflow else { throw ValueError(expected) }
        let d = Duration.microseconds(us)
        if d == .zero && !allowZero { throw ValueError("must be greater than zero, got '\(s)'") }
        if d < min { throw ValueError("must be at least \(min), got '\(s)'") }
        return d
    }

    /// Comma-separated, whitespace-trimmed, no empty items.
    static func list(_ s: String) throws(ValueError) -> [Substring] {
        let items = s.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingSpaces() }
        if items.contains(where: \.isEmpty) { throw ValueError("empty item in comma list '\(s)'") }
        return items
    }

    /// A comma list whose items hold no spaces (addresses, networks): an item with a space in
    /// it is two items with the comma forgotten, and is reported as that.
    static func words(_ s: String) throws(ValueError) -> [Substring] {
        let items = try list(s)
        for item in items {
            if let space = item.firstIndex(where: { $0 == " " || $0 == "\t" }) {
                let before = item[..<space], after = item[space...].trimmingSpaces()
                throw ValueError("missing comma between '\(before)' and '\(after)'; separate list items with commas")
            }
        }
        return items
    }

    static func socketAddresses(_ s: String) throws(ValueError) -> [SocketAddress] {
        var out: [SocketAddress] = []
        var seen: Set<SocketAddress> = []
        for item in try words(s) {
            do {
                let a = try SocketAddress(parsing: item)
                try refuseMapped(a.ip, port: a.port)
                if !seen.insert(a).inserted { throw ValueError("address \(a) is listed twice") }
                out.append(a)
            } catch let e as ValueErrorMessage {
                throw ValueError(e.message)
            } catch let e as ValueError {
                throw e
            } catch {
                throw ValueError("\(error)")
            }
        }
        return out
    }

    /// An IPv4-mapped address (`[::ffff:127.0.0.1]:P`) cannot be bound by an IPv6-only socket
    /// (EINVAL at start) and hides an IPv4 address from every IPv4 check: the IPv4 form is
    /// asked for instead.
    static func refuseMapped(_ ip: IPAddress, port: UInt16) throws(ValueError) {
        guard let v4 = ip.mappedIPv4 else { return }
        throw ValueError("[\(ip)]:\(port) is an IPv4-mapped IPv6 address; write the IPv4 form, \(SocketAddress(ip: v4, port: port))")
    }

    /// Comma-separated `HOST:PORT` upstreams, no repeats.
    static func upstreams(_ s: String) throws(ValueError) -> [UpstreamEndpoint] {
        var out: [UpstreamEndpoint] = []
        for item in try words(s) {
            let e: UpstreamEndpoint
            do {
                e = try UpstreamEndpoint(parsing: item)
            } catch {
                throw ValueError(error.message)
            }
            if case .address(let ip) = e.host { try refuseMapped(ip, port: e.port) }
            if out.contains(e) { throw ValueError("upstream \(e) is listed twice") }
            out.append(e)
            if out.count > Defaults.maxUpstreams {
                throw ValueError("at most \(Defaults.maxUpstreams) upstreams per listener, got more")
            }
        }
        return out
    }

    /// `1/N`: one in N, N from 1 to 1000000.
    static func sample(_ s: String) throws(ValueError) -> Int {
        let parts = s.split(separator: "/", omittingEmptySubsequences: false).map { $0.trimmingSpaces() }
        guard parts.count == 2, parts[0] == "1", let n = Int(parts[1]), (1...1_000_000).contains(n) else {
            throw ValueError("expected '1/N' with N from 1 to 1000000 (e.g. sample = 1/10), got '\(s)'")
        }
        return n
    }

    /// A payload: `0x` followed by hex digits (`0x0d0a`), otherwise the text itself as UTF-8
    /// (quoted values also understand `\xHH`). May not be empty.
    static func payload(_ s: String) throws(ValueError) -> [UInt8] {
        if s.hasPrefix("0x") || s.hasPrefix("0X") {
            let hex = Array(s.utf8.dropFirst(2))
            guard !hex.isEmpty, hex.count % 2 == 0 else {
                throw ValueError("hex payload needs an even number of hex digits after 0x, got '\(s)'")
            }
            var out: [UInt8] = []
            for i in stride(from: 0, to: hex.count, by: 2) {
                guard let b = UInt8(String(decoding: hex[i..<i + 2], as: UTF8.self), radix: 16) else {
                    throw ValueError("'\(s)' is not valid hex (0x followed by pairs of 0-9, a-f)")
                }
                out.append(b)
            }
            return out
        }
        guard !s.isEmpty else { throw ValueError("payload may not be empty") }
        // Quoted \xHH escapes arrive as scalars U+0000...U+00FF: one byte each.
        if s.unicodeScalars.allSatisfy({ $0.value < 0x100 }) {
            return s.unicodeScalars.map { UInt8($0.value) }
        }
        return Array(s.utf8)
    }

    static func cidrs(_ s: String) throws(ValueError) -> [CIDR] {
        var out: [CIDR] = []
        for item in try words(s) {
            do {
                out.append(try CIDR(parsing: item))
            } catch {
                throw ValueError(error.message)
            }
        }
        return out
    }

    static func oneOf<E: RawRepresentable & CaseIterable>(_ s: String, _ type: E.Type) throws(ValueError) -> E where E.RawValue == String {
        if let v = E(rawValue: s.lowercased()) { return v }
        let names = E.allCases.map(\.rawValue)
        var message = "expected one of \(names.joined(separator: "|")), got '\(s)'"
        if let guess = Suggest.closest(to: s.lowercased(), in: names) { message += " (did you mean '\(guess)'?)" }
        throw ValueError(message)
    }
}

/// "Did you mean" suggestions by edit distance, with bounded work whatever the input: only
/// candidates whose length is within the accepted distance are compared, so a key of megabytes
/// costs no more than one as long as the longest candidate.
enum Suggest {
    /// Edits a suggestion may be away from the word: at most 3, less for short words.
    static func limit(for length: Int) -> Int { max(1, min(3, length / 3 + 1)) }

    static func closest(to word: String, in candidates: [String]) -> String? {
        let a = Array(word.unicodeScalars.prefix(Self.maxLength + 4))
        let limit = Self.limit(for: a.count)
        var best: (name: String, distance: Int)?
        for name in candidates {
            let b = Array(name.unicodeScalars)
            guard abs(a.count - b.count) <= limit else { continue }
            let d = distance(a, b)
            if d <= limit && d < (best?.distance ?? .max) { best = (name, d) }
        }
        return best?.name
    }

    /// Longer words are never compared character by character (no candidate is this long).
    static let maxLength = 64

    static func distance(_ a: String, _ b: String) -> Int {
        distance(Array(a.unicodeScalars), Array(b.unicodeScalars))
    }

    static func distance(_ a: [Unicode.Scalar], _ b: [Unicode.Scalar]) -> Int {
        if a.isEmpty { return b.count }
        if b.isEmpty { return a.count }
        var previous = Array(0...b.count)
        var current = [Int](repeating: 0, count: b.count + 1)
        for i in 1...a.count {
            current[0] = i
            for j in 1...b.count {
                let cost = a[i - 1] == b[j - 1] ? 0 : 1
                current[j] = Swift.min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            }
            swap(&previous, &current)
        }
        return previous[b.count]
    }
}
