#if canImport(Glibc)
import Glibc
#endif
import UDPRelayConfig

extension SocketAddress {
    /// The address as a `sockaddr_storage` and its length, for bind/sendmsg/connect.
    public func storage() -> (sockaddr_storage, socklen_t) {
        var storage = sockaddr_storage()
        switch ip {
        case .v4(let a):
            withUnsafeMutableBytes(of: &storage) { raw in
                let sin = raw.baseAddress!.assumingMemoryBound(to: sockaddr_in.self)
                sin.pointee.sin_family = sa_family_t(AF_INET)
                sin.pointee.sin_port = port.bigEndian
                sin.pointee.sin_addr.s_addr = a.bigEndian
            }
            return (storage, socklen_t(MemoryLayout<sockaddr_in>.size))
        case .v6:
            let bytes = ip.bytes
            withUnsafeMutableBytes(of: &storage) { raw in
                let sin6 = raw.baseAddress!.assumingMemoryBound(to: sockaddr_in6.self)
                sin6.pointee.sin6_family = sa_family_t(AF_INET6)
                sin6.pointee.sin6_port = port.bigEndian
                withUnsafeMutableBytes(of: &sin6.pointee.sin6_addr) { dst in
                    for i in 0..<16 { dst[i] = bytes[i] }
                }
            }
            return (storage, socklen_t(MemoryLayout<sockaddr_in6>.size))
        }
    }

    /// Runs `body` with the address as a `sockaddr` pointer and its length (bind, connect).
    func withSockaddr<T, E: Error>(_ body: (UnsafePointer<sockaddr>, socklen_t) throws(E) -> T) throws(E) -> T {
        var (storage, length) = storage()
        return try withUnsafePointer(to: &storage) { (p) throws(E) -> T in
            try p.withMemoryRebound(to: sockaddr.self, capacity: 1) { (sa) throws(E) -> T in try body(sa, length) }
        }
    }

    /// Reads an AF_INET or AF_INET6 socket address; nil for other families.
    public init?(sockaddr raw: UnsafeRawPointer) {
        let family = raw.assumingMemoryBound(to: sockaddr.self).pointee.sa_family
        switch Int32(family) {
        case AF_INET:
            let sin = raw.assumingMemoryBound(to: sockaddr_in.self).pointee
            self.init(ip: .v4(UInt32(bigEndian: sin.sin_addr.s_addr)), port: UInt16(bigEndian: sin.sin_port))
        case AF_INET6:
            let sin6 = raw.assumingMemoryBound(to: sockaddr_in6.self).pointee
            let (high, low) = withUnsafeBytes(of: sin6.sin6_addr) { b -> (UInt64, UInt64) in
                var h: UInt64 = 0, l: UInt64 = 0
                for i in 0..<8 { h = (h << 8) | UInt64(b[i]) }
                for i in 8..<16 { l = (l << 8) | UInt64(b[i]) }
                return (h, l)
            }
            self.init(ip: .v6(high: high, low: low), port: UInt16(bigEndian: sin6.sin6_port))
        default:
            return nil
        }
    }

    public init?(storage: sockaddr_storage) {
        var copy = storage
        guard let v = withUnsafeBytes(of: &copy, { SocketAddress(sockaddr: $0.baseAddress!) }) else { return nil }
        self = v
    }

    var family: Int32 { ip.isIPv6 ? AF_INET6 : AF_INET }
}
