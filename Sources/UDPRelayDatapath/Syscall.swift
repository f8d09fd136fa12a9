import CUDPRelay
import UDPRelayConfig

#if canImport(Glibc)
import Glibc
#endif

/// A failed system call: which call and which errno. The one error type the datapath throws
/// for kernel failures.
public struct SyscallError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The name of the call (`bind`, `recvmmsg`, ...).
    public let call: String
    public let errno: Int32

    public init(call: String, errno: Int32) {
        self.call = call
        self.errno = errno
    }

    public var description: String {
        "\(call) failed: \(String(cString: strerror(errno))) (errno \(errno))"
    }
}

/// The outcome of a system call on a non-blocking descriptor.
public enum IOResult<T: Sendable>: Sendable {
    case done(T)
    /// EAGAIN/EWOULDBLOCK: nothing to read or no room to write right now.
    case wouldBlock
}

/// The single way the datapath calls the kernel: retries EINTR, maps EAGAIN to `.wouldBlock`,
/// reads errno at once and throws a `SyscallError` naming the call. EBADF and EFAULT are
/// programmer errors (a descriptor used after close, a bad pointer) and trap.
@inline(__always)
func syscall<T: FixedWidthInteger & Sendable>(_ call: StaticString, _ body: () -> T) throws(SyscallError) -> IOResult<T> {
    while true {
        let result = body()
        if result >= 0 { return .done(result) }
        let err = Glibc.errno
        switch err {
        case EINTR:
            continue
        case EAGAIN, EWOULDBLOCK:
            return .wouldBlock
        case EBADF, EFAULT:
            preconditionFailure("\(call): \(String(cString: strerror(err))): programmer error")
        default:
            throw SyscallError(call: "\(call)", errno: err)
        }
    }
}

/// For calls that never legitimately block (socket, bind, setsockopt): `.wouldBlock` is an error too.
@inline(__always)
@discardableResult
func syscallNoWait<T: FixedWidthInteger & Sendable>(_ call: StaticString, _ body: () -> T) throws(SyscallError) -> T {
    switch try syscall(call, body) {
    case .done(let v): return v
    case .wouldBlock: throw SyscallError(call: "\(call)", errno: EAGAIN)
    }
}

/// The system calls of the datapath by name: each wraps one call in `syscall`/`syscallNoWait`
/// (EINTR retried, EAGAIN as `.wouldBlock`, errno read at once, a `SyscallError` naming the
/// call), so no call site hands a raw closure to the primitives.
enum Syscall {
    // MARK: Sockets

    /// socket(2): a non-blocking, close-on-exec datagram socket of `family`.
    static func datagramSocket(family: Int32) throws(SyscallError) -> Int32 {
        try syscallNoWait("socket") { Glibc.socket(family, Int32(SOCK_DGRAM.rawValue) | CUR_SOCK_NONBLOCK | CUR_SOCK_CLOEXEC, 0) }
    }

    /// bind(2) to `address`.
    static func bind(_ fd: Int32, to address: SocketAddress) throws(SyscallError) {
        try address.withSockaddr { (sa, length) throws(SyscallError) in
            _ = try syscallNoWait("bind") { Glibc.bind(fd, sa, length) }
        }
    }

    /// bind(2) to a `sockaddr` as received (`length` bytes at `address`).
    static func bind(_ fd: Int32, toRaw address: UnsafeRawPointer, length: socklen_t) throws(SyscallError) {
        _ = try syscallNoWait("bind") { Glibc.bind(fd, address.assumingMemoryBound(to: sockaddr.self), length) }
    }

    /// IP_TRANSPARENT (AF_INET) or IPV6_TRANSPARENT (AF_INET6): `fd` may bind an address that
    /// is not this host's and receive what is sent to it (needs CAP_NET_ADMIN; EPERM without).
    static func setTransparent(_ fd: Int32, family: Int32) throws(SyscallError) {
        let (level, name) = TransparentProbe.option(family: family)
        try setIntOption(fd, level, name, 1, call: family == AF_INET6 ? "setsockopt(IPV6_TRANSPARENT)" : "setsockopt(IP_TRANSPARENT)")
    }

    /// IP_FREEBIND: `fd` may bind an address no interface has (applies to IPv6 sockets too).
    static func setFreeBind(_ fd: Int32) throws(SyscallError) {
        try setIntOption(fd, TransparentProbe.ipv4FreeBind.level, TransparentProbe.ipv4FreeBind.name, 1, call: "setsockopt(IP_FREEBIND)")
    }

    /// socket(2): a non-blocking, close-on-exec raw socket of `family` that sends whole IP
    /// packets (`IPPROTO_RAW`; needs CAP_NET_RAW, EPERM without). It receives nothing.
    static func rawSocket(family: Int32) throws(SyscallError) -> Int32 {
        try syscallNoWait("socket(SOCK_RAW)") {
            Glibc.socket(family, Int32(SOCK_RAW.rawValue) | CUR_SOCK_NONBLOCK | CUR_SOCK_CLOEXEC, SpoofProbe.rawProtocol)
        }
    }

    /// IP_HDRINCL (AF_INET) or IPV6_HDRINCL (AF_INET6, Linux 4.5 and later): what is sent on
    /// the raw socket `fd` starts with its own IP header.
    static func setHeaderIncluded(_ fd: Int32, family: Int32) throws(SyscallError) {
        let (level, name) = SpoofProbe.headerIncluded(family: family)
        try setIntOption(fd, level, name, 1, call: family == AF_INET6 ? "setsockopt(IPV6_HDRINCL)" : "setsockopt(IP_HDRINCL)")
    }

    /// connect(2) to `address` (for a datagram socket: sets its peer, sends nothing).
    static func connect(_ fd: Int32, to address: SocketAddress) throws(SyscallError) {
        try address.withSockaddr { (sa, length) throws(SyscallError) in
            _ = try syscallNoWait("connect") { Glibc.connect(fd, sa, length) }
        }
    }

    /// getsockname(2): the address `fd` is bound to; EAFNOSUPPORT for a family other than
    /// AF_INET/AF_INET6.
    static func localAddress(_ fd: Int32) throws(SyscallError) -> SocketAddress {
        let filled = try SocketAddress.filledIn { (sa, length) throws(SyscallError) in
            _ = try syscallNoWait("getsockname") { getsockname(fd, sa, length) }
        }
        guard let address = filled else {
            throw SyscallError(call: "getsockname", errno: EAFNOSUPPORT)
        }
        return address
    }

    /// getpeername(2): the address a connected socket sends to; ENOTCONN when it has none,
    /// EAFNOSUPPORT for a family other than AF_INET/AF_INET6.
    static func peerAddress(_ fd: Int32) throws(SyscallError) -> SocketAddress {
        let filled = try SocketAddress.filledIn { (sa, length) throws(SyscallError) in
            _ = try syscallNoWait("getpeername") { getpeername(fd, sa, length) }
        }
        guard let address = filled else {
            throw SyscallError(call: "getpeername", errno: EAFNOSUPPORT)
        }
        return address
    }

    /// setsockopt(2) with an `int` value.
    static func setIntOption(
        _ fd: Int32, _ level: Int32, _ name: Int32, _ value: Int32,
        call: StaticString = "setsockopt"
    ) throws(SyscallError) {
        var v = value
        try syscallNoWait(call) { setsockopt(fd, level, name, &v, socklen_t(MemoryLayout<Int32>.size)) }
    }

    /// getsockopt(2) of an `int` option.
    static func intOption(_ fd: Int32, _ level: Int32, _ name: Int32) throws(SyscallError) -> Int32 {
        var v: Int32 = 0
        var len = socklen_t(MemoryLayout<Int32>.size)
        try syscallNoWait("getsockopt") { getsockopt(fd, level, name, &v, &len) }
        return v
    }

    /// IP_PKTINFO / IPV6_RECVPKTINFO: each datagram then says which local address it was sent to.
    static func enablePacketInfo(_ fd: Int32, family: Int32) throws(SyscallError) {
        try syscallNoWait("setsockopt(PKTINFO)") { cur_enable_pktinfo(fd, family) }
    }

    // MARK: Descriptors

    /// fcntl(F_DUPFD_CLOEXEC): a close-on-exec duplicate of `fd`.
    static func duplicate(_ fd: Int32) throws(SyscallError) -> Int32 {
        try syscallNoWait("fcntl(F_DUPFD_CLOEXEC)") { fcntl(fd, F_DUPFD_CLOEXEC, 0) }
    }

    /// fcntl(F_GETFL/F_SETFL): sets O_NONBLOCK on `fd`.
    static func setNonBlocking(_ fd: Int32) throws(SyscallError) {
        let flags = try syscallNoWait("fcntl(F_GETFL)") { fcntl(fd, F_GETFL) }
        try syscallNoWait("fcntl(F_SETFL)") { fcntl(fd, F_SETFL, flags | O_NONBLOCK) }
    }

    /// close(2). Not retried on EINTR: Linux has released the descriptor by then, and a retry
    /// could close one another thread just opened. Other errors (EIO) leave nothing to do.
    /// Owners call it once (`SocketDescriptor`, or a read source's cancel handler).
    static func close(_ fd: Int32) {
        _ = Glibc.close(fd)
    }

    /// fcntl(F_SETFD, FD_CLOEXEC): `fd` is closed on exec (a descriptor handed over may not be).
    static func setCloseOnExec(_ fd: Int32) throws(SyscallError) {
        try syscallNoWait("fcntl(F_SETFD)") { fcntl(fd, F_SETFD, FD_CLOEXEC) }
    }

    // MARK: epoll

    /// epoll_create1(EPOLL_CLOEXEC).
    static func epollCreate() throws(SyscallError) -> Int32 {
        try syscallNoWait("epoll_create1") { cur_epoll_create() }
    }

    /// epoll_ctl(ADD): `member` for EPOLLIN (level-triggered), reported with `tag`.
    static func epollAdd(_ epfd: Int32, _ member: Int32, tag: UInt64) throws(SyscallError) {
        try syscallNoWait("epoll_ctl(ADD)") { cur_epoll_add(epfd, member, tag) }
    }

    /// epoll_ctl(DEL). Errors are ignored: a member already closed has left the set.
    static func epollRemove(_ epfd: Int32, _ member: Int32) {
        _ = cur_epoll_remove(epfd, member)
    }

    /// A non-blocking, close-on-exec eventfd (counter 0): a wait set's doorbell.
    static func eventCreate() throws(SyscallError) -> Int32 {
        try syscallNoWait("eventfd") { cur_eventfd() }
    }

    /// Adds 1 to an eventfd's counter, making it readable. A full counter (never, in practice)
    /// is readable already, so its error is ignored.
    static func eventSignal(_ fd: Int32) {
        var one: UInt64 = 1
        _ = try? syscall("write(eventfd)") { Glibc.write(fd, &one, 8) }
    }

    /// Reads an eventfd's counter back to 0 (nothing to read: already 0).
    static func eventReset(_ fd: Int32) {
        var count: UInt64 = 0
        _ = try? syscall("read(eventfd)") { Glibc.read(fd, &count, 8) }
    }

    /// epoll_wait for up to `timeout` ms (0: not at all): how many entries of `ready` it filled.
    @inline(__always)
    static func epollWait(
        _ epfd: Int32, _ ready: UnsafeMutablePointer<cur_ready>, capacity: Int32,
        timeout: Int32
    ) throws(SyscallError) -> IOResult<Int32> {
        try syscall("epoll_wait") { cur_epoll_wait(epfd, ready, capacity, timeout) }
    }

    // MARK: Datagrams

    /// send(2) of `bytes` on a connected socket.
    static func send(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) throws(SyscallError) -> IOResult<Int> {
        try syscall("send") { Glibc.send(fd, bytes.baseAddress, bytes.count, 0) }
    }

    /// A close-on-exec memfd holding `bytes`, sealed against any change (`cur_sealed_memfd`).
    static func sealedMemoryFile(name: String, _ bytes: UnsafeRawBufferPointer) throws(SyscallError) -> Int32 {
        try syscallNoWait("memfd_create") { cur_sealed_memfd(name, bytes.baseAddress, bytes.count) }
    }

    /// recv(2) into `buffer`: the datagram's length (cut to the buffer).
    static func recv(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer) throws(SyscallError) -> IOResult<Int> {
        try syscall("recv") { Glibc.recv(fd, buffer.baseAddress, buffer.count, 0) }
    }

    /// recvmmsg(2) of up to `count` messages into `vec`.
    @inline(__always)
    static func recvmmsg(
        _ fd: Int32, _ vec: UnsafeMutablePointer<cur_mmsghdr>, count: Int,
        flags: Int32
    ) throws(SyscallError) -> IOResult<Int32> {
        try syscall("recvmmsg") { cur_recvmmsg(fd, vec, UInt32(count), flags) }
    }

    /// sendmmsg(2) of `count` messages from `vec`: how many the kernel took.
    @inline(__always)
    static func sendmmsg(_ fd: Int32, _ vec: UnsafeMutablePointer<cur_mmsghdr>, count: Int) throws(SyscallError) -> IOResult<Int32> {
        try syscall("sendmmsg") { cur_sendmmsg(fd, vec, UInt32(count), 0) }
    }

    /// sendmsg(2) with UDP_SEGMENT: `iovcnt` buffers of `segment` bytes (the last may be
    /// shorter) leave as that many datagrams to one destination.
    @inline(__always)
    static func sendSegmented(
        _ fd: Int32, header h: msghdr, _ iov: UnsafeMutablePointer<iovec>, count: Int,
        segment: Int
    ) throws(SyscallError) -> IOResult<Int> {
        try syscall("sendmsg(UDP_SEGMENT)") {
            cur_send_segmented(fd, h.msg_name, h.msg_namelen, iov, Int32(count), UInt16(segment), h.msg_control, h.msg_controllen)
        }
    }
}
