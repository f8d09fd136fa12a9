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

    /// `1400`, `1400B`, `64K`/`64KiB`, `4M`/`4MiB`, `1G`/`1GiB`: binary multiples (1K = 1024
    /// bytes), units in any case (`64k`, `63kib`). `KB`, `MB`, `GB` are refused as ambiguous.
    static func size(_ s: String, in range: ClosedRange<Int>) throws(ValueError) -> Int {
        let units: [(String, Int)] = [
            ("kib", 1024), ("mib", 1 << 20), ("gib", 1 << 30),
            ("k", 1024), ("m", 1 << 20), ("g", 1 << 30), ("b", 1),
        ]
        let lower = s.lowercased()
        let examples = sizeExamples.filter { range.contains($0.bytes) }.suffix(3).map(\.text)
        let expected = "expected a size from \(range.lowerBound) to \(range.upperBound) bytes (e.g. \(examples.joined(separator: ", "))), got '\(s)'"
        for ambiguous in ["kb", "mb", "gb"] where lower.hasSuffix(ambiguous) {
            let binary = ambiguous.prefix(1).uppercased() + "iB"
            throw ValueError(
                "'\(s)': \(ambiguous.uppercased()) could mean 1000 or 1024; write \(binary) (or \(binary.prefix(1))) for binary multiples. " + expected)
        }
        var number = Substring(lower)
        var multiplier = 1
        for (suffix, m) in units where lower.hasSuffix(suffix) {
            number = lower.dropLast(suffix.count)
            multiplier = m
            break
        }
        guard let n = Int(number.trimmingSpaces()), n >= 0 else { throw ValueError(expected) }
        let (v, overflow) = n.multipliedReportingOverflow(by: multiplier)
        guard !overflow, range.contains(v) else { throw ValueError(expected) }
        return v
    }

    /// Examples for messages, smallest first; a message shows the largest three its key accepts.
    static let sizeExamples: [(text: String, bytes: Int)] = [
        ("1400", 1400), ("9000", 9000), ("63KiB", 63 << 10), ("256KiB", 256 << 10), ("4MiB", 4 << 20), ("64MiB", 64 << 20),
    ]

    /// `50us`, `250ms`, `30s`, `5m`, `1h`, `1d`, units in any case (`30S`); a bare number means
    /// seconds.
    static func duration(_ s: String, min: Duration = .zero, max: Duration? = nil, allowZero: Bool = false) throws(ValueError) -> Duration {
        let units: [(String, Int64)] = [
            ("us", 1), ("ms", 1000), ("s", 1_000_000), ("m", 60_000_000),
            ("h", 3_600_000_000), ("d", 86_400_000_000),
        ]
        let lower = s.lowercased()
        var microsPerUnit: Int64 = 1_000_000
        var number = Substring(lower)
        for (suffix, m) in units where lower.hasSuffix(suffix) {
            number = lower.dropLast(suffix.count)
            microsPerUnit = m
            break
        }
        let examples = durationExamples.filter { example in
            (example.value != .zero || allowZero) && example.value >= min && (max.map { example.value <= $0 } ?? true)
        }.suffix(4).map(\.text)
        let list = examples.count > 1 ? examples.dropLast().joined(separator: ", ") + " or " + examples.last! : examples.joined()
        let expected = "expected a duration such as \(list), got '\(s)'"
        guard let n = Int64(number.trimmingSpaces()), n >= 0 else { throw ValueError(expected) }
        let (us, overflow) = n.multipliedReportingOverflow(by: microsPerUnit)
        guard !overflow else { throw ValueError(expected) }
        let d = Duration.microseconds(us)
        if d == .zero && !allowZero { throw ValueError("must be greater than zero, got '\(s)'") }
        if d < min { throw ValueError("must be at least \(Self.format(min)), got '\(s)'") }
        if let max, d > max { throw ValueError("must be at most \(Self.format(max)), got '\(s)'") }
        return d
    }

    static let durationExamples: [(text: String, value: Duration)] = [
        ("0", .zero), ("50us", .microseconds(50)), ("1ms", .milliseconds(1)), ("250ms", .milliseconds(250)),
        ("30s", .seconds(30)), ("5m", .seconds(300)), ("1h", .seconds(3600)),
    ]

    /// A duration the way the file writes it: `10ms`, `1s`, `50us`.
    static func format(_ d: Duration) -> String {
        let us = d.components.seconds * 1_000_000 + d.components.attoseconds / 1_000_000_000_000
        if us % 1_000_000 == 0 { return "\(us / 1_000_000)s" }
        if us % 1000 == 0 { return "\(us / 1000)ms" }
        return "\(us)us"
    }

    /// A rate (`1000/s`, `60/m`, `3600/h`), the unit in any case (`1000/S`).
    static func anyCaseRate(_ s: String) throws(ValueError) -> Rate {
        do {
            return try rate(s.lowercased())
        } catch {
            // The message quotes the value as written, not lowercased.
            throw ValueError(error.message.replacing("'\(s.lowercased())'", with: "'\(s)'"))
        }
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

    /// One `ADDRESS:PORT` (IPv4-mapped IPv6 refused).
    static func socketAddress(_ item: Substring) throws(ValueError) -> SocketAddress {
        let a: SocketAddress
        do {
            a = try SocketAddress(parsing: item)
        } catch {
            throw ValueError(error.message)
        }
        try refuseMapped(a.ip, port: a.port)
        return a
    }

    static func socketAddresses(_ s: String) throws(ValueError) -> [SocketAddress] {
        var out: [SocketAddress] = []
        var seen: Set<SocketAddress> = []
        for item in try words(s) {
            let a = try socketAddress(item)
            if !seen.insert(a).inserted { throw ValueError("address \(a) is listed twice") }
            out.append(a)
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

    /// Comma-separated `HOST:PORT` upstreams, each followed by its options (`weight=N`,
    /// `drain`, `backup`) separated by spaces; no host and port repeated.
    static func upstreams(_ s: String) throws(ValueError) -> [UpstreamEndpoint] {
        var out: [UpstreamEndpoint] = []
        for item in try list(s) {
            let e: UpstreamEndpoint
            do {
                e = try UpstreamEndpoint(parsingItem: item)
            } catch {
                throw ValueError(error.message)
            }
            if case .address(let ip) = e.host { try refuseMapped(ip, port: e.port) }
            if out.contains(where: { $0.isSameTarget(as: e) }) { throw ValueError("upstream \(e) is listed twice") }
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
