import UDPRelayConfig

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

    /// Reads an AF_INET or AF_INET6 `sockaddr` through `RawSockaddr` (each field as stored,
    /// at any alignment); nil for other families.
    @inline(__always)
    init?(sockaddr raw: UnsafeRawPointer) {
        let port = UInt64(RawSockaddr.port(raw)) << 16
        switch RawSockaddr.family(raw) {
        case AF_INET:
            self.init(high: UInt64(RawSockaddr.ipv4(raw)), low: 0, rest: UInt64(AF_INET) | port)
        case AF_INET6:
            let (high, low) = RawSockaddr.ipv6(raw)
            self.init(high: high, low: low, rest: UInt64(AF_INET6) | port | UInt64(RawSockaddr.scope(raw)) << 32)
        default:
            return nil
        }
    }

    /// A hash that is the same in every process and on every run (unlike `Hasher`), so `hash`
    /// balancing sends a client to the same upstream after a restart.
    var stableHash: UInt64 {
        Mix.hash(Mix.hash(high ^ Mix.hash(low)) ^ rest)
    }

    /// As `stableHash`, of the address alone (family and IPv6 scope kept, port left out):
    /// `hash_key = address`, for clients whose NAT may rebind their port.
    var stableAddressHash: UInt64 {
        Mix.hash(Mix.hash(high ^ Mix.hash(low)) ^ (rest & ~0xFFFF_0000))
    }

    /// The balancer's input for `hash_key`.
    @inline(__always)
    func stableHash(_ key: HashKey) -> UInt64 {
        key == .address ? stableAddressHash : stableHash
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
