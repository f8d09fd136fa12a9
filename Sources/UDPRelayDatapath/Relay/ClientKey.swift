#if canImport(Glibc)
import Glibc
#endif

/// A client's address and port as a fixed-size value built from `sockaddr` bytes: the session
/// table key. Building, hashing and comparing it allocates nothing.
struct ClientKey: Hashable, Sendable {
    /// IPv4: the address in the low 32 bits. IPv6: the first 8 bytes.
    var high: UInt64
    /// IPv6: the last 8 bytes; 0 for IPv4.
    var low: UInt64
    /// family | port << 16 | IPv6 scope id << 32.
    var rest: UInt64

    init(high: UInt64, low: UInt64, rest: UInt64) {
        self.high = high
        self.low = low
        self.rest = rest
    }

    /// Reads an AF_INET or AF_INET6 `sockaddr`; nil for other families.
    @inline(__always)
    init?(sockaddr raw: UnsafeRawPointer) {
        let family = raw.load(as: sa_family_t.self)
        switch Int32(family) {
        case AF_INET:
            let sin = raw.load(as: sockaddr_in.self)
            self.init(high: UInt64(sin.sin_addr.s_addr), low: 0,
                      rest: UInt64(family) | UInt64(sin.sin_port) << 16)
        case AF_INET6:
            let sin6 = raw.load(as: sockaddr_in6.self)
            let (h, l) = withUnsafeBytes(of: sin6.sin6_addr) { ($0.load(as: UInt64.self), $0.load(fromByteOffset: 8, as: UInt64.self)) }
            self.init(high: h, low: l, rest: UInt64(family) | UInt64(sin6.sin6_port) << 16 | UInt64(sin6.sin6_scope_id) << 32)
        default:
            return nil
        }
    }

    /// A hash that is the same in every process and on every run (unlike `Hasher`), so `hash`
    /// balancing sends a client to the same upstream after a restart.
    var stableHash: UInt64 {
        Mix.hash(Mix.hash(high ^ Mix.hash(low)) ^ rest)
    }
}

/// Deterministic 64-bit mixing (splitmix64 finaliser) and FNV-1a for strings.
enum Mix {
    @inline(__always)
    static func hash(_ x: UInt64) -> UInt64 {
        var z = x &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    static func fnv1a(_ s: String) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in s.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        return h
    }
}

/// Monotonic time in nanoseconds (CLOCK_MONOTONIC): the datapath's clock.
@inline(__always)
func monotonicNanos() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
}

extension Duration {
    /// Whole nanoseconds, saturating.
    var nanoseconds: UInt64 {
        let (s, a) = components
        guard s >= 0 else { return 0 }
        let (v, o) = UInt64(s).multipliedReportingOverflow(by: 1_000_000_000)
        return o ? .max : v &+ UInt64(a / 1_000_000_000)
    }
}
