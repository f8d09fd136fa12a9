import UDPRelayConfig

#if canImport(Glibc)
import Glibc
#endif

/// The one reader of kernel socket addresses (`sockaddr_in`, `sockaddr_in6`): each field at its
/// Linux offset, loaded unaligned from raw bytes and returned as stored (network byte order), so
/// no memory is bound to a C type and a name the kernel wrote (every received datagram's) is
/// read without copying the whole structure. `SocketAddress(sockaddr:)` builds on it, and so
/// can any other view of a peer (a session key). Allocates nothing.
enum RawSockaddr {
    /// Byte offsets (checked against `MemoryLayout` by `SocketAddressStorageTests`). The family
    /// and the port have the same offsets in both structures.
    static var familyOffset: Int { 0 }
    static var portOffset: Int { 2 }
    static var ipv4Offset: Int { 4 }
    static var ipv6Offset: Int { 8 }
    static var scopeOffset: Int { 24 }

    @inline(__always)
    static func family(_ raw: UnsafeRawPointer) -> Int32 {
        Int32(raw.loadUnaligned(fromByteOffset: familyOffset, as: sa_family_t.self))
    }

    /// The port in network byte order.
    @inline(__always)
    static func port(_ raw: UnsafeRawPointer) -> UInt16 {
        raw.loadUnaligned(fromByteOffset: portOffset, as: UInt16.self)
    }

    /// AF_INET: the address in network byte order.
    @inline(__always)
    static func ipv4(_ raw: UnsafeRawPointer) -> UInt32 {
        raw.loadUnaligned(fromByteOffset: ipv4Offset, as: UInt32.self)
    }

    /// The IPv4 address (network byte order) of an AF_INET address, or of an AF_INET6 one holding
    /// an IPv4-mapped address (`::ffff:a.b.c.d`: ten zero bytes, two 0xff, the IPv4 address);
    /// nil for any other.
    @inline(__always)
    static func ipv4OrMapped(_ raw: UnsafeRawPointer) -> UInt32? {
        switch family(raw) {
        case AF_INET:
            return ipv4(raw)
        case AF_INET6:
            let high = raw.loadUnaligned(fromByteOffset: ipv6Offset, as: UInt64.self)
            let middle = raw.loadUnaligned(fromByteOffset: ipv6Offset + 8, as: UInt32.self)
            guard high == 0, middle == UInt32(0x0000_FFFF).bigEndian else { return nil }
            return raw.loadUnaligned(fromByteOffset: ipv6Offset + 12, as: UInt32.self)
        default:
            return nil
        }
    }

    /// The length of the address at `raw`: a `sockaddr_in` for AF_INET, else a `sockaddr_in6`.
    @inline(__always)
    static func length(_ raw: UnsafeRawPointer) -> socklen_t {
        socklen_t(family(raw) == AF_INET ? MemoryLayout<sockaddr_in>.size : MemoryLayout<sockaddr_in6>.size)
    }

    /// AF_INET6: the sixteen address bytes as two native loads (network byte order in memory).
    @inline(__always)
    static func ipv6(_ raw: UnsafeRawPointer) -> (high: UInt64, low: UInt64) {
        (
            raw.loadUnaligned(fromByteOffset: ipv6Offset, as: UInt64.self),
            raw.loadUnaligned(fromByteOffset: ipv6Offset + 8, as: UInt64.self)
        )
    }

    /// AF_INET6: the scope id (interface index of a link-local address).
    @inline(__always)
    static func scope(_ raw: UnsafeRawPointer) -> UInt32 {
        raw.loadUnaligned(fromByteOffset: scopeOffset, as: UInt32.self)
    }

    /// Runs `body` with `address` (a `sockaddr_in`, `sockaddr_in6` or `sockaddr_storage`) as the
    /// `sockaddr` pointer C calls take. Copies nothing to the heap.
    @inline(__always)
    static func withSockaddr<Address, T, E: Error>(
        of address: Address,
        _ body: (UnsafePointer<sockaddr>) throws(E) -> T
    ) throws(E) -> T {
        try withUnsafePointer(to: address) { (p) throws(E) -> T in
            try p.withMemoryRebound(to: sockaddr.self, capacity: 1) { (sa) throws(E) -> T in try body(sa) }
        }
    }
}

extension SocketAddress {
    /// Reads an AF_INET or AF_INET6 socket address; nil for other families. `raw` needs no
    /// particular alignment.
    @inline(__always)
    public init?(sockaddr raw: UnsafeRawPointer) {
        let port = UInt16(bigEndian: RawSockaddr.port(raw))
        switch RawSockaddr.family(raw) {
        case AF_INET:
            self.init(ip: .v4(UInt32(bigEndian: RawSockaddr.ipv4(raw))), port: port)
        case AF_INET6:
            let (high, low) = RawSockaddr.ipv6(raw)
            self.init(ip: .v6(high: UInt64(bigEndian: high), low: UInt64(bigEndian: low)), port: port)
        default:
            return nil
        }
    }

    public init?(storage: sockaddr_storage) {
        var copy = storage
        guard let v = withUnsafeBytes(of: &copy, { SocketAddress(sockaddr: $0.baseAddress!) }) else { return nil }
        self = v
    }

    /// The address as a `sockaddr_storage` and its length, for bind/sendmsg/connect.
    public func storage() -> (sockaddr_storage, socklen_t) {
        var storage = sockaddr_storage()
        let length = withUnsafeMutableBytes(of: &storage) { raw -> Int in
            raw.storeBytes(of: port.bigEndian, toByteOffset: RawSockaddr.portOffset, as: UInt16.self)
            switch ip {
            case .v4(let a):
                raw.storeBytes(of: sa_family_t(AF_INET), toByteOffset: RawSockaddr.familyOffset, as: sa_family_t.self)
                raw.storeBytes(of: a.bigEndian, toByteOffset: RawSockaddr.ipv4Offset, as: UInt32.self)
                return MemoryLayout<sockaddr_in>.size
            case .v6(let high, let low):
                raw.storeBytes(of: sa_family_t(AF_INET6), toByteOffset: RawSockaddr.familyOffset, as: sa_family_t.self)
                raw.storeBytes(of: high.bigEndian, toByteOffset: RawSockaddr.ipv6Offset, as: UInt64.self)
                raw.storeBytes(of: low.bigEndian, toByteOffset: RawSockaddr.ipv6Offset + 8, as: UInt64.self)
                return MemoryLayout<sockaddr_in6>.size
            }
        }
        return (storage, socklen_t(length))
    }

    /// Runs `body` with the address as a `sockaddr` pointer and its length (bind, connect).
    func withSockaddr<T, E: Error>(_ body: (UnsafePointer<sockaddr>, socklen_t) throws(E) -> T) throws(E) -> T {
        let (storage, length) = storage()
        return try RawSockaddr.withSockaddr(of: storage) { (sa) throws(E) -> T in try body(sa, length) }
    }

    /// Runs `body` with room for a socket address the kernel fills (getsockname), then reads it.
    static func filledIn<E: Error>(
        by body: (UnsafeMutablePointer<sockaddr>, UnsafeMutablePointer<socklen_t>) throws(E) -> Void
    ) throws(E) -> SocketAddress? {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        try withUnsafeMutablePointer(to: &storage) { (p) throws(E) in
            try p.withMemoryRebound(to: sockaddr.self, capacity: 1) { (sa) throws(E) in try body(sa, &length) }
        }
        return SocketAddress(storage: storage)
    }

    var family: Int32 { ip.isIPv6 ? AF_INET6 : AF_INET }
}
