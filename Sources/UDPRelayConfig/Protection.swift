/// A set of UDP ports as a 65536-bit map: membership is one load and a mask.
public struct PortSet: Sendable, Equatable, CustomStringConvertible {
    public private(set) var words = [UInt64](repeating: 0, count: 1024)

    public init() {}

    public init(_ ports: some Sequence<UInt16>) {
        for p in ports { insert(p) }
    }

    public mutating func insert(_ port: UInt16) {
        words[Int(port >> 6)] |= 1 << UInt64(port & 63)
    }

    @inline(__always)
    public func contains(_ port: UInt16) -> Bool {
        words.withUnsafeBufferPointer { $0[Int(port >> 6)] & (1 << UInt64(port & 63)) != 0 }
    }

    public var isEmpty: Bool { !words.contains { $0 != 0 } }

    public var ports: [UInt16] { (0...65535).map(UInt16.init).filter(contains) }

    /// `0, 7, 13, 1000-1010` (ranges collapsed), or `none`.
    public var description: String {
        var parts: [String] = []
        var start: Int? = nil
        for p in 0...65536 {
            let inSet = p <= 65535 && contains(UInt16(p))
            if inSet, start == nil { start = p }
            if !inSet, let s = start {
                parts.append(s == p - 1 ? "\(s)" : "\(s)-\(p - 1)")
                start = nil
            }
        }
        return parts.isEmpty ? "none" : parts.joined(separator: ", ")
    }
}

/// A rate in events per second, written `1000/s`, `60/m` or `3600/h`.
public struct Rate: Sendable, Equatable, CustomStringConvertible {
    public var perSecond: Double

    public init(perSecond: Double) {
        self.perSecond = perSecond
    }

    public var description: String { "\(perSecond)/s" }
}

/// Abuse protection of one listener: who may send, which sources are refused as loop or
/// reflection risks, and how fast each source may send.
public struct ProtectionConfiguration: Sendable, Equatable {
    /// Networks explicitly allowed. When non-empty, a source that matches no rule is denied.
    public var allow: [CIDR]
    /// Networks denied. The longest matching prefix over `allow` and `deny` decides; on a tie, deny wins.
    public var deny: [CIDR]
    /// Datagrams from these source ports are dropped (reflection and loop vectors); nil for
    /// the default of the listener's mode (`denySourcePorts(for:)`).
    public var denySourcePorts: PortSet?
    /// Drop datagrams whose source is one of this daemon's own listener addresses.
    public var loopGuard: Bool
    /// Per source address token bucket; nil for unlimited.
    public var rateLimit: Rate?
    /// Bucket size in datagrams (a source may send this many at once after being idle).
    public var rateBurst: Int
    /// Token bucket over all sources of the listener; nil for unlimited.
    public var rateLimitTotal: Rate?
    /// Most source addresses tracked by the per-source limiter; the least recently seen is
    /// forgotten when full (counted).
    public var rateLimitSources: Int
    /// `accept_proxy_protocol = v2`: datagrams from `proxyProtocolFrom` start with a PROXY v2
    /// header, whose source is then the client for everything else; `.off` by default.
    public var acceptProxyProtocol: ProxyProtocolVersion
    /// The sources whose datagrams must carry that header (`proxy_protocol_from`); others are
    /// served as they come.
    public var proxyProtocolFrom: [CIDR]

    public init(
        allow: [CIDR] = [], deny: [CIDR] = [], denySourcePorts: PortSet? = nil,
        loopGuard: Bool = true, rateLimit: Rate? = nil, rateBurst: Int? = nil, rateLimitTotal: Rate? = nil,
        rateLimitSources: Int = Defaults.rateLimitSources,
        acceptProxyProtocol: ProxyProtocolVersion = .off, proxyProtocolFrom: [CIDR] = []
    ) {
        self.allow = allow
        self.deny = deny
        self.denySourcePorts = denySourcePorts
        self.loopGuard = loopGuard
        self.rateLimit = rateLimit
        self.rateBurst = rateBurst ?? Defaults.rateBurst(for: rateLimit)
        self.rateLimitTotal = rateLimitTotal
        self.rateLimitSources = rateLimitSources
        self.acceptProxyProtocol = acceptProxyProtocol
        self.proxyProtocolFrom = proxyProtocolFrom
    }

    /// The source ports refused on a listener of `mode`: `deny_source_ports` if set, else the
    /// mode's default (`Defaults.denySourcePorts(for:)`).
    public func denySourcePorts(for mode: ListenerMode) -> PortSet {
        denySourcePorts ?? Defaults.denySourcePorts(for: mode)
    }
}

extension Defaults {
    /// Source ports of well-known reflecting services (echo, daytime, qotd, chargen, time, DNS,
    /// TFTP, portmap, NTP, NetBIOS, SNMP, CLDAP, SSDP, mDNS, memcached) and port 0: a datagram
    /// from one of them is a reflection or a loop (CVE-1999-0103, CVE-2024-2169), never a client.
    ///
    /// This is echo's default: echo answers whatever arrives, so a datagram from one of these
    /// ports (spoofed by an attacker) would be answered into a reflector or into another
    /// service that answers back.
    public static let denySourcePorts = PortSet([0, 7, 13, 17, 19, 37, 53, 69, 111, 123, 137, 161, 389, 1900, 5353, 11211])
    /// Relay modes' default: only port 0 and the services that answer any datagram (echo,
    /// daytime, qotd, chargen, time). A relay sends a client's datagram to its own upstream, not
    /// back to the source; the source port matters only when the upstream answers like one of
    /// these services and the answer, sent back to the source, is answered again: a loop. NTP
    /// (123) and DNS (53) clients and servers really do send from those ports (ntpd, chronyd
    /// `acquisitionport 123`, a DNS server forwarding from port 53), and NTP and DNS servers do
    /// not answer answers, so they pass. The risk taken: datagrams that reflectors send from
    /// other ports reach the upstream at the rate they arrive (bound it with `rate_limit`,
    /// `allow`), never back to the sender amplified.
    public static let relayDenySourcePorts = PortSet([0, 7, 13, 17, 19, 37])

    /// The default `deny_source_ports` of a listener of `mode`.
    public static func denySourcePorts(for mode: ListenerMode) -> PortSet {
        mode == .echo ? denySourcePorts : relayDenySourcePorts
    }
    public static let rateLimitSources = 65536
    /// Upstreams one listener may name (each costs a health record and, in mirror mode, a socket).
    public static let maxUpstreams = 64
    /// One second's worth of the rate, at least 1.
    public static func rateBurst(for rate: Rate?) -> Int {
        guard let rate else { return 0 }
        return max(1, Int(rate.perSecond.rounded(.up)))
    }
}

extension Values {
    /// `7, 19, 1000-1010` or `none`.
    static func portSet(_ s: String) throws(ValueError) -> PortSet {
        if s.lowercased() == "none" { return PortSet() }
        var set = PortSet()
        for item in try list(s) {
            let bounds = item.split(separator: "-", omittingEmptySubsequences: false).map { $0.trimmingSpaces() }
            guard (1...2).contains(bounds.count),
                let lo = UInt16(bounds[0]), let hi = UInt16(bounds.last!), lo <= hi
            else { throw ValueError("expected ports or ranges from 0 to 65535 (e.g. 7, 19, 1000-1010) or 'none', got '\(item)'") }
            for p in lo...hi { set.insert(p) }
        }
        return set
    }

    /// `1000/s`, `60/m`, `3600/h`.
    static func rate(_ s: String) throws(ValueError) -> Rate {
        let expected = "expected a rate such as 1000/s, 60/m or 3600/h, got '\(s)'"
        let parts = s.split(separator: "/")
        guard parts.count == 2, let n = Double(parts[0].trimmingSpaces()), n > 0, n.isFinite else { throw ValueError(expected) }
        switch parts[1].trimmingSpaces() {
        case "s": return Rate(perSecond: n)
        case "m": return Rate(perSecond: n / 60)
        case "h": return Rate(perSecond: n / 3600)
        default: throw ValueError(expected)
        }
    }
}
