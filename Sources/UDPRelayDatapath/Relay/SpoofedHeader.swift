import UDPRelayConfig

#if canImport(Glibc)
import Glibc
#endif

/// The IPv4 or IPv6 header and the UDP header that `spoof = yes` writes in front of each copy:
/// the client's address and port as the source, the collector's as the destination, the UDP
/// checksum over the pseudo-header, the UDP header and the payload (RFC 768, RFC 8200 8.1;
/// mandatory for IPv6, computed for IPv4 too). Raw sockets (`IPPROTO_RAW`) send them as
/// written, except that for IPv4 the kernel fills in the header checksum, the total length and
/// the packet ID (zero here); DF is clear.
///
/// Pure and allocation-free. Sums are one's complement sums of 16-bit words taken in the
/// machine's byte order and left unfolded (RFC 1071: the byte order cancels out when the
/// folded result is stored back in the same order), so the payload is summed once per datagram
/// and each collector only adds its own address and port.
public enum SpoofedHeader {
    /// IPv4 (20) + UDP (8) and IPv6 (40) + UDP (8) bytes.
    public static let ipv4Size = 28
    public static let ipv6Size = 48
    public static let maxSize = ipv6Size
    /// TTL / hop limit of a copy.
    static let hopLimit: UInt8 = 64
    static let udp: UInt8 = 17

    /// The unfolded one's complement sum of `count` bytes at `p` (an odd last byte is padded
    /// with a zero byte).
    @inline(__always)
    public static func sum(_ p: UnsafeRawPointer, count: Int, into initial: UInt64 = 0) -> UInt64 {
        var s = initial
        var i = 0
        // Two 16-bit words at a time; carries collect in the high bits (no overflow below 2^32
        // words).
        while i + 8 <= count {
            let w = p.loadUnaligned(fromByteOffset: i, as: UInt64.self)
            s &+= (w & 0xFFFF_FFFF) &+ (w >> 32)
            i += 8
        }
        while i + 2 <= count {
            s &+= UInt64(p.loadUnaligned(fromByteOffset: i, as: UInt16.self))
            i += 2
        }
        if i < count {
            var last: UInt16 = 0
            withUnsafeMutableBytes(of: &last) { $0[0] = p.load(fromByteOffset: i, as: UInt8.self) }
            s &+= UInt64(last)
        }
        return s
    }

    /// `s` folded to 16 bits (machine order).
    @inline(__always)
    public static func fold(_ s: UInt64) -> UInt16 {
        var v = s
        while v >> 16 != 0 { v = (v & 0xFFFF) &+ (v >> 16) }
        return UInt16(v)
    }

    /// Writes the headers of a copy from `client` (a `sockaddr_in`, or a `sockaddr_in6` possibly
    /// holding an IPv4-mapped address, as received) to `collector` (a `sockaddr_in` or
    /// `sockaddr_in6`) into `out` (at least `maxSize` bytes), for a payload of `length` bytes
    /// whose `sum` is `payloadSum`; returns the size written (`ipv4Size` or `ipv6Size`), or 0
    /// when the client cannot be a source towards that collector: an IPv4 (or IPv4-mapped)
    /// client towards an IPv6 collector, or an IPv6 client towards an IPv4 one.
    @inline(__always)
    public static func write(
        into out: UnsafeMutableRawPointer, client: UnsafeRawPointer, collector: UnsafeRawPointer, length: Int,
        payloadSum: UInt64
    ) -> Int {
        let udpLength = UInt16(truncatingIfNeeded: 8 + length)
        let clientPort = client.loadUnaligned(fromByteOffset: 2, as: UInt16.self)
        let collectorPort = collector.loadUnaligned(fromByteOffset: 2, as: UInt16.self)
        // Pseudo-header protocol and length, the UDP header's ports and length.
        var s = payloadSum &+ UInt64(UInt16(udp).bigEndian) &+ 2 &* UInt64(udpLength.bigEndian)
        s &+= UInt64(clientPort) &+ UInt64(collectorPort)
        let u: UnsafeMutableRawPointer
        let size: Int
        if Int32(collector.loadUnaligned(as: sa_family_t.self)) == AF_INET {
            guard let source = RawSockaddr.ipv4OrMapped(client) else { return 0 }
            let destination = collector.loadUnaligned(fromByteOffset: 4, as: UInt32.self)
            out.storeBytes(of: 0x45, as: UInt8.self)  // version 4, 5 words of header
            out.storeBytes(of: 0, toByteOffset: 1, as: UInt8.self)
            out.storeBytes(of: UInt16(truncatingIfNeeded: ipv4Size + length).bigEndian, toByteOffset: 2, as: UInt16.self)
            out.storeBytes(of: 0, toByteOffset: 4, as: UInt32.self)  // ID (the kernel's), no flags
            out.storeBytes(of: hopLimit, toByteOffset: 8, as: UInt8.self)
            out.storeBytes(of: udp, toByteOffset: 9, as: UInt8.self)
            out.storeBytes(of: 0, toByteOffset: 10, as: UInt16.self)  // the kernel's
            out.storeBytes(of: source, toByteOffset: 12, as: UInt32.self)
            out.storeBytes(of: destination, toByteOffset: 16, as: UInt32.self)
            s &+= UInt64(source & 0xFFFF) &+ UInt64(source >> 16) &+ UInt64(destination & 0xFFFF) &+ UInt64(destination >> 16)
            u = out + 20
            size = ipv4Size
        } else {
            guard RawSockaddr.family(client) == AF_INET6, RawSockaddr.ipv4OrMapped(client) == nil else { return 0 }
            out.storeBytes(of: UInt32(6 << 28).bigEndian, as: UInt32.self)  // version 6, no class or flow
            out.storeBytes(of: udpLength.bigEndian, toByteOffset: 4, as: UInt16.self)
            out.storeBytes(of: udp, toByteOffset: 6, as: UInt8.self)
            out.storeBytes(of: hopLimit, toByteOffset: 7, as: UInt8.self)
            (out + 8).copyMemory(from: client + 8, byteCount: 16)
            (out + 24).copyMemory(from: collector + 8, byteCount: 16)
            s = sum(out + 8, count: 32, into: s)
            u = out + 40
            size = ipv6Size
        }
        u.storeBytes(of: clientPort, as: UInt16.self)
        u.storeBytes(of: collectorPort, toByteOffset: 2, as: UInt16.self)
        u.storeBytes(of: udpLength.bigEndian, toByteOffset: 4, as: UInt16.self)
        // A computed 0 is sent as 0xFFFF (0 means "no checksum", which IPv6 forbids).
        let checksum = ~fold(s)
        u.storeBytes(of: checksum == 0 ? 0xFFFF : checksum, toByteOffset: 6, as: UInt16.self)
        return size
    }

    /// The packet (headers and payload) of a copy from `client` to `collector`, or nil when
    /// their families do not allow one (tests, tools).
    public static func packet(client: SocketAddress, collector: SocketAddress, payload: [UInt8]) -> [UInt8]? {
        var (c, _) = client.storage()
        var (d, _) = collector.storage()
        var header = [UInt8](repeating: 0, count: maxSize)
        let payloadSum = payload.withUnsafeBytes { sum($0.baseAddress ?? UnsafeRawPointer(bitPattern: 1)!, count: $0.count) }
        let n = header.withUnsafeMutableBytes { out in
            withUnsafeBytes(of: &c) { cp in
                withUnsafeBytes(of: &d) { dp in
                    write(into: out.baseAddress!, client: cp.baseAddress!, collector: dp.baseAddress!, length: payload.count, payloadSum: payloadSum)
                }
            }
        }
        return n == 0 ? nil : Array(header[..<n]) + payload
    }
}
