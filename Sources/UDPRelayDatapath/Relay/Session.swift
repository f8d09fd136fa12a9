#if canImport(Glibc)
import Glibc
#endif
import CUDPRelay
import UDPRelayConfig

/// One client session of a forward/balance listener: a connected, non-blocking upstream socket
/// on an ephemeral port and where its replies go. Kept small and plain (no object, no Dispatch
/// source per session): it is stored inline in the `SessionTable`'s flat array, and the socket
/// is watched by the worker's one epoll set.
struct Session {
    /// -1 while the slot is free.
    var fd: Int32 = -1
    /// Bumped each time the slot is reused, so an epoll event of a closed session is ignored.
    var generation: UInt32 = 0
    /// Interface of `local` (packet info on wildcard listeners).
    var ifindex: UInt32 = 0
    /// Datagrams sent to the upstream and replies forwarded to the client (saturating): with
    /// `session_max_replies` = R the session closes once replies reach R × requests.
    var requests: UInt32 = 0
    var replies: UInt32 = 0
    /// The kernel's drop count of the socket last seen (SO_RXQ_OVFL).
    var kernelDrops: UInt32 = 0
    var key = ClientKey(high: 0, low: 0, rest: 0)
    /// The client's address (an IPv4 `sockaddr_in` fits): the destination of replies.
    var client = sockaddr_in6()
    var clientLength: socklen_t = 0
    /// The address the client sent to, on wildcard listeners: replies leave from it. Family 0
    /// when not needed.
    var local = sockaddr_in6()
    /// Index of its upstream (at most 64). Here and `held` last, where they fit in the padding
    /// of the fields above, so the record does not grow.
    var upstream: UInt16 = 0
    /// Closed, but its socket is held for a while (see `RelayWorker`): replies are dropped.
    var held = false

    init() {}

    /// A new session of the client `key` on socket `fd`, connected to upstream `upstream`.
    /// Its addresses are set with `setAddresses(from:packetInfo:)`.
    init(fd: Int32, key: ClientKey, upstream: Int) {
        self.fd = fd
        self.key = key
        self.upstream = UInt16(upstream)
    }

    /// The epoll tag of this session in `slot`.
    func tag(slot: Int32) -> UInt64 { UInt64(generation) << 32 | UInt64(UInt32(bitPattern: slot)) }

    /// Takes the client's address from the header of a received message and, with `packetInfo`
    /// (wildcard listeners), the address and interface it was sent to, from which replies leave.
    mutating func setAddresses(from header: msghdr, packetInfo: Bool) {
        client = sockaddr_in6()
        clientLength = min(header.msg_namelen, socklen_t(MemoryLayout<sockaddr_in6>.size))
        let name = UnsafeRawBufferPointer(start: header.msg_name, count: Int(clientLength))
        withUnsafeMutableBytes(of: &client) { $0.copyMemory(from: name) }
        local = sockaddr_in6()
        ifindex = 0
        guard packetInfo else { return }
        var destination = sockaddr_storage()
        var index: UInt32 = 0
        let found = withUnsafePointer(to: header) { cur_received_destination($0, &destination, &index) }
        if found == 1 {
            withUnsafeMutableBytes(of: &local) { dst in
                withUnsafeBytes(of: &destination) { dst.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[..<dst.count])) }
            }
            ifindex = index
        }
    }

    /// The client's address, for logs.
    var clientAddress: SocketAddress? {
        withUnsafeBytes(of: client) { SocketAddress(sockaddr: $0.baseAddress!) }
    }
}
