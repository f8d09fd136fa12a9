import CUDPRelay
import UDPRelayConfig

#if canImport(Glibc)
import Glibc
#endif

/// `spoof = yes`: sends a mirror worker's copies with each client's own address and port as
/// their source, through one raw socket (`IPPROTO_RAW`, header included) per collector,
/// connected to it. A socket per collector, not one per worker, because the kernel charges a
/// packet waiting for a neighbour (ARP/ND of an unreachable collector) to its socket's send
/// buffer: a shared socket would let one dead collector fill the buffer of all of them.
///
/// Per batch, `add` records each datagram to copy (its client and payload) and sums its payload
/// once; `send` then writes the headers of one collector's copies (`SpoofedHeader`) into
/// preallocated slots and sends them with `sendmmsg`, each as a two-entry iovec (headers,
/// payload; the payload is not copied). A copy whose client has the other family than the
/// collector (an IPv6 client, or an IPv4 one towards an IPv6 collector) is not sent and is
/// reported as `mismatched`; a copy too large for the route's MTU fails with EMSGSIZE (raw
/// sockets do not fragment) and is dropped like any failed send.
///
/// Not thread-safe: owned by one worker and used only on its queue. Allocates at init only.
struct SpoofedSender {
    /// What one collector's `send` did.
    struct Outcome {
        var sent = 0
        /// Payload bytes of `sent` (without the headers).
        var bytes: UInt64 = 0
        /// Copies not sent because the client's family differs from the collector's.
        var mismatched = 0
    }

    let capacity: Int
    /// Datagrams recorded by `add` for the current batch.
    private(set) var count = 0
    private let clients: UnsafeMutablePointer<UnsafeRawPointer?>
    private let payloads: UnsafeMutablePointer<iovec>
    private let payloadSums: UnsafeMutablePointer<UInt64>
    private let headers: UnsafeMutableRawPointer
    private let iov: UnsafeMutablePointer<iovec>
    private let messages: UnsafeMutablePointer<cur_mmsghdr>
    /// Per collector: the address its socket is connected to, the socket (-1 while none) and
    /// its family.
    private let collectors: UnsafeMutablePointer<sockaddr_storage>
    private(set) var fds: [Int32]
    private var families: [Int32]
    /// SO_SNDBUF of a new socket.
    private let sendBuffer: Int
    private var sender = DatagramSender(segmentation: false)

    init(capacity: Int, collectors count: Int, sendBuffer: Int) {
        precondition(capacity > 0)
        self.capacity = capacity
        self.sendBuffer = sendBuffer
        clients = .allocate(capacity: capacity)
        clients.initialize(repeating: nil, count: capacity)
        payloads = .allocate(capacity: capacity)
        payloads.initialize(repeating: iovec(), count: capacity)
        payloadSums = .allocate(capacity: capacity)
        payloadSums.initialize(repeating: 0, count: capacity)
        headers = .allocate(byteCount: capacity * SpoofedHeader.maxSize, alignment: 8)
        headers.initializeMemory(as: UInt8.self, repeating: 0, count: capacity * SpoofedHeader.maxSize)
        iov = .allocate(capacity: 2 * capacity)
        iov.initialize(repeating: iovec(), count: 2 * capacity)
        messages = .allocate(capacity: capacity)
        messages.initialize(repeating: cur_mmsghdr(), count: capacity)
        for k in 0..<capacity {
            messages[k].msg_hdr.msg_iov = iov + 2 * k
            messages[k].msg_hdr.msg_iovlen = 2
        }
        collectors = .allocate(capacity: max(count, 1))
        collectors.initialize(repeating: sockaddr_storage(), count: max(count, 1))
        fds = Array(repeating: -1, count: count)
        families = Array(repeating: 0, count: count)
    }

    /// Closes the sockets and frees the buffers (the owner calls this in its deinit).
    mutating func deallocate() {
        closeAll()
        clients.deallocate()
        payloads.deallocate()
        payloadSums.deallocate()
        headers.deallocate()
        iov.deallocate()
        messages.deallocate()
        collectors.deallocate()
        sender.deallocate()
    }

    /// Closes every collector's socket.
    mutating func closeAll() {
        for u in fds.indices where fds[u] >= 0 {
            Syscall.close(fds[u])
            fds[u] = -1
        }
    }

    /// Points collector `u`'s socket at `address`: reconnects the open one when the family is
    /// the same, otherwise opens a new one. On failure collector `u` has no socket (its copies
    /// count as drops) until the next call.
    mutating func connect(_ u: Int, to address: SocketAddress) throws(SyscallError) {
        let family = address.ip.isIPv6 ? AF_INET6 : AF_INET
        collectors[u] = address.storage().0
        if fds[u] >= 0, families[u] == family {
            do throws(SyscallError) {
                try Syscall.connect(fds[u], to: address)
                return
            } catch {
                close(u)
                throw error
            }
        }
        close(u)
        let socket = SocketDescriptor(try Syscall.rawSocket(family: family))
        try Syscall.setHeaderIncluded(socket.rawValue, family: family)
        // Raw IPPROTO_RAW sockets receive nothing: the smallest receive buffer.
        UDPSocket.setBuffers(socket.rawValue, receive: 0, send: sendBuffer)
        try Syscall.connect(socket.rawValue, to: address)
        fds[u] = socket.take()
        families[u] = family
    }

    /// Closes collector `u`'s socket, if open.
    mutating func close(_ u: Int) {
        guard fds[u] >= 0 else { return }
        Syscall.close(fds[u])
        fds[u] = -1
    }

    /// Starts a batch.
    @inline(__always)
    mutating func reset() { count = 0 }

    /// Records a datagram to copy: its client's address as received and its payload.
    @inline(__always)
    mutating func add(client: UnsafeRawPointer, payload: iovec) {
        clients[count] = client
        payloads[count] = payload
        payloadSums[count] = payload.iov_base.map { SpoofedHeader.sum($0, count: payload.iov_len) } ?? 0
        count += 1
    }

    /// Sends the batch's copies to collector `u` (which must have a socket); `drop(errno, n)`
    /// is told about `n` copies the kernel did not take.
    @inline(__always)
    mutating func send(toCollector u: Int, drop: (_ errno: Int32, _ count: Int) -> Void) -> Outcome {
        var outcome = Outcome()
        let collector = UnsafeRawPointer(collectors + u)
        var m = 0
        var headerSize = 0
        for k in 0..<count {
            guard let client = clients[k] else { continue }
            let out = headers + m * SpoofedHeader.maxSize
            let size = SpoofedHeader.write(
                into: out, client: client, collector: collector, length: payloads[k].iov_len, payloadSum: payloadSums[k])
            guard size > 0 else {
                outcome.mismatched += 1
                continue
            }
            headerSize = size
            iov[2 * m] = iovec(iov_base: out, iov_len: size)
            iov[2 * m + 1] = payloads[k]
            m += 1
        }
        guard m > 0 else { return outcome }
        let sent = sender.send(fd: fds[u], messages, count: m, oneDestination: true, drop: drop)
        outcome.sent = sent.sent
        outcome.bytes = sent.bytes &- UInt64(sent.sent * headerSize)
        return outcome
    }
}
