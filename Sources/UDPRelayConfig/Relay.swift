/// Where an `upstream =` entry points: a literal IP address or a hostname (resolved by the
/// datapath at start-up and every `resolve_interval`), and a port.
public struct UpstreamEndpoint: Hashable, Sendable, CustomStringConvertible {
    /// A literal address or a DNS name.
    public enum Host: Hashable, Sendable {
        case address(IPAddress)
        case name(String)
    }

    public var host: Host
    /// 1 to 65535.
    public var port: UInt16
    /// `weight=N`: its share of new sessions relative to the others (`UpstreamEndpoint.weights`).
    public var weight: Int
    /// `drain`: takes no new sessions; the sessions it has continue until they end.
    public var drain: Bool
    /// `backup`: takes new sessions only while no primary (not backup, not draining) is up.
    public var backup: Bool

    /// Values `weight=N` accepts.
    public static let weights = 1...1000

    public init(host: Host, port: UInt16, weight: Int = 1, drain: Bool = false, backup: Bool = false) {
        self.host = host
        self.port = port
        self.weight = weight
        self.drain = drain
        self.backup = backup
    }

    /// Whether the two name the same host and port, whatever their options.
    public func isSameTarget(as other: UpstreamEndpoint) -> Bool { host == other.host && port == other.port }

    /// The options as written in the file (`weight=3 backup`), empty for the defaults.
    public var optionsText: String {
        var words: [String] = []
        if weight != 1 { words.append("weight=\(weight)") }
        if drain { words.append("drain") }
        if backup { words.append("backup") }
        return words.joined(separator: " ")
    }

    /// Parses an `upstream =` item: `HOST:PORT` then options separated by spaces: `weight=N`
    /// (1 to 1000), `drain`, `backup`, in any order and case.
    public init(parsingItem item: some StringProtocol) throws(ValueErrorMessage) {
        let words = Substring(item).split(whereSeparator: { $0 == " " || $0 == "\t" })
        guard let first = words.first else { throw ValueErrorMessage("empty upstream") }
        try self.init(parsing: first)
        var seen: Set<String> = []
        for word in words.dropFirst() {
            let lower = word.lowercased()
            let name = lower.split(separator: "=", maxSplits: 1).first.map(String.init) ?? lower
            guard ["weight", "drain", "backup"].contains(name) else {
                if word.contains(":") || word.contains(".") {
                    throw ValueErrorMessage("missing comma between '\(first)' and '\(word)'; separate list items with commas")
                }
                throw ValueErrorMessage("unknown upstream option '\(word)' after \(first); options are weight=N (1 to 1000), drain and backup")
            }
            guard seen.insert(name).inserted else { throw ValueErrorMessage("option '\(name)' is given twice for \(first)") }
            switch name {
            case "weight":
                let r = Self.weights
                guard lower.hasPrefix("weight="), let n = Int(lower.dropFirst(7)), r.contains(n) else {
                    throw ValueErrorMessage("weight must be weight=N with N a whole number from \(r.lowerBound) to \(r.upperBound), got '\(word)' for \(first)")
                }
                weight = n
            default:
                guard lower == name else { throw ValueErrorMessage("'\(name)' takes no value, got '\(word)' for \(first)") }
                if name == "drain" { drain = true } else { backup = true }
            }
        }
    }

    /// The literal socket address, nil for a hostname.
    public var literal: SocketAddress? {
        if case .address(let ip) = host { return SocketAddress(ip: ip, port: port) }
        return nil
    }

    /// Parses `A.B.C.D:PORT`, `[V6]:PORT` or `HOSTNAME:PORT` (port 1 to 65535).
    public init(parsing text: some StringProtocol) throws(ValueErrorMessage) {
        let s = Substring(text)
        if s.first == "[" || IPAddress(literal: s.split(separator: ":").first ?? "") != nil {
            let a = try SocketAddress(parsing: s)
            guard a.port != 0 else { throw ValueErrorMessage("upstream port must be 1 to 65535, got 0 in '\(s)'") }
            self.init(host: .address(a.ip), port: a.port)
            return
        }
        guard let colon = s.lastIndex(of: ":") else {
            throw ValueErrorMessage("expected 'HOST:PORT' (e.g. 192.0.2.10:53, [2001:db8::10]:53, dns.example:53), got '\(s)'")
        }
        let name = s[..<colon]
        let portText = s[s.index(after: colon)...]
        if name.contains(":") {
            throw ValueErrorMessage("IPv6 addresses need brackets: '[\(name)]:\(portText)'")
        }
        guard let port = UInt16(portText), port != 0 else {
            throw ValueErrorMessage("upstream port must be a number from 1 to 65535, got '\(portText)'")
        }
        guard UpstreamEndpoint.isHostname(name) else {
            throw ValueErrorMessage("'\(name)' is neither an IP address nor a valid hostname")
        }
        self.init(host: .name(name.lowercased()), port: port)
    }

    /// RFC 1123 names: labels of letters, digits and `-` (not at either end), 1 to 63 each,
    /// at most 253 characters in all.
    static func isHostname(_ name: Substring) -> Bool {
        guard !name.isEmpty, name.utf8.count <= 253 else { return false }
        let labels =
            name.hasSuffix(".")
            ? name.dropLast().split(separator: ".", omittingEmptySubsequences: false)
            : name.split(separator: ".", omittingEmptySubsequences: false)
        // A dotted all-numeric name (300.1.1.1) is a mistyped address, not a hostname.
        if let last = labels.last, last.allSatisfy(\.isNumber) { return false }
        return labels.allSatisfy { label in
            !label.isEmpty && label.utf8.count <= 63 && label.first != "-" && label.last != "-"
                && label.unicodeScalars.allSatisfy { $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || $0 == "-") }
        }
    }

    public var description: String {
        switch host {
        case .address(let ip): SocketAddress(ip: ip, port: port).description
        case .name(let n): "\(n):\(port)"
        }
    }
}

/// How `mode = balance` picks an upstream for a new session. A session keeps its upstream for
/// its lifetime whatever the algorithm.
public enum BalanceAlgorithm: String, CaseIterable, Sendable {
    /// Each new session takes the next upstream that is up.
    case roundRobin = "round-robin"
    /// A uniformly random upstream that is up.
    case random
    /// Rendezvous (highest-random-weight) hashing of the client's address and port: removing
    /// one of N upstreams moves only the clients that were on it.
    case hash
    /// Active/standby: the first upstream in file order that is up (primaries before backups).
    case first
}

/// `proxy_protocol`: whether datagrams to upstreams carry a PROXY protocol header (HAProxy's
/// specification; version 2, the binary one, is the only one defined for UDP).
public enum ProxyProtocolVersion: String, CaseIterable, Sendable {
    /// Plain datagrams, as the client sent them.
    case off
    /// Each datagram starts with a PROXY v2 header: command PROXY, INET or INET6 over DGRAM,
    /// the client's address and port, then the address and port it sent to.
    case v2
}

/// What `balance = hash` hashes to choose a client's upstream (`hash_key`). The session table is
/// keyed by address and port whatever this says; only the balancer's input changes.
public enum HashKey: String, CaseIterable, Sendable {
    /// The client's address only: a client whose NAT rebinds its port keeps its upstream, and
    /// every client behind one address shares one upstream.
    case address
    /// The client's address and port (the default, as before the key existed).
    case addressPort = "address_port"
}

/// Session limits of `forward` and `balance` listeners.
public struct SessionSettings: Sendable, Equatable {
    /// A session without traffic either way for this long is closed.
    public var timeout: Duration
    /// At most this many sessions per listener socket; a new client beyond it evicts the least
    /// recently used session.
    public var maxSessions: Int
    /// Close a session after this many replies (nil: no limit), as nginx `proxy_responses`.
    public var maxReplies: Int?
    /// `session_log`: one record per ended session (see `RelayWorker`).
    public var log: Bool
    /// `session_log_rate`: at most this many records a second per worker; the ones left out
    /// are counted in one line a second.
    public var logRate: Int

    public init(
        timeout: Duration = Defaults.sessionTimeout, maxSessions: Int = Defaults.maxSessions, maxReplies: Int? = nil,
        log: Bool = false, logRate: Int = Defaults.sessionLogRate
    ) {
        self.timeout = timeout
        self.maxSessions = maxSessions
        self.maxReplies = maxReplies
        self.log = log
        self.logRate = logRate
    }
}

/// Upstream health checks.
public struct HealthSettings: Sendable, Equatable {
    /// Passive: failures (refused, send errors) within `failTimeout` that mark an upstream down; 0 disables.
    public var maxFails: Int
    /// Passive: the window in which failures count, and how long an upstream then stays down.
    public var failTimeout: Duration
    /// Active: payload sent to each upstream every `interval`; nil disables probing.
    public var probe: [UInt8]?
    /// Active: a reply must start with these bytes (empty: any reply).
    public var expect: [UInt8]
    public var interval: Duration
    /// Active: unanswered probes in a row that mark an upstream down (at least 1).
    public var probeFails: Int

    public init(
        maxFails: Int = Defaults.maxFails, failTimeout: Duration = Defaults.failTimeout,
        probe: [UInt8]? = nil, expect: [UInt8] = [], interval: Duration = Defaults.healthInterval,
        probeFails: Int = Defaults.healthFails
    ) {
        self.probeFails = probeFails
        self.maxFails = maxFails
        self.failTimeout = failTimeout
        self.probe = probe
        self.expect = expect
        self.interval = interval
    }
}

/// `resolve`: which addresses of an upstream hostname become upstreams. Each session socket is
/// opened in its upstream's family, whatever the listener's, so `any` reaches both.
public enum ResolveFamily: String, CaseIterable, Sendable {
    /// A records only.
    case ipv4
    /// AAAA records only.
    case ipv6
    /// Both (the default).
    case any
}

extension Defaults {
    /// `any`: a session socket takes its upstream's family, so an IPv4 listener reaches an
    /// IPv6 upstream and the reverse; an operator who wants one family says so.
    public static let resolveFamily = ResolveFamily.any
}
