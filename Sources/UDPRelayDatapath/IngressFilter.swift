import UDPRelayConfig

#if canImport(Glibc)
import Glibc
#endif

/// Decides, per received datagram, whether a listener serves it, in this order: the source
/// port is a known reflector (`deny_source_ports`), the source is this daemon (`loop_guard`),
/// the loop breaker caps it, the access list denies it, its source or the listener as a whole
/// is over its rate. Returns the drop counter, or nil to serve it.
///
/// Every check sees the source with an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, what a
/// dual-stack socket reports for IPv4 senders) turned into the IPv4 address, so IPv4 rules,
/// rate-limit keys and the loop guard apply to it.
///
/// Not thread-safe: one per worker, used only on the worker's queue. Allocates nothing per datagram.
final class IngressFilter {
    private let denyPorts: PortSet
    private let access: AccessList
    private let loopGuard: Bool
    /// Echo answers every datagram, so it needs the strictest loop rules; relays are judged by
    /// where they send (`isOwnRelayListener`).
    private let echo: Bool
    private var loop = LoopContext()
    /// Echo only, the loop breaker (`LoopBreaker`): per local flow (source address and port),
    /// fingerprints of recent payloads and a token bucket. Datagrams from a local server port
    /// (outside the ephemeral range), and repeats (a payload the flow brought just before, see
    /// `RecentFingerprints`) from any local port, are capped per flow; another echo server on this host
    /// answering us (a loop one spoofed datagram starts) exceeds the cap within
    /// `LoopBreaker.burst` round trips, and the first drop ends the loop.
    private let loopFlows: KeyedRateLimiter<SocketAddress>?
    private let perSource: SourceRateLimiter?
    private var total: TokenBucket?
    /// Whether `check` needs the time.
    let needsClock: Bool
    /// `accept_proxy_protocol = v2`: the sources (`proxy_protocol_from`) whose datagrams start
    /// with a PROXY v2 header; nil when off.
    private let proxies: AccessList?

    init(_ p: ProtectionConfiguration, mode: ListenerMode = .echo, now: UInt64 = SystemClock.coarseMonotonicNanos()) {
        denyPorts = p.denySourcePorts(for: mode)
        access = AccessList(allow: p.allow, deny: p.deny)
        loopGuard = p.loopGuard
        echo = mode == .echo
        loopFlows =
            mode == .echo
            ? KeyedRateLimiter(rate: LoopBreaker.rate, burst: LoopBreaker.burst, capacity: LoopBreaker.flows, now: now) : nil
        perSource = p.rateLimit.map { SourceRateLimiter(rate: $0, burst: p.rateBurst, capacity: p.rateLimitSources, now: now) }
        total = p.rateLimitTotal.map { TokenBucket(rate: $0.perSecond, burst: max(1, $0.perSecond.rounded(.up)), now: now) }
        needsClock = perSource != nil || total != nil
        proxies = p.acceptProxyProtocol == .v2 ? AccessList(allow: p.proxyProtocolFrom, deny: []) : nil
    }

    /// Whether datagrams may come with a PROXY v2 header at all (`accept_proxy_protocol`).
    var acceptsProxyHeaders: Bool { proxies != nil }

    /// Whether a datagram from `raw` (the datagram's real source) must start with a PROXY v2
    /// header: its source is in `proxy_protocol_from`.
    @inline(__always)
    func isTrustedProxy(_ raw: SocketAddress) -> Bool {
        guard let proxies else { return false }
        return proxies.permits(raw.unmapped.ip)
    }

    /// Sets what the loop guard knows about this daemon's listeners and this host.
    func setLoopContext(_ context: LoopContext) {
        loop = context
    }

    /// Whether `address` is a relay listener of this daemon: a relay must never send there.
    @inline(__always)
    func isOwnRelayListener(_ address: SocketAddress) -> Bool {
        loop.isOwnRelayListener(address.unmapped)
    }

    private var reportedEvictions: UInt64 = 0

    /// Source-table evictions of the per-source limiter since the last call.
    @inline(__always)
    func newEvictions() -> UInt64 {
        guard let perSource else { return 0 }
        let delta = perSource.evictions &- reportedEvictions
        reportedEvictions = perSource.evictions
        return delta
    }

    /// The drop counter for a datagram from `raw`, or nil to serve it. `now` is the monotonic
    /// time when `needsClock` (else anything: the loop breaker reads the clock itself, for local
    /// sources only). Without the payload, the loop breaker caps local server ports only.
    @inline(__always)
    func check(_ raw: SocketAddress, now: UInt64) -> Counter? {
        check(raw, payload: nil, now: now)
    }

    /// The same, with the datagram's payload: an echo listener's loop breaker also caps a local
    /// flow that repeats a recent payload, whatever its port (see `LoopBreaker`).
    @inline(__always)
    func check(_ raw: SocketAddress, payload: UnsafeRawBufferPointer?, now: UInt64) -> Counter? {
        let source = raw.unmapped
        if denyPorts.contains(source.port) { return .dropSourcePort }
        if loopGuard, echo ? loop.isOwnPortOnThisHost(source) : loop.isOwnListener(source) { return .dropLoop }
        if let loopFlows, loop.isLocal(source.ip), !breakerAdmits(loopFlows, source, payload: payload, now: now) {
            return .dropLoop
        }
        if !access.isOpen, !access.permits(source.ip) { return .dropDenied }
        if let perSource, !perSource.admit(source.ip, now: now) { return .dropRateLimited }
        if total != nil, !total!.take(now: now) { return .dropRateLimitedTotal }
        return nil
    }

    /// The loop breaker's verdict on a datagram from `source`, a local address (unmapped).
    @inline(__always)
    private func breakerAdmits(
        _ flows: KeyedRateLimiter<SocketAddress>, _ source: SocketAddress,
        payload: UnsafeRawBufferPointer?, now: UInt64
    ) -> Bool {
        let server = !loop.ephemeral.contains(source.port)
        let clock = needsClock ? now : SystemClock.coarseMonotonicNanos()
        guard let payload else { return !server || flows.admit(source, now: clock) }
        return flows.admit(source, fingerprint: LoopBreaker.fingerprint(payload), always: server, now: clock).admitted
    }
}

/// The echo loop breaker. It holds whatever the configuration says (it is not switched off by
/// `loop_guard = no`), and tells a loop between two echo servers on this host by two signs:
///
/// - the source is a local server port (a local address, a port outside the kernel's ephemeral
///   range): every datagram of such a flow is capped;
/// - the flow repeats itself: echo returns the payload unchanged, so in a ping-pong between two
///   echo servers every datagram a flow brings is the one it brought before (or, with several
///   datagrams looping at once, one it brought a few datagrams before). A datagram from a
///   local address (any port) whose payload has the fingerprint of the flow's previous one, or
///   of its anchor (`RecentFingerprints`: one datagram in 64), is capped; others are not, so a
///   local client whose payloads change is never capped, at any rate (a benchmark's load
///   client numbers its datagrams), while one that sends the same bytes over and over from one
///   socket faster than `rate` is treated like an echo server.
///
/// The cap is `rate` per flow (source address and port) after `burst`, in a table of `flows`
/// per worker. A loop faster than `rate` drains the burst within about `burst` round trips and
/// the first drop ends it (a single spoofed datagram is the whole loop). A loop slower than
/// `rate` is only held to it, never ended: neither a lower cap nor dropping a flow for a while
/// after it repeated would end it (a loop slower than any cap stays under it, and a flow
/// repeating slowly is also a client's keep-alive or retry), while a lower cap would throttle
/// such clients sooner; a loop held under `rate` per flow costs a small, bounded share of a core.
/// Not told apart: more than 64 datagrams with different payloads spoofed into one pair of
/// client ports (their cycle is longer than the anchor's interval).
enum LoopBreaker {
    static let rate = Rate(perSecond: 100)
    static let burst = 32
    /// Flows tracked per worker (a full table shares one bucket, see `KeyedRateLimiter`).
    static let flows = 256
    /// Bytes of the payload's head that go into its fingerprint (and its last 8 bytes, and its
    /// length): enough for any header, sequence number or nonce a client varies.
    static let fingerprintHead = 64

    /// A cheap, allocation-free fingerprint of `payload` (never 0): its length, its first
    /// `fingerprintHead` bytes and its last 8, 8 bytes at a time through a multiply-xorshift mix.
    @inline(__always)
    static func fingerprint(_ payload: UnsafeRawBufferPointer) -> UInt64 {
        let count = payload.count
        var h = 0x9E37_79B9_7F4A_7C15 ^ UInt64(truncatingIfNeeded: count)
        guard let base = payload.baseAddress, count > 0 else { return mix(h) | 1 }
        let head = min(count, fingerprintHead)
        var i = 0
        while i + 8 <= head {
            h = mix(h ^ base.loadUnaligned(fromByteOffset: i, as: UInt64.self))
            i += 8
        }
        if i < head {
            var tail: UInt64 = 0
            for j in i..<head {
                tail |= UInt64(base.load(fromByteOffset: j, as: UInt8.self)) << UInt64(8 * (j - i))
            }
            h = mix(h ^ tail)
        }
        if count > fingerprintHead {
            h = mix(h ^ base.loadUnaligned(fromByteOffset: count - 8, as: UInt64.self))
        }
        let f = mix(h)
        return f == 0 ? 1 : f
    }

    /// splitmix64's finaliser.
    @inline(__always)
    private static func mix(_ x: UInt64) -> UInt64 {
        var z = x &* 0xBF58_476D_1CE4_E5B9
        z ^= z >> 31
        z = z &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 29)
    }
}

/// What the loop guard knows about this daemon's listeners and this host: one value for every
/// worker, rebuilt when the daemon starts and at each reload.
struct LoopContext: Sendable {
    /// Every port a listener of this daemon is bound to, on any address.
    var listenerPorts = PortSet()
    /// Ports of listeners bound to a wildcard address: that port on any local address is us.
    var wildcardPorts = PortSet()
    /// Listeners bound to one address.
    var exact: Set<SocketAddress> = []
    /// The same for relay listeners only.
    var relayWildcardPorts = PortSet()
    var relayExact: Set<SocketAddress> = []
    /// This host's interface addresses, besides the loopback ranges (which are always local).
    var interfaces: [IPAddress] = []
    /// The kernel's ephemeral port range (`net.ipv4.ip_local_port_range`): clients' ports.
    var ephemeral: ClosedRange<UInt16> = 32768...60999

    init() {}

    /// `listeners`: each bound address and whether its listener relays.
    init(listeners: [(address: SocketAddress, relay: Bool)], interfaces: [IPAddress], ephemeral: ClosedRange<UInt16>) {
        for (raw, relay) in listeners {
            let a = raw.unmapped
            listenerPorts.insert(a.port)
            if a.ip.isWildcard {
                wildcardPorts.insert(a.port)
                if relay { relayWildcardPorts.insert(a.port) }
            } else {
                exact.insert(a)
                if relay { relayExact.insert(a) }
            }
        }
        self.interfaces = interfaces.map(\.unmapped)
        self.ephemeral = ephemeral
    }

    /// Loopback (all of 127.0.0.0/8, ::1), the unspecified address, or an interface address.
    /// `ip` must be unmapped.
    @inline(__always)
    func isLocal(_ ip: IPAddress) -> Bool {
        switch ip {
        case .v4(let a): if a >> 24 == 127 || a == 0 { return true }
        case .v6(let h, let l): if h == 0 && l <= 1 { return true }
        }
        for i in interfaces where i == ip { return true }
        return false
    }

    /// Whether `a` (unmapped) is the address of one of this daemon's listeners.
    @inline(__always)
    func isOwnListener(_ a: SocketAddress) -> Bool {
        guard listenerPorts.contains(a.port) else { return false }
        return (wildcardPorts.contains(a.port) && isLocal(a.ip)) || exact.contains(a)
    }

    /// Whether `a` (unmapped) is a local address with the port of one of this daemon's
    /// listeners, bound to that address or not: also another daemon on the same port of
    /// another local address (two echo servers on one port answer each other forever).
    @inline(__always)
    func isOwnPortOnThisHost(_ a: SocketAddress) -> Bool {
        listenerPorts.contains(a.port) && isLocal(a.ip)
    }

    /// Whether `a` (unmapped) is the address of one of this daemon's relay listeners.
    func isOwnRelayListener(_ a: SocketAddress) -> Bool {
        (relayWildcardPorts.contains(a.port) && isLocal(a.ip)) || relayExact.contains(a)
    }
}

extension IPAddress {
    /// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) as the IPv4 address; others unchanged.
    @inline(__always)
    var unmapped: IPAddress {
        if case .v6(high: 0, low: let low) = self, low >> 32 == 0xFFFF { return .v4(UInt32(truncatingIfNeeded: low)) }
        return self
    }
}

extension SocketAddress {
    /// The address with an IPv4-mapped IPv6 address turned into the IPv4 address.
    @inline(__always)
    var unmapped: SocketAddress {
        if case .v6(high: 0, low: let low) = ip, low >> 32 == 0xFFFF {
            return SocketAddress(ip: .v4(UInt32(truncatingIfNeeded: low)), port: port)
        }
        return self
    }
}

/// This host's addresses and ports, for the loop guard.
enum LocalAddresses {
    /// Every address of every interface (getifaddrs), IPv4-mapped ones unmapped.
    static func interfaces() -> [IPAddress] {
        var head: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&head) == 0, let first = head else { return [] }
        defer { freeifaddrs(head) }
        var out: [IPAddress] = []
        var cursor: UnsafeMutablePointer<ifaddrs>? = first
        while let entry = cursor {
            if let sa = entry.pointee.ifa_addr, let a = SocketAddress(sockaddr: UnsafeRawPointer(sa)), !out.contains(a.ip.unmapped) {
                out.append(a.ip.unmapped)
            }
            cursor = entry.pointee.ifa_next
        }
        return out
    }

    /// `net.ipv4.ip_local_port_range` (which applies to IPv6 too), or Linux's default.
    static func ephemeralPorts() -> ClosedRange<UInt16> {
        let fallback: ClosedRange<UInt16> = 32768...60999
        guard let f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r") else { return fallback }
        defer { fclose(f) }
        var buffer = [CChar](repeating: 0, count: 64)
        guard fgets(&buffer, Int32(buffer.count), f) != nil else { return fallback }
        let text = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let parts = text.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" }).compactMap { UInt16($0) }
        guard parts.count == 2, parts[0] <= parts[1] else { return fallback }
        return parts[0]...parts[1]
    }

    /// The loop guard's view of `listeners` on this host now.
    static func context(_ listeners: [Listener]) -> LoopContext {
        LoopContext(
            listeners: listeners.flatMap { l in l.boundAddresses.map { ($0, l.configuration.mode.isRelay) } },
            interfaces: interfaces(), ephemeral: ephemeralPorts())
    }
}
