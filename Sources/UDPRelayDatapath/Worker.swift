import CUDPRelay
import Dispatch
import Logging
import UDPRelayConfig

#if canImport(Glibc)
import Glibc
#endif

/// A worker serves one socket on its own serial queue: a Dispatch read source on the socket
/// (echo) or on the wait set that holds it (relay, mirror) wakes it, and it then serves on that thread in turns of the read loop (`serveTurn`, see
/// `WaitSet`). Subclasses process batches (`receiveBatch`) and, for relay and mirror, their
/// own sockets in the wait set (`memberReady`); this base owns the descriptor, the queue, the
/// wait set, the sources and the counters, and closes the descriptors only in the sources'
/// cancel handlers.
///
/// @unchecked Sendable: all mutable state is touched only on `queue` (checked with
/// `dispatchPrecondition`); the rest is immutable after init.
public class SocketWorker: @unchecked Sendable {
    public let fd: Int32
    public let localAddress: SocketAddress
    public let queue: DispatchQueue
    public let counters = CounterSet()
    /// Abuse protection applied to every datagram received on `fd`. Installed before `start`,
    /// afterwards touched only on `queue`.
    var filter = IngressFilter(ProtectionConfiguration(denySourcePorts: PortSet(), loopGuard: false)) {
        didSet {
            // `accept_proxy_protocol`: the buffers `stripProxyHeader` uses, once per worker.
            guard filter.acceptsProxyHeaders, proxyPeers == nil else { return }
            proxyPeers = .allocate(capacity: tuning.batchSize)
            proxyPeers!.initialize(repeating: sockaddr_storage(), count: tuning.batchSize)
            proxyClient = .allocate(capacity: 1)
            proxyClient!.initialize(to: sockaddr_storage())
        }
    }
    /// Where refused datagrams are reported (`noteDrop`); installed with `filter`.
    var dropLogger: Logger?
    /// Per drop reason (indexed by `Counter.rawValue`): the first refusal is logged at once,
    /// then at most one line a minute (`tuning.refusalLogInterval`) with the number refused in
    /// between.
    private var dropLogs: [LogLimiter]
    /// The read source: on the listener (echo) or on the wait set (relay, mirror; see `start`).
    private var source: DispatchSourceRead?
    /// Only when the listener could not join the wait set of a relay or mirror worker: a second
    /// source, on the wait set, while `source` stays on the listener.
    private var membersSource: DispatchSourceRead?
    private let closed = DispatchGroup()
    /// The epoll set the read loop waits in: the listener (echo: during a turn), and the
    /// subclass's sockets (`hasMembers`), tagged by the subclass.
    let waitSet: WaitSet
    let tuning: DatapathTuning
    /// `busy_poll` in nanoseconds: spin this long after the last datagram before sleeping in
    /// the wait set. 0 (the default) sleeps at once.
    let busyPoll: UInt64
    /// The listener socket until `start` hands it to the read source's cancel handler, or
    /// `stop`/`discard` close it (a worker that never served); freed with the worker otherwise.
    private var socket: SocketDescriptor?
    /// The kernel's drop count of `fd` last seen (SO_RXQ_OVFL).
    private var kernelDrops: UInt32 = 0

    /// Takes ownership of `fd` on success; on failure (no epoll set) `fd` stays the caller's.
    init(fd: Int32, localAddress: SocketAddress, label: String, tuning: DatapathTuning, busyPoll: Duration) throws(SyscallError) {
        self.waitSet = try WaitSet()
        self.fd = fd
        self.socket = SocketDescriptor(fd)
        self.localAddress = localAddress
        self.tuning = tuning
        self.dropLogs = [LogLimiter](
            repeating: LogLimiter(lines: 1, per: .nanoseconds(Int64(tuning.refusalLogInterval))),
            count: Counter.allCases.count)
        self.busyPoll = busyPoll.nanoseconds
        self.queue = DispatchQueue(label: label, qos: .userInteractive)
    }

    deinit {
        proxyPeers?.deallocate()
        proxyClient?.deallocate()
    }

    /// Whether the subclass keeps sockets of its own in the wait set (then the set gets a read
    /// source too).
    var hasMembers: Bool { false }

    /// Whether the listener is a member of the wait set for good (relay and mirror), rather
    /// than only during turns (echo).
    private(set) var listenerAlwaysInSet = false

    /// Starts reading; `registered` runs once the sources are armed.
    ///
    /// Echo: one read source, on the listener socket. Relay and mirror: the listener joins the
    /// wait set for good and the one read source is the wait set's, so a turn runs with no
    /// other source armed. (With a second source armed, every datagram served during a turn
    /// also woke libdispatch's event thread, which then found the socket already read: context
    /// switches for nothing, on the order of one per datagram at everyday rates.) Should the
    /// listener fail to join (no memory for the epoll entry), it keeps a source of its own.
    func start(registered: DispatchGroup) {
        guard let fd = socket.take()?.take(), let waitFD = waitSet.handOver() else {
            preconditionFailure("worker for \(localAddress) started twice or after stop")
        }
        // From here the cancel handlers own both descriptors.
        listenerAlwaysInSet = hasMembers && (try? waitSet.add(fd, tag: WaitSet.listenerTag)) != nil
        let (closed, permanent) = (self.closed, listenerAlwaysInSet)
        let source = DispatchSource.makeReadSource(fileDescriptor: permanent ? waitFD : fd, queue: queue)
        registered.enter()
        closed.enter()
        source.setRegistrationHandler { registered.leave() }
        source.setEventHandler { [unowned self] in serveTurn(holding: true) }
        let closesWaitSet = permanent || !hasMembers
        source.setCancelHandler {
            Syscall.close(fd)
            if closesWaitSet { Syscall.close(waitFD) }
            closed.leave()
        }
        self.source = source
        if hasMembers && !permanent {
            let members = DispatchSource.makeReadSource(fileDescriptor: waitFD, queue: queue)
            registered.enter()
            closed.enter()
            members.setRegistrationHandler { registered.leave() }
            members.setEventHandler { [unowned self] in serveTurn(holding: true) }
            members.setCancelHandler {
                Syscall.close(waitFD)
                closed.leave()
            }
            membersSource = members
            members.activate()
        }
        source.activate()
    }

    /// Stops reading and closes the socket, then the subclass's sockets (`stopMembers`) and the
    /// wait set; `done` is left after all are closed. Datagrams already queued on the sockets
    /// are served first (one last pass of the read loop, which does not wait), so a listener
    /// removed or replaced by a reload drains instead of dropping them.
    func stop(done: DispatchGroup) {
        done.enter()
        submit { [self] in
            if let source {
                serveTurn(holding: false)
                source.cancel()
                self.source = nil
                stopMembers()
                membersSource?.cancel()
                membersSource = nil
                closed.notify(queue: .global()) { done.leave() }
            } else {
                socket.take()?.close()
                stopMembers()
                waitSet.close()
                done.leave()
            }
        }
    }

    /// Closes the sockets of a worker that never started (its listener was abandoned before
    /// serving); does nothing for one that started (the read source closes them) or was
    /// stopped. Runs on the caller's thread: nothing else touches a worker that never started.
    func discard() {
        socket.take()?.close()
        waitSet.close()
    }

    /// Runs on `queue` in `stop`, after the listener's last pass: closes the subclass's own
    /// sockets and timers (closing a descriptor takes it out of the wait set).
    func stopMembers() {}

    /// Runs on `queue` at the start of each turn of the read loop.
    func turnStarted() {}

    /// Runs on `queue` after each wait of a turn, with the time: for work due on a schedule
    /// (the relay's session expiry) while a turn holds the thread.
    func turnTick(_ now: UInt64) {}

    /// Runs `work` on the worker's queue soon: rings the wait set's doorbell, so a turn in
    /// progress returns after its current batch instead of at `tuning.turnLimit`. Every block
    /// other threads queue on a worker goes through here (or `submitAndWait`).
    final func submit(_ work: @escaping @Sendable () -> Void) {
        queue.async(execute: work)
        waitSet.ring()
    }

    /// Runs `work` on the worker's queue and returns its result, ringing the doorbell first.
    final func submitAndWait<T>(_ work: () throws -> T) rethrows -> T {
        waitSet.ring()
        return try queue.sync(execute: work)
    }

    /// One `recvmmsg` on the listener and what follows: the datagrams received, 0 when the
    /// socket was empty, nil after an error. Runs on `queue`. Subclasses override.
    func receiveBatch() -> Int? {
        fatalError("subclass must override")
    }

    /// A member of the wait set added with `tag` is readable. Runs on `queue`.
    func memberReady(_ tag: UInt64) {}

    /// Replaces what the loop guard knows about this daemon's listeners and this host.
    func setLoopContext(_ context: LoopContext) {
        submit { [self] in filter.setLoopContext(context) }
    }

    /// Runs `reply` on the worker's queue: a liveness probe that a wedged queue never answers.
    public func ping(_ reply: @escaping @Sendable () -> Void) {
        submit(reply)
    }

    /// One `recvmmsg` on the listener socket into `batch`, after resetting the `lastCount`
    /// slots the previous call filled: the datagrams received, 0 when the socket is empty, nil
    /// after an error (counted as `receive_errors`; the wait set and the read source report the
    /// socket again only while it is still readable, and a failed call consumes a pending
    /// socket error, so an error cannot spin).
    @inline(__always)
    final func receive(into batch: MessageBatch, resetting lastCount: Int) -> Int? {
        do {
            let received = try batch.receive(from: fd, resetting: lastCount)
            if let drops = batch.kernelDrops(received), drops != kernelDrops {
                counters.add(.dropReceiveBufferFull, UInt64(drops &- kernelDrops))
                kernelDrops = drops
            }
            return received
        } catch {
            counters.add(.receiveErrors)
            return nil
        }
    }

    /// Whether datagram `i` of `batch` may be served. A source the ingress filter refuses is
    /// counted under the filter's reason, then a datagram cut short by the buffer as
    /// `drop_too_large`; either is skipped. Every mode applies this one policy, in this order.
    ///
    /// First, with `accept_proxy_protocol`, a datagram from a `proxy_protocol_from` source must
    /// start with a PROXY v2 header (`stripProxyHeader`): the header is taken off and, for
    /// command PROXY, its source becomes the datagram's source (the client) for everything
    /// after, while the proxy's own address is kept in `proxyPeer(i)` for replies.
    @inline(__always)
    final func admits(_ batch: MessageBatch, _ i: Int, now: UInt64) -> Bool {
        if filter.acceptsProxyHeaders, !stripProxyHeader(batch, i) { return false }
        let source = SocketAddress(sockaddr: batch.names + i)
        if let source, let reason = filter.check(source, payload: batch.payload(i), now: now) {
            counters.add(reason)
            noteDrop(reason, from: source)
            return false
        }
        if batch.messages[i].msg_hdr.msg_flags & CUR_MSG_TRUNC != 0 {
            counters.add(.dropTooLarge)
            if let source { noteDrop(.dropTooLarge, from: source) }
            return false
        }
        return true
    }

    /// `accept_proxy_protocol`: where the real source of each datagram of the batch that
    /// carried a PROXY header is kept (family 0 for the others), one slot per message of a
    /// listener batch (`tuning.batchSize`); nil when off.
    private var proxyPeers: UnsafeMutablePointer<sockaddr_storage>?
    /// Where the parser writes a header's source, before it replaces the datagram's.
    private var proxyClient: UnsafeMutablePointer<sockaddr_storage>?

    /// The real source (the proxy) of datagram `i` of the last batch when its PROXY header named
    /// the client that now stands in `batch.names[i]`; nil otherwise. Replies go here.
    @inline(__always)
    final func proxyPeer(_ i: Int) -> UnsafeMutablePointer<sockaddr_storage>? {
        guard let proxyPeers, proxyPeers[i].ss_family != 0 else { return nil }
        return proxyPeers + i
    }

    /// Makes datagram `i` of `batch` what it would be had the client sent it directly, when its
    /// source is a trusted proxy (`proxy_protocol_from`): the PROXY v2 header is parsed in place
    /// (never past the bytes received) and skipped by moving the slot's iovec past it; for
    /// command PROXY the header's source replaces the slot's address and the real one goes to
    /// `proxyPeer(i)`; for LOCAL the real source stands. A source not in the list is left as it
    /// came. Returns false for a missing or malformed header, counted as
    /// `proxy_header_invalid`. Allocates nothing.
    @inline(__always)
    private func stripProxyHeader(_ batch: MessageBatch, _ i: Int) -> Bool {
        guard let peers = proxyPeers, let client = proxyClient, i < tuning.batchSize else { return false }
        peers[i].ss_family = 0
        guard let real = SocketAddress(sockaddr: batch.names + i), filter.isTrustedProxy(real) else { return true }
        let m = batch.messages + i
        let data = batch.iovecs[i].iov_base!
        let length = ProxyHeaderParser.parse(data, count: min(Int(m.pointee.msg_len), batch.bufferSize), source: client)
        guard length >= 0 else {
            counters.add(.dropProxyHeaderInvalid)
            noteDrop(.dropProxyHeaderInvalid, from: real)
            return false
        }
        batch.iovecs[i].iov_base = data + length
        m.pointee.msg_len -= UInt32(length)
        guard client.pointee.ss_family != 0 else { return true }
        peers[i] = batch.names[i]
        batch.names[i] = client.pointee
        m.pointee.msg_hdr.msg_namelen = RawSockaddr.length(client)
        return true
    }

    /// Puts back the real source of datagram `i` (the proxy) when a PROXY header replaced it:
    /// echo answers the datagram's sender, not the client the header named.
    @inline(__always)
    final func restoreProxySender(_ batch: MessageBatch, _ i: Int) {
        guard let peer = proxyPeer(i) else { return }
        batch.names[i] = peer.pointee
        batch.messages[i].msg_hdr.msg_namelen = RawSockaddr.length(peer)
    }

    /// Logs a refused datagram: the first of each reason at once, then at most once a minute
    /// with the number refused since the last line (so nothing is refused silently, and no
    /// flood becomes a flood of log lines). A count that no later refusal carries is written
    /// when its minute ends (`flushDropLog`), so a burst that stops is reported too. Runs on
    /// `queue`.
    @inline(__always)
    final func noteDrop(_ reason: Counter, from source: SocketAddress) {
        guard let dropLogger else { return }
        let now = SystemClock.coarseMonotonicNanos()
        guard let skipped = dropLogs[reason.rawValue].admit(now: now) else {
            // The first refusal left out in this window: have its count written when the window
            // ends (one timer per reason and window, not per datagram).
            if dropLogs[reason.rawValue].suppressed == 1 {
                let end = dropLogs[reason.rawValue].windowEnd
                // The coarse clock ticks every few ms: a margin so the window is surely over.
                let wait = (end > now ? end - now : 0) + 20_000_000
                queue.asyncAfter(deadline: .now() + .nanoseconds(Int(min(wait, UInt64(Int.max))))) { [weak self] in
                    self?.flushDropLog(reason)
                }
            }
            return
        }
        dropLogger.notice(
            "datagram refused",
            metadata: [
                "drop.reason": "\(reason.name)", "peer.address": "\(source.unmapped)",
                "listener.address": "\(localAddress)", "refused.since_last": "\(skipped)",
                "hint": "\(Self.dropHint(reason))",
            ])
    }

    /// The end of a refusal-log window: the refusals of `reason` left out since the last line,
    /// if no line has carried them yet, in one line of their own. Runs on `queue`.
    private func flushDropLog(_ reason: Counter) {
        dispatchPrecondition(condition: .onQueue(queue))
        guard let dropLogger, let count = dropLogs[reason.rawValue].flush(now: SystemClock.coarseMonotonicNanos()) else { return }
        dropLogger.notice(
            "datagrams refused since the last line",
            metadata: [
                "drop.reason": "\(reason.name)", "listener.address": "\(localAddress)",
                "refused.since_last": "\(count)", "hint": "\(Self.dropHint(reason))",
            ])
    }

    static func dropHint(_ reason: Counter) -> String {
        switch reason {
        case .dropSourcePort: "the source port is in deny_source_ports (to allow it, e.g. 123 for NTP, set deny_source_ports without it)"
        case .dropLoop: "the source (for a relay: the upstream) is this daemon, or a server on this host answering it (loop guard)"
        case .dropDenied: "not allowed by allow/deny"
        case .dropRateLimited: "the source is over rate_limit"
        case .dropRateLimitedTotal: "the listener is over rate_limit_total"
        case .dropTooLarge: "larger than max_datagram"
        case .dropProxyHeaderInvalid: "from a proxy_protocol_from source without a valid PROXY v2 header"
        default: "refused"
        }
    }

    /// Counts a received batch of `count` datagrams and `bytes` bytes, and what the ingress
    /// rate limiter evicted while checking it.
    @inline(__always)
    final func countReceived(_ count: Int, bytes: UInt64) {
        counters.add(.receivedPackets, UInt64(count))
        counters.add(.receivedBytes, bytes)
        if filter.needsClock { counters.add(.rateLimitEvictions, filter.newEvictions()) }
    }
}
