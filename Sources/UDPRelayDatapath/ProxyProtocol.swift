import CUDPRelay
import UDPRelayConfig

#if canImport(Glibc)
import Glibc
#endif

/// PROXY protocol version 2 headers (HAProxy's `proxy-protocol.txt`, section 2.2) for datagrams
/// relayed over UDP with `proxy_protocol = v2`: the 12-byte signature, version 2 with command
/// PROXY, INET or INET6 over DGRAM, the length of the address block, then the source address
/// (the client), the destination address (where the client sent to), the source port and the
/// destination port, all in network byte order. Datagram relays put one header in front of
/// every datagram (the receiver reads it from each datagram; there is no connection).
///
/// Pure and allocation-free: `write` fills a caller's buffer of `maxSize` bytes from socket
/// addresses as the kernel gives them.
public enum ProxyProtocolV2 {
    /// `\r\n\r\n\0\r\nQUIT\n`.
    static let signature = ProxyHeaderParser.signature
    /// Version 2 (high nibble), command PROXY (low nibble).
    static let versionCommand: UInt8 = 0x21
    /// Address family (high nibble) and transport (low nibble): DGRAM = 2.
    static let inetDatagram: UInt8 = 0x12
    static let inet6Datagram: UInt8 = 0x22
    /// Signature, version/command, family/transport and length.
    static let fixedSize = 16
    /// Header sizes with IPv4 and with IPv6 addresses.
    public static let inetSize = fixedSize + 12
    public static let inet6Size = fixedSize + 36
    /// Room a header may need.
    public static let maxSize = inet6Size

    /// The header of a datagram the relay sends on its own behalf (health probes): version 2,
    /// command LOCAL, family UNSPEC, no addresses. A receiver that requires a header accepts it
    /// and uses the real source of the datagram.
    public static let localHeader: [UInt8] = [
        0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, 0x20, 0x00, 0x00, 0x00,
    ]

    /// Writes the header for a datagram from `source` to `destination` into `out` (at least
    /// `maxSize` bytes) and returns its length. Both are `sockaddr_in` or `sockaddr_in6` (an
    /// IPv4 `sockaddr_in` may sit in a `sockaddr_in6`'s storage, as sessions keep it);
    /// `destinationPort` (host order) replaces the destination's port, which packet info does
    /// not carry. Two IPv4 (or IPv4-mapped IPv6) addresses give an INET header; otherwise
    /// INET6, with an IPv4 address in its mapped form. An address of another family (not
    /// expected from a UDP socket) is written as the unspecified IPv6 address.
    @inline(__always)
    public static func write(
        into out: UnsafeMutableRawPointer, source: UnsafeRawPointer, destination: UnsafeRawPointer, destinationPort: UInt16
    ) -> Int {
        let sourceV4 = RawSockaddr.ipv4OrMapped(source)
        let destinationV4 = RawSockaddr.ipv4OrMapped(destination)
        out.storeBytes(of: signature.0.bigEndian, toByteOffset: 0, as: UInt64.self)
        out.storeBytes(of: signature.1.bigEndian, toByteOffset: 8, as: UInt32.self)
        out.storeBytes(of: versionCommand, toByteOffset: 12, as: UInt8.self)
        let addresses = out + fixedSize
        let length: Int
        if let s = sourceV4, let d = destinationV4 {
            out.storeBytes(of: inetDatagram, toByteOffset: 13, as: UInt8.self)
            // Already in network order, as they sit in the sockaddr.
            addresses.storeBytes(of: s, toByteOffset: 0, as: UInt32.self)
            addresses.storeBytes(of: d, toByteOffset: 4, as: UInt32.self)
            length = 12
        } else {
            out.storeBytes(of: inet6Datagram, toByteOffset: 13, as: UInt8.self)
            writeIPv6(source, v4: sourceV4, to: addresses)
            writeIPv6(destination, v4: destinationV4, to: addresses + 16)
            length = 36
        }
        out.storeBytes(of: UInt16(length).bigEndian, toByteOffset: 14, as: UInt16.self)
        // sin_port and sin6_port are at the same offset, in network order.
        addresses.storeBytes(of: source.loadUnaligned(fromByteOffset: 2, as: UInt16.self), toByteOffset: length - 4, as: UInt16.self)
        addresses.storeBytes(of: destinationPort.bigEndian, toByteOffset: length - 2, as: UInt16.self)
        return fixedSize + length
    }

    /// The header for a datagram from `source` to `destination`, as bytes (tests, tools).
    public static func header(source: SocketAddress, destination: SocketAddress) -> [UInt8] {
        var (s, _) = source.storage()
        var (d, _) = destination.storage()
        var bytes = [UInt8](repeating: 0, count: maxSize)
        let n = bytes.withUnsafeMutableBytes { out in
            withUnsafeBytes(of: &s) { sp in
                withUnsafeBytes(of: &d) { dp in
                    write(into: out.baseAddress!, source: sp.baseAddress!, destination: dp.baseAddress!, destinationPort: destination.port)
                }
            }
        }
        return Array(bytes[..<n])
    }

    /// The 16 bytes of an IPv6 address: `address`'s own, or `v4` mapped, or zeros.
    @inline(__always)
    private static func writeIPv6(_ address: UnsafeRawPointer, v4: UInt32?, to out: UnsafeMutableRawPointer) {
        if let v4 {
            out.storeBytes(of: 0, toByteOffset: 0, as: UInt64.self)
            out.storeBytes(of: UInt32(0x0000_FFFF).bigEndian, toByteOffset: 8, as: UInt32.self)
            out.storeBytes(of: v4, toByteOffset: 12, as: UInt32.self)
        } else if Int32(address.loadUnaligned(as: sa_family_t.self)) == AF_INET6 {
            out.copyMemory(from: address + 8, byteCount: 16)
        } else {
            out.initializeMemory(as: UInt8.self, repeating: 0, count: 16)
        }
    }
}

/// A worker's PROXY v2 headers and the two-entry iovec lists that send each one in front of a
/// datagram's payload (gathered by the kernel: the payload is not copied). Allocated once per
/// worker with room for a batch; the hot path only writes into it.
///
/// Not thread-safe: owned by one worker and used only on its queue.
struct ProxyHeaders {
    /// `capacity` headers of `ProxyProtocolV2.maxSize` bytes.
    private let headers: UnsafeMutableRawPointer
    /// Two entries per message: its header, then its payload.
    private let iov: UnsafeMutablePointer<iovec>
    /// The listener's own address (with its bound port), the destination when packet info
    /// gives none (a listener on a specific address).
    private let listener: UnsafeMutablePointer<sockaddr_storage>
    private let listenerPort: UInt16
    /// Where `write(_:from:packetInfoOf:)` reads the packet-info destination into.
    private let arrivedAt: UnsafeMutablePointer<sockaddr_storage>
    let capacity: Int

    init(capacity: Int, listener address: SocketAddress) {
        precondition(capacity > 0)
        self.capacity = capacity
        headers = .allocate(byteCount: capacity * ProxyProtocolV2.maxSize, alignment: 8)
        headers.initializeMemory(as: UInt8.self, repeating: 0, count: capacity * ProxyProtocolV2.maxSize)
        iov = .allocate(capacity: 2 * capacity)
        iov.initialize(repeating: iovec(), count: 2 * capacity)
        listener = .allocate(capacity: 1)
        listener.initialize(to: address.storage().0)
        listenerPort = address.port
        arrivedAt = .allocate(capacity: 1)
        arrivedAt.initialize(to: sockaddr_storage())
    }

    /// Frees the buffers (the owner calls this in its deinit).
    func deallocate() {
        headers.deallocate()
        iov.deallocate()
        listener.deallocate()
        arrivedAt.deallocate()
    }

    /// Writes header `h` for a datagram from `client` that arrived at `local` (a wildcard
    /// listener's packet-info address, whose port is the listener's), or at the listener's own
    /// address when `local` is nil.
    @inline(__always)
    func write(_ h: Int, client: UnsafeRawPointer, local: UnsafeRawPointer?) {
        let out = headers + h * ProxyProtocolV2.maxSize
        let length = ProxyProtocolV2.write(
            into: out, source: client, destination: local ?? UnsafeRawPointer(listener), destinationPort: listenerPort)
        iov[2 * h] = iovec(iov_base: out, iov_len: length)
    }

    /// Writes header `h` for the datagram a received message `header` holds: its source, and
    /// the destination from its packet info when it carries one.
    @inline(__always)
    func write(_ h: Int, from header: msghdr) {
        guard let name = header.msg_name else { return }
        var index: UInt32 = 0
        let found = withUnsafePointer(to: header) { cur_received_destination($0, arrivedAt, &index) } == 1
        write(h, client: UnsafeRawPointer(name), local: found ? UnsafeRawPointer(arrivedAt) : nil)
    }

    /// Makes `message` (one payload iovec) send header `h` in front of its payload, through the
    /// iovec list of slot `n`.
    @inline(__always)
    func prepend(_ h: Int, to message: inout msghdr, slot n: Int) {
        iov[2 * n] = iov[2 * h]
        iov[2 * n + 1] = message.msg_iov.pointee
        message.msg_iov = iov + 2 * n
        message.msg_iovlen = 2
    }
}
