#if canImport(Glibc)
import Glibc
#endif
import UDPRelayConfig

/// The one place that reads and writes kernel socket addresses (`sockaddr_in`,
/// `sockaddr_in6`): field by field at their Linux offsets, with unaligned loads and stores on
/// raw bytes, so no memory is bound to a C type and a name the kernel wrote (every received
/// datagram's) is read without copying the whole structure. Allocates nothing.
extension SocketAddress {
    /// Byte offsets in `sockaddr_in`/`sockaddr_in6` (Linux; checked against `MemoryLayout` by
    /// `SocketAddressStorageTests`). The family and the port have the same offsets in both.
    enum Offset {
        static var family: Int { 0 }
        static var port: Int { 2 }
        static var ipv4Address: Int { 4 }
        static var ipv6Address: Int { 8 }
    }

    /// Reads an AF_INET or AF_INET6 socket address; nil for other families. `raw` needs no
    /// particular alignment.
    @inline(__always)
    public init?(sockaddr raw: UnsafeRawPointer) {
        let port = UInt16(bigEndian: raw.loadUnaligned(fromByteOffset: Offset.port, as: UInt16.self))
        switch Int32(raw.loadUnaligned(fromByteOffset: Offset.family, as: sa_family_t.self)) {
        case AF_INET:
            let a = raw.loadUnaligned(fromByteOffset: Offset.ipv4Address, as: UInt32.self)
            self.init(ip: .v4(UInt32(bigEndian: a)), port: port)
        case AF_INET6:
            let high = raw.loadUnaligned(fromByteOffset: Offset.ipv6Address, as: UInt64.self)
            let low = raw.loadUnaligned(fromByteOffset: Offset.ipv6Address + 8, as: UInt64.self)
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
            raw.storeBytes(of: port.bigEndian, toByteOffset: Offset.port, as: UInt16.self)
            switch ip {
            case .v4(let a):
                raw.storeBytes(of: sa_family_t(AF_INET), toByteOffset: Offset.family, as: sa_family_t.self)
                raw.storeBytes(of: a.bigEndian, toByteOffset: Offset.ipv4Address, as: UInt32.self)
                return MemoryLayout<sockaddr_in>.size
            case .v6(let high, let low):
                raw.storeBytes(of: sa_family_t(AF_INET6), toByteOffset: Offset.family, as: sa_family_t.self)
                raw.storeBytes(of: high.bigEndian, toByteOffset: Offset.ipv6Address, as: UInt64.self)
                raw.storeBytes(of: low.bigEndian, toByteOffset: Offset.ipv6Address + 8, as: UInt64.self)
                return MemoryLayout<sockaddr_in6>.size
            }
        }
        return (storage, socklen_t(length))
    }

    /// Runs `body` with the address as a `sockaddr` pointer and its length (bind, connect).
    func withSockaddr<T, E: Error>(_ body: (UnsafePointer<sockaddr>, socklen_t) throws(E) -> T) throws(E) -> T {
        var (storage, length) = storage()
        return try withUnsafePointer(to: &storage) { (p) throws(E) -> T in
            try p.withMemoryRebound(to: sockaddr.self, capacity: 1) { (sa) throws(E) -> T in try body(sa, length) }
        }
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
