import CUDPRelay

#if canImport(Glibc)
import Glibc
#endif

/// The `mmsghdr`/`iovec`/address/control vectors and datagram buffers of one socket, allocated
/// once and reused for every `recvmmsg`/`sendmmsg`: the hot path allocates nothing.
///
/// Not thread-safe: owned by one worker and touched only on that worker's queue.
final class MessageBatch {
    let capacity: Int
    let bufferSize: Int
    let controlSize: Int
    let buffers: UnsafeMutableRawPointer
    let iovecs: UnsafeMutablePointer<iovec>
    let names: UnsafeMutablePointer<sockaddr_storage>
    let controls: UnsafeMutableRawPointer?
    let messages: UnsafeMutablePointer<cur_mmsghdr>

    /// - Parameters:
    ///   - capacity: datagrams per system call.
    ///   - bufferSize: bytes per datagram; a larger datagram arrives with `MSG_TRUNC`.
    ///   - withControl: reserve room for packet-info control messages. Room for the kernel's
    ///     drop count (SO_RXQ_OVFL, see `kernelDrops`) is always reserved.
    init(capacity: Int, bufferSize: Int, withControl: Bool) {
        precondition(capacity > 0 && bufferSize > 0)
        self.capacity = capacity
        self.bufferSize = bufferSize
        self.controlSize = (withControl ? (cur_pktinfo_space() + 7) & ~7 : 0) + UDPSocket.dropCountControlSpace
        buffers = .allocate(byteCount: capacity * bufferSize, alignment: 64)
        iovecs = .allocate(capacity: capacity)
        names = .allocate(capacity: capacity)
        controls = .allocate(byteCount: capacity * controlSize, alignment: 8)
        messages = .allocate(capacity: capacity)
        for i in 0..<capacity {
            iovecs[i] = iovec(iov_base: buffers + i * bufferSize, iov_len: bufferSize)
            names[i] = sockaddr_storage()
            messages[i] = cur_mmsghdr()
            messages[i].msg_hdr.msg_iov = iovecs + i
            messages[i].msg_hdr.msg_iovlen = 1
            messages[i].msg_hdr.msg_name = UnsafeMutableRawPointer(names + i)
        }
        prepareForReceive(count: capacity)
    }

    deinit {
        buffers.deallocate()
        iovecs.deallocate()
        names.deallocate()
        controls?.deallocate()
        messages.deallocate()
    }

    /// Resets the first `count` slots so `recvmmsg` can fill them.
    @inline(__always)
    func prepareForReceive(count: Int) {
        for i in 0..<count {
            // A PROXY header taken off (`SocketWorker.admits`) moved the base past it.
            iovecs[i].iov_base = buffers + i * bufferSize
            iovecs[i].iov_len = bufferSize
            messages[i].msg_hdr.msg_namelen = socklen_t(MemoryLayout<sockaddr_storage>.size)
            messages[i].msg_hdr.msg_control = controls.map { $0 + i * controlSize }
            messages[i].msg_hdr.msg_controllen = controlSize
            messages[i].msg_hdr.msg_flags = 0
            messages[i].msg_len = 0
        }
    }

    /// One `recvmmsg` on `fd` into this batch, after resetting the `lastCount` slots the
    /// previous call filled: the datagrams received, 0 when the socket is empty. The one receive
    /// call of every worker, for listener, session and upstream sockets alike.
    @inline(__always)
    func receive(from fd: Int32, resetting lastCount: Int, flags: Int32 = 0) throws(SyscallError) -> Int {
        prepareForReceive(count: lastCount)
        switch try Syscall.recvmmsg(fd, messages, count: capacity, flags: flags) {
        case .wouldBlock: return 0
        case .done(let n): return Int(n)
        }
    }

    /// The payload of slot `i` as received (`msg_len` bytes; after a PROXY header, if one was
    /// taken off).
    func payload(_ i: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: iovecs[i].iov_base, count: Int(messages[i].msg_len))
    }
}
