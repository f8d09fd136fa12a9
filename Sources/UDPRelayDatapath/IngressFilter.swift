#if canImport(Glibc)
import Glibc
#endif
import UDPRelayConfig

/// Decides, per received datagram, whether a listener serves it, in this order: the source
/// port is a known reflector (`deny_source_ports`), the source is one of this daemon's own
/// listener addresses (`loop_guard`), the access list denies it, its source or the listener
/// as a whole is over its rate. Returns the drop counter, or nil to serve it.
///
/// Not thread-safe: one per worker, used only on the worker's queue. Allocates nothing per datagram.
final class IngressFilter {
    private let denyPorts: PortSet
    private let access: AccessList
    private let loopGuard: Bool
    /// Ports of our own listeners (a fast pre-check) and the exact addresses.
    private var ownPorts = PortSet()
    private var ownAddresses: Set<SocketAddress> = []
    private let perSource: SourceRateLimiter?
    private var total: TokenBucket?
    /// Whether `check` needs the time.
    let needsClock: Bool

    init(_ p: ProtectionConfiguration, now: UInt64 = IngressFilter.monotonicNow()) {
        denyPorts = p.denySourcePorts
        access = AccessList(allow: p.allow, deny: p.deny)
        loopGuard = p.loopGuard
        perSource = p.rateLimit.map { SourceRateLimiter(rate: $0, burst: p.rateBurst, capacity: p.rateLimitSources) }
        total = p.rateLimitTotal.map { TokenBucket(rate: $0.perSecond, burst: max(1, $0.perSecond.rounded(.up)), now: now) }
        needsClock = perSource != nil || total != nil
    }

    /// Sets the daemon's own listener addresses (wildcards expanded to local addresses).
    func setOwnAddresses(_ addresses: Set<SocketAddress>) {
        ownAddresses = addresses
        ownPorts = PortSet(addresses.map(\.port))
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

    @inline(__always)
    func check(_ source: SocketAddress, now: UInt64) -> Counter? {
        if denyPorts.contains(source.port) { return .dropSourcePort }
        if loopGuard, ownPorts.contains(source.port), ownAddresses.contains(source) { return .dropLoop }
        if !access.isOpen, !access.permits(source.ip) { return .dropDenied }
        if let perSource, !perSource.admit(source.ip, now: now) { return .dropRateLimited }
        if total != nil, !total!.take(now: now) { return .dropRateLimitedTotal }
        return nil
    }

    /// Monotonic time in nanoseconds (coarse clock: a few ms resolution is plenty for rates).
    @inline(__always)
    static func monotonicNow() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC_COARSE, &ts)
        return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
    }
}

/// This host's addresses, to expand wildcard listeners for the loop guard.
enum LocalAddresses {
    static func all() -> [IPAddress] {
        var head: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&head) == 0, let first = head else { return [] }
        defer { freeifaddrs(head) }
        var out: [IPAddress] = []
        var cursor: UnsafeMutablePointer<ifaddrs>? = first
        while let entry = cursor {
            if let sa = entry.pointee.ifa_addr, let a = SocketAddress(sockaddr: UnsafeRawPointer(sa)) {
                out.append(a.ip)
            }
            cursor = entry.pointee.ifa_next
        }
        return out
    }

    /// Bound addresses with wildcards replaced by every local address of the family.
    static func expand(_ bound: [SocketAddress]) -> Set<SocketAddress> {
        let local = all()
        var out = Set<SocketAddress>()
        for b in bound {
            if b.ip.isWildcard {
                for ip in local where ip.isIPv6 == b.ip.isIPv6 { out.insert(SocketAddress(ip: ip, port: b.port)) }
            } else {
                out.insert(b)
            }
        }
        return out
    }
}
