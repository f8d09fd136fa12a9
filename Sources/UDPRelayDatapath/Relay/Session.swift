import CUDPRelay
import UDPRelayConfig

#if canImport(Glibc)
import Glibc
#endif

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
    /// Bytes sent to the upstream and forwarded to the client, and when the session opened
    /// (monotonic nanoseconds): what its record says when it ends (`session_log`).
    var requestBytes: UInt64 = 0
    var replyBytes: UInt64 = 0
    var started: UInt64 = 0
    var key = ClientKey(high: 0, low: 0, rest: 0)
    /// The client's address (an IPv4 `sockaddr_in` fits): the destination of replies.
    var client = sockaddr_in6()
    var clientLength: socklen_t = 0
    /// The address the client sent to, on wildcard listeners: replies leave from it. Family 0
    /// when not needed.
    var local = sockaddr_in6()
    /// Slot of its upstream in the upstream table (an entry, or one address of a hostname entry:
    /// a few thousand at most). Here and `held` last, where they fit in the padding
    /// of the fields above, so the record does not grow.
    var upstream: UInt16 = 0
    /// The local port of its socket (the source port the upstream sees), for its record; 0
    /// when not looked up (`session_log` off).
    var sourcePort: UInt16 = 0
    /// Closed, but its socket is held for a while (see `RelayWorker`): replies are dropped.
    var held = false
    /// `accept_proxy_protocol`: the client's datagrams came through a proxy, with a PROXY header
    /// naming `client`; replies go to the proxy, which the worker keeps beside the table (see
    /// `RelayWorker.sessionProxies`; the record stays the same size).
    var proxied = false

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

    /// Sets the client's address and, on wildcard listeners, the address and interface replies
    /// leave from (`local` nil: the listener's own address): the addresses of a session handed
    /// over from another worker or process, as `setAddresses(from:packetInfo:)` takes them from
    /// a received message.
    mutating func setAddresses(client address: SocketAddress, local localAddress: SocketAddress?, interface: UInt32) {
        (client, clientLength) = Self.stored(address)
        local = sockaddr_in6()
        ifindex = 0
        if let localAddress {
            local = Self.stored(localAddress).address
            ifindex = interface
        }
    }

    /// `address` in the form the session stores (an IPv4 `sockaddr_in` in the first bytes).
    static func stored(_ address: SocketAddress) -> (address: sockaddr_in6, length: socklen_t) {
        var (storage, length) = address.storage()
        var out = sockaddr_in6()
        withUnsafeMutableBytes(of: &out) { dst in
            withUnsafeBytes(of: &storage) { dst.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[..<dst.count])) }
        }
        return (out, length)
    }

    /// The client's address, for logs.
    var clientAddress: SocketAddress? {
        withUnsafeBytes(of: client) { SocketAddress(sockaddr: $0.baseAddress!) }
    }

    /// The address replies leave from, when it is not the listener's own (wildcard listeners).
    var localAddress: SocketAddress? {
        guard local.sin6_family != 0 else { return nil }
        return withUnsafeBytes(of: local) { SocketAddress(sockaddr: $0.baseAddress!) }
    }
}

/// A relay session on its way from one worker to another (a reload that rebuilds its
/// listener) or to the next process (a restart, through systemd's descriptor store): what it
/// is, as the session archive carries it, and its connected upstream socket, which stays open
/// the whole way so the upstream keeps seeing the same source port. Whoever holds one owns
/// `fd` and must pass it on or close it.
public struct HandedOverSession: Sendable {
    public var entry: SessionArchive.Entry
    public var fd: Int32
    /// The kernel's drop count of the socket (SO_RXQ_OVFL) last seen, so that drops already
    /// counted are not counted again; 0 when not known (from an archive), and the socket's
    /// earlier drops then count once more on its first reply.
    public var kernelDrops: UInt32

    public init(entry: SessionArchive.Entry, fd: Int32, kernelDrops: UInt32? = nil) {
        self.entry = entry
        self.fd = fd
        self.kernelDrops = kernelDrops ?? entry.kernelDrops
    }
}
