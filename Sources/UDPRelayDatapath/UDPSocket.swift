import CUDPRelay
import UDPRelayConfig

#if canImport(Glibc)
import Glibc
#endif

/// Helpers for one non-blocking, close-on-exec UDP socket descriptor. The descriptor has one
/// owner (the read source that serves it), which closes it in the source's cancel handler.
public enum UDPSocket {
    /// Opens a non-blocking, close-on-exec datagram socket of the address's family.
    public static func open(family: Int32) throws(SyscallError) -> Int32 {
        try Syscall.datagramSocket(family: family)
    }

    public static func setOption(_ fd: Int32, _ level: Int32, _ name: Int32, _ value: Int32, call: StaticString = "setsockopt") throws(SyscallError) {
        try Syscall.setIntOption(fd, level, name, value, call: call)
    }

    public static func getIntOption(_ fd: Int32, _ level: Int32, _ name: Int32) throws(SyscallError) -> Int32 {
        try Syscall.intOption(fd, level, name)
    }

    /// Opens and binds a socket for `address`: IPv6 sockets are IPv6-only so `0.0.0.0:P` and
    /// `[::]:P` can both be bound; wildcard sockets ask for packet info so replies can leave
    /// from the address each datagram was sent to.
    /// The caller owns the descriptor returned; on failure nothing stays open.
    public static func bound(to address: SocketAddress, reusePort: Bool = false) throws(SyscallError) -> Int32 {
        try boundSocket(to: address, reusePort: reusePort).take()
    }

    /// `bound(to:reusePort:)` as an owned descriptor.
    public static func boundSocket(to address: SocketAddress, reusePort: Bool = false) throws(SyscallError) -> SocketDescriptor {
        let socket = SocketDescriptor(try open(family: address.family))
        let fd = socket.rawValue
        if address.ip.isIPv6 {
            try setOption(fd, Int32(IPPROTO_IPV6), CUR_IPV6_V6ONLY, 1)
        }
        if reusePort {
            try setOption(fd, SOL_SOCKET, CUR_SO_REUSEPORT, 1)
        }
        if address.ip.isWildcard {
            try Syscall.enablePacketInfo(fd, family: address.family)
        }
        try Syscall.bind(fd, to: address)
        return socket
    }

    /// Opens a socket of `address`'s family connected to it, as an owned descriptor; on failure
    /// nothing stays open.
    public static func connectedSocket(to address: SocketAddress) throws(SyscallError) -> SocketDescriptor {
        let socket = SocketDescriptor(try open(family: address.family))
        try connect(socket.rawValue, to: address)
        return socket
    }

    /// `transparent = yes`: makes `fd` (not yet bound) able to take a client's own address and
    /// port as its source: IP_TRANSPARENT or IPV6_TRANSPARENT, and IP_FREEBIND.
    public static func makeTransparent(_ fd: Int32, family: Int32) throws(SyscallError) {
        try Syscall.setTransparent(fd, family: family)
        try Syscall.setFreeBind(fd)
    }

    /// Binds `fd` to the `sockaddr` of `length` bytes at `address` (a client's, as received).
    public static func bind(_ fd: Int32, toRaw address: UnsafeRawPointer, length: socklen_t) throws(SyscallError) {
        try Syscall.bind(fd, toRaw: address, length: length)
    }

    /// Sets SO_RCVBUF/SO_SNDBUF, using the FORCE variants (which ignore net.core.[rw]mem_max)
    /// when the process may; otherwise the kernel caps the value. Returns the sizes in effect.
    @discardableResult
    public static func setBuffers(_ fd: Int32, receive: Int, send: Int) -> (receive: Int, send: Int) {
        let r = Int32(clamping: receive), s = Int32(clamping: send)
        if (try? setOption(fd, SOL_SOCKET, SO_RCVBUFFORCE, r)) == nil {
            try? setOption(fd, SOL_SOCKET, SO_RCVBUF, r)
        }
        if (try? setOption(fd, SOL_SOCKET, SO_SNDBUFFORCE, s)) == nil {
            try? setOption(fd, SOL_SOCKET, SO_SNDBUF, s)
        }
        let er = (try? getIntOption(fd, SOL_SOCKET, SO_RCVBUF)) ?? 0
        let es = (try? getIntOption(fd, SOL_SOCKET, SO_SNDBUF)) ?? 0
        return (Int(er), Int(es))
    }

    /// Sets SO_RCVBUF/SO_SNDBUF on a socket opened often (relay session sockets): two calls,
    /// no read-back. `force` says whether to try the FORCE variants; it is cleared when they
    /// are refused (no CAP_NET_ADMIN), so later sockets go straight to the capped options.
    @inline(__always)
    public static func setBuffers(_ fd: Int32, receive: Int, send: Int, force: inout Bool) {
        let r = Int32(clamping: receive), s = Int32(clamping: send)
        if force, (try? setOption(fd, SOL_SOCKET, SO_RCVBUFFORCE, r)) == nil { force = false }
        if !force { try? setOption(fd, SOL_SOCKET, SO_RCVBUF, r) }
        if force, (try? setOption(fd, SOL_SOCKET, SO_SNDBUFFORCE, s)) == nil { force = false }
        if !force { try? setOption(fd, SOL_SOCKET, SO_SNDBUF, s) }
    }

    /// SO_RXQ_OVFL: every datagram received then carries the socket's count of datagrams the
    /// kernel dropped (receive buffer full), read by `MessageBatch.kernelDrops`.
    public static func enableDropCount(_ fd: Int32) {
        try? setOption(fd, SOL_SOCKET, dropCountOption, 1)
    }

    /// SO_RXQ_OVFL (asm-generic/socket.h), the option and its control message type.
    static let dropCountOption: Int32 = 40
    /// CMSG_SPACE(sizeof(uint32_t)) on 64-bit Linux: room for the SO_RXQ_OVFL control message.
    static let dropCountControlSpace = 24

    /// The address the kernel actually bound (learns the port after binding port 0).
    public static func localAddress(_ fd: Int32) throws(SyscallError) -> SocketAddress {
        try Syscall.localAddress(fd)
    }

    /// Connects a datagram socket to `address` (sets its peer; no packets are sent).
    public static func connect(_ fd: Int32, to address: SocketAddress) throws(SyscallError) {
        try Syscall.connect(fd, to: address)
    }
}

extension MessageBatch {
    /// The kernel's count of datagrams dropped on the socket (SO_RXQ_OVFL, cumulative and
    /// wrapping), as the last of the `received` datagrams carried it; nil when it carried none
    /// (nothing dropped yet, or the option is off). Walks that message's control data by hand
    /// (CMSG_* are macros Swift cannot call): 16-byte `cmsghdr` headers, 8-byte alignment.
    @inline(__always)
    func kernelDrops(_ received: Int) -> UInt32? {
        guard received > 0 else { return nil }
        let header = messages[received - 1].msg_hdr
        guard let control = header.msg_control else { return nil }
        let length = Int(header.msg_controllen)
        var offset = 0
        while offset + 16 <= length {
            let cmsgLength = control.loadUnaligned(fromByteOffset: offset, as: Int.self)
            let level = control.loadUnaligned(fromByteOffset: offset + 8, as: Int32.self)
            let type = control.loadUnaligned(fromByteOffset: offset + 12, as: Int32.self)
            guard cmsgLength >= 16, offset + cmsgLength <= length else { return nil }
            if level == SOL_SOCKET && type == UDPSocket.dropCountOption && cmsgLength >= 20 {
                return control.loadUnaligned(fromByteOffset: offset + 16, as: UInt32.self)
            }
            offset += (cmsgLength + 7) & ~7
        }
        return nil
    }
}
