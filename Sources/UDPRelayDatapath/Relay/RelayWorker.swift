import CUDPRelay
import Dispatch
import Logging
import UDPRelayConfig

#if canImport(Glibc)
import Glibc
#endif

/// `forward` and `balance`: datagrams from each client go to that client's session socket;
/// replies go back to the client from the listener's socket. Everything (listener socket,
/// session sockets, the expiry timer) runs on the one serial queue of this worker.
///
/// Sessions live in a `SessionTable` (slots, LRU order, held sockets); this worker opens their
/// sockets, registers them for epoll, counts and logs. Session sockets sit in the worker's wait
/// set (see `WaitSet`), tagged with their slot and generation, beside the listener socket; the
/// set's descriptor has the worker's one Dispatch read source (instead of a source per
/// session): a session costs a slot in a flat array instead of a source, two closures and
/// three objects. A wakeup runs a turn of the read loop, which serves requests and replies as
/// a plain epoll loop would.
///
/// A session that is evicted, expires or reaches `session_max_replies` keeps its socket, out of
/// the table, for `closedSessionHold` (2 s), and no held socket is closed before that. A closed
/// UDP port is free for the next `connect`, so without the hold a reply still on its way to an
/// evicted session could reach whichever new session the kernel gave that port, and so the
/// wrong client. Held, such a reply is read and counted as `replies_ignored`. Live and held
/// sockets together stay within the table's `budget`; when it, the descriptors or the ports run
/// out, new clients are refused (`no_session`, `session_errors`) rather than served on a port
/// that may still receive another client's replies.
///
/// Hot path: one `recvmmsg` fills the listener batch; datagrams are grouped by session and
/// each group goes out through `DatagramSender` (one segmented send per equal-sized run, the
/// rest with `sendmmsg`); replies are read with `recvmmsg` and sent back the same way. Session
/// lookup hashes a fixed-size key. Nothing allocates per datagram; opening a session may (the
/// session array and tables grow).
final class RelayWorker: SocketWorker, @unchecked Sendable {
    // @unchecked: as SocketWorker, all mutable state is confined to `queue`.
    private let batch: MessageBatch
    private let replyBatch: MessageBatch
    /// Send vector: messages of one group are copied here (pointing at the same buffers).
    private let scratch: UnsafeMutablePointer<cur_mmsghdr>
    /// Per received message: its session slot, -1 when dropped or already sent.
    private let sessionOf: UnsafeMutablePointer<Int32>
    /// Sends runs of datagrams to one destination (segmented where it applies).
    private var sender: DatagramSender
    /// `proxy_protocol = v2`: the header in front of every datagram to an upstream (one per
    /// group, written from the session's addresses); nil when off.
    private let proxyHeaders: ProxyHeaders?
    /// Replies: the client address and packet-info control data of the session being served.
    private let replyName: UnsafeMutablePointer<sockaddr_in6>
    private let replyControl: UnsafeMutableRawPointer
    let usesPacketInfo: Bool
    private let controlCapacity: Int
    let upstreams: UpstreamTable
    let upCounters: [UpstreamCounterSet]
    let logger: Logger

    var sessions: SessionTable
    private var balancer: Balancer
    private var timer: DispatchSourceTimer?
    /// When `expireIdle` last ran (monotonic nanoseconds).
    private var lastExpiry: UInt64 = 0
    /// Slots of `batch` and `replyBatch` the last `recvmmsg` filled, to be reset before the next
    /// (not the whole batch per wakeup: at one datagram in flight that is every slot per datagram).
    private var listenerFilled: Int
    private var repliesFilled: Int
    /// `accept_proxy_protocol`: per slot, the proxy the client of a session with `proxied` set
    /// came through (replies go there); written when such a session opens.
    private var sessionProxies: [sockaddr_in6] = []
    /// Opening session sockets fails (logged once until it works again).
    private var sessionSocketFailing = false
    /// `transparent = yes`: each session socket is bound to its client's address and port.
    let transparent: Bool
    /// Transparent binds that fail (another socket has the client's address and port for the
    /// same upstream: the same client through another listener): at most 4 lines in 10 s.
    private var transparentLogs = LogLimiter(lines: 4, per: .seconds(10))
    /// Session events clients cause are logged at most 20 a second each (opened, closed: debug),
    /// and the start and end of a shortage of session sockets at most 4 times in 10 s.
    private var sessionLogs = (
        opened: LogLimiter(lines: 20, per: .seconds(1)), closed: LogLimiter(lines: 20, per: .seconds(1)),
        episodes: LogLimiter(lines: 4, per: .seconds(10))
    )
    /// `session_log`: the records of ended sessions, at most `session_log_rate` a second (see
    /// `recordSessionEnd`); nil when off.
    var sessionRecords: LogLimiter?
    /// The listener's `rcvbuf`/`sndbuf`, applied to every session socket; whether the FORCE
    /// options work (see `UDPSocket.setBuffers(_:receive:send:force:)`).
    let receiveBuffer: Int
    let sendBuffer: Int
    var forceBuffers = true
    /// `[listener NAME]`, for the sessions handed over.
    let listenerName: String
    /// Set by `handSessionsOverAtStop`: where `stopMembers` sends the live sessions instead of
    /// closing them, and which of the listener's sockets they are recorded under.
    var handOverAtStop: (socket: UInt16, sink: @Sendable ([HandedOverSession]) -> Void)?
    init(
        fd: Int32, localAddress: SocketAddress, label: String, configuration: ListenerConfiguration,
        upstreams: UpstreamTable, workerIndex: Int, tuning: DatapathTuning, logger: Logger
    ) throws(SyscallError) {
        // On failure `fd` stays the caller's to close.
        self.usesPacketInfo = localAddress.ip.isWildcard
        self.controlCapacity = (cur_pktinfo_space() + 7) & ~7
        self.batch = MessageBatch(capacity: tuning.batchSize, bufferSize: configuration.maxDatagram, withControl: localAddress.ip.isWildcard)
        self.replyBatch = MessageBatch(capacity: tuning.batchSize, bufferSize: 65535, withControl: false)
        self.listenerFilled = tuning.batchSize
        self.repliesFilled = tuning.batchSize
        self.scratch = .allocate(capacity: tuning.batchSize)
        self.scratch.initialize(repeating: cur_mmsghdr(), count: tuning.batchSize)
        self.sessionOf = .allocate(capacity: tuning.batchSize)
        self.sessionOf.initialize(repeating: -1, count: tuning.batchSize)
        self.replyName = .allocate(capacity: 1)
        self.replyName.initialize(to: sockaddr_in6())
        self.replyControl = .allocate(byteCount: controlCapacity, alignment: 8)
        // Each datagram carries its own header, so none go out as one segmented send.
        self.sender = DatagramSender(segmentation: configuration.segmentation && configuration.proxyProtocol == .off)
        self.proxyHeaders = configuration.proxyProtocol == .v2 ? ProxyHeaders(capacity: tuning.batchSize, listener: localAddress) : nil
        self.sessions = SessionTable(settings: configuration.sessions, holdNanos: tuning.closedSessionHold)
        self.receiveBuffer = configuration.receiveBuffer
        self.sendBuffer = configuration.sendBuffer
        self.listenerName = configuration.name
        self.transparent = configuration.transparent
        if configuration.transparent {
            // The self-test where the listener opens (the configuration's was at load): a
            // scratch socket must take the option, or the listener does not start.
            let scratch = SocketDescriptor(try UDPSocket.open(family: localAddress.family))
            try UDPSocket.makeTransparent(scratch.rawValue, family: localAddress.family)
            scratch.close()
        }
        if configuration.sessions.log { self.sessionRecords = LogLimiter(lines: configuration.sessions.logRate, per: .seconds(1)) }
        self.upstreams = upstreams
        self.upCounters = upstreams.counters[workerIndex]
        self.balancer = upstreams.makeBalancer(
            algorithm: configuration.mode == .balance ? configuration.balance : .first, hashKey: configuration.hashKey)
        var log = logger
        log[metadataKey: "listener.name"] = "\(configuration.name)"
        self.logger = log
        try super.init(fd: fd, localAddress: localAddress, label: label, tuning: tuning, busyPoll: configuration.busyPoll)
    }

    deinit {
        scratch.deallocate()
        sessionOf.deallocate()
        replyName.deallocate()
        replyControl.deallocate()
        sender.deallocate()
        proxyHeaders?.deallocate()
    }

    override var hasMembers: Bool { true }

    /// How often idle sessions are looked for: often enough that a session lives at most about
    /// 1/4 longer than its timeout, at least every 5 ms, at most every second.
    var expiryInterval: UInt64 { min(max(sessions.timeoutNanos / 4, 5_000_000), 1_000_000_000) }

    /// The expiry timer runs while no turn holds the thread; a turn that does runs the expiry
    /// itself when it is due, instead of ending so the timer can.
    override func turnTick(_ now: UInt64) {
        if now &- lastExpiry >= expiryInterval { expireIdle(now: now) }
    }

    /// Starts the read source (on the wait set) and the expiry timer.
    override func start(registered: DispatchGroup) {
        // Hostnames: what resolved in time (at most `UpstreamTable.resolveWait` after the
        // listener was made, however many names hang).
        upstreams.awaitInitialResolution()
        super.start(registered: registered)
        submit { [self] in
            let t = DispatchSource.makeTimerSource(queue: queue)
            let every = expiryInterval
            t.schedule(deadline: .now() + .nanoseconds(Int(every)), repeating: .nanoseconds(Int(every)), leeway: .nanoseconds(Int(every / 10)))
            t.setEventHandler { [unowned self] in expireIdle(now: SystemClock.monotonicNanos()) }
            timer = t
            t.activate()
        }
    }

    /// After the listener's last pass (which may still forward datagrams): closes every session,
    /// or hands the live ones over (see `handSessionsOverAtStop`) and closes the held ones.
    override func stopMembers() {
        timer?.cancel()
        timer = nil
        if let handOver = handOverAtStop {
            handOverAtStop = nil
            handOver.sink(takeSessions(socket: handOver.socket))
        }
        for slot in sessions.liveSlots { closeSession(slot, .shutdown, now: SystemClock.monotonicNanos()) }
        sessions.releaseAllHeld()
        flushSessionRecordsAtStop()
    }

    // MARK: client -> upstream

    /// A session socket in the wait set is readable (replies or an error), or a held one (a late
    /// reply). A session closed earlier in this round (its slot free or reused) is skipped.
    override func memberReady(_ tag: UInt64) {
        guard let slot = sessions.slot(forTag: tag) else { return }
        if sessions.isHeld(slot) { drainHeld(slot) } else { upstreamReadable(slot) }
    }

    /// One `recvmmsg` on the listener, forwarded: the datagrams read, 0 when none, nil on error.
    override func receiveBatch() -> Int? {
        guard let received = receive(into: batch, resetting: listenerFilled) else { return nil }
        guard received > 0 else { return 0 }
        listenerFilled = received
        forward(received, now: SystemClock.monotonicNanos())
        return received
    }

    @inline(__always)
    private func forward(_ count: Int, now: UInt64) {
        var bytes: UInt64 = 0
        var pending = 0
        for i in 0..<count {
            let m = batch.messages + i
            bytes &+= UInt64(m.pointee.msg_len)
            sessionOf[i] = -1
            guard admits(batch, i, now: now), let key = ClientKey(sockaddr: batch.names + i) else { continue }
            m.pointee.msg_hdr.msg_iov.pointee.iov_len = Int(m.pointee.msg_len)
            if let slot = sessions.lookup(key, now: now) {
                sessionOf[i] = slot
                continue
            }
            // The new socket first: a client refused for want of a port or a descriptor must
            // not cost another client its session.
            let socket: (fd: Int32, upstream: Int)
            switch openSessionSocket(key: key, client: batch.names + i, clientLength: m.pointee.msg_hdr.msg_namelen, now: now) {
            case .opened(let fd, let upstream): socket = (fd, upstream)
            case .failed:
                counters.add(.dropNoSession)
                continue
            case .loop: continue  // counted as `loop` where it was found
            }
            if sessions.isFull {
                // Send what is queued first: it may belong to the session about to be evicted.
                sendGroups(from: pending, to: i)
                pending = i
                if let evicted = sessions.evictLeastRecentlyUsed(now: SystemClock.monotonicNanos()) { sessionClosed(evicted, .evicted) }
            }
            if let slot = addSession(socket, key: key, message: m, proxy: proxyPeer(i), now: now) {
                sessionOf[i] = slot
            } else {
                counters.add(.dropNoSession)
            }
        }
        countReceived(count, bytes: bytes)
        sendGroups(from: pending, to: count)
    }

    /// Sends messages `start..<end` to their sessions, one `DatagramSender` call per session.
    @inline(__always)
    private func sendGroups(from start: Int, to end: Int) {
        var i = start
        while i < end {
            let slot = sessionOf[i]
            guard slot >= 0, sessions.isLive(slot) else {
                i += 1
                continue
            }
            if let proxyHeaders { writeProxyHeader(proxyHeaders, for: slot) }
            var n = 0
            for j in i..<end where sessionOf[j] == slot {
                scratch[n] = batch.messages[j]
                scratch[n].msg_hdr.msg_name = nil
                scratch[n].msg_hdr.msg_namelen = 0
                scratch[n].msg_hdr.msg_control = nil
                scratch[n].msg_hdr.msg_controllen = 0
                proxyHeaders?.prepend(0, to: &scratch[n].msg_hdr, slot: n)
                n += 1
                sessionOf[j] = -1
            }
            sendToUpstream(slot, count: n)
            i += 1
        }
    }

    /// Writes the PROXY v2 header of the session in `slot` (its client, and the address the
    /// client sent to) as header 0 of `proxy`, in front of each datagram of its group.
    @inline(__always)
    private func writeProxyHeader(_ proxy: ProxyHeaders, for slot: Int32) {
        let session = sessions[slot]
        withUnsafeBytes(of: session.client) { client in
            guard session.local.sin6_family != 0 else {
                proxy.write(0, client: client.baseAddress!, local: nil)
                return
            }
            withUnsafeBytes(of: session.local) { proxy.write(0, client: client.baseAddress!, local: $0.baseAddress!) }
        }
    }

    @inline(__always)
    private func sendToUpstream(_ slot: Int32, count: Int) {
        let session = sessions[slot]
        let up = upCounters[Int(session.upstream)]
        var failure: Int32 = 0
        let outcome = sender.send(fd: session.fd, scratch, count: count, oneDestination: true) { err, n in
            // Counted once, on the upstream: the listener's drop reasons are for datagrams
            // dropped before an upstream was chosen or on the way back to clients.
            up.add(.sendDrops, UInt64(n))
            if ErrorPolicy.isUpstreamFailure(errno: err) { failure = err }
        }
        up.add(.sentPackets, UInt64(outcome.sent))
        up.add(.sentBytes, outcome.bytes)
        sessions.recordRequests(slot, outcome.sent, bytes: outcome.bytes)
        if failure != 0 { upstreamFailed(slot, errno: failure, now: SystemClock.monotonicNanos()) }
    }

    // MARK: sessions

    /// What `openSessionSocket` got for a new client.
    private enum SessionSocket {
        /// A connected socket on upstream `upstream`.
        case opened(fd: Int32, upstream: Int)
        /// None (counted as `session_errors`): no address, connect failed, out of room.
        case failed
        /// The upstream is a relay listener of this daemon (counted as `loop`).
        case loop
    }

    /// Opens and connects a socket for a new session on the upstream the balancer picks, or
    /// fails (counted as `session_errors`) when it cannot: no address, the upstream's connect
    /// failed, or this worker is out of sockets (the table's budget), descriptors or ports.
    /// Held sockets are never closed before their hold is over to make room: their port could
    /// be handed to this session, and a late reply meant for the held session's client would
    /// then reach this one's. An upstream that is a relay listener of this daemon is a loop:
    /// the datagram is dropped and counted as `loop`.
    ///
    /// `transparent = yes`: the socket is bound to the client's own address and port (`client`,
    /// as received) before it connects. A held socket of the same client's earlier session is
    /// released first (it has that address and port; see `SessionTable.releaseHeld(of:)`).
    private func openSessionSocket(
        key: ClientKey, client: UnsafeMutablePointer<sockaddr_storage>, clientLength: socklen_t, now: UInt64
    ) -> SessionSocket {
        if transparent { sessions.releaseHeld(of: key) }
        guard sessions.makeRoom(now: SystemClock.monotonicNanos()) else {
            sessionSocketsFail(nil)
            return .failed
        }
        let pick = upstreams.pick(&balancer, clientHash: balancer.clientHash(key), now: now)
        if pick.failOpen { counters.add(.failOpen) }
        guard let address = upstreams.address(pick.index) else {
            counters.add(.sessionErrors)
            return .failed
        }
        // An upstream that is a relay listener of this daemon is a loop (counted as one).
        if filter.isOwnRelayListener(address) {
            counters.add(.dropLoop)
            noteDrop(.dropLoop, from: address)
            return .loop
        }
        // Closed on every way out but the last, which hands it to the session.
        let socket: SocketDescriptor
        do {
            socket = SocketDescriptor(
                try sessions.opening(now: SystemClock.monotonicNanos()) { () throws(SyscallError) in
                    try UDPSocket.open(family: address.family)
                })
        } catch {
            sessionSocketsFail(error)
            return .failed
        }
        let fd = socket.rawValue
        // The listener's buffer sizes (a burst of large replies must not overflow the kernel
        // default of 208 KiB), and the kernel's drop count on every reply.
        UDPSocket.setBuffers(fd, receive: receiveBuffer, send: sendBuffer, force: &forceBuffers)
        UDPSocket.enableDropCount(fd)
        if transparent {
            do {
                try UDPSocket.makeTransparent(fd, family: address.family)
                try UDPSocket.bind(fd, toRaw: client, length: clientLength)
            } catch {
                socket.close()
                transparentBindFailed(error, client: client)
                return .failed
            }
        }
        do {
            try sessions.opening(now: SystemClock.monotonicNanos()) { () throws(SyscallError) in try UDPSocket.connect(fd, to: address) }
        } catch {
            socket.close()
            if SessionTable.isLocalShortage(error.errno) {
                sessionSocketsFail(error)
            } else {
                counters.add(.sessionErrors)
                upCounters[pick.index].add(.failures)
                upstreams.recordFailure(pick.index, now: now, errno: error.errno)
            }
            return .failed
        }
        return .opened(fd: socket.take(), upstream: pick.index)
    }

    /// Makes a session of a socket from `openSessionSocket` for the client of message `m`:
    /// a slot, the client's addresses, the epoll set. Returns the slot, or nil (counted).
    private func addSession(
        _ socket: (fd: Int32, upstream: Int), key: ClientKey,
        message m: UnsafeMutablePointer<cur_mmsghdr>, proxy: UnsafeMutablePointer<sockaddr_storage>?, now: UInt64
    ) -> Int32? {
        if sessionSocketFailing {
            sessionSocketFailing = false
            if let skipped = sessionLogs.episodes.admit(now: now) {
                logger.notice("session sockets open again", metadata: ["sessions.active": "\(sessions.liveCount)", "log.suppressed": "\(skipped)"])
            }
        }
        var session = Session(fd: socket.fd, key: key, upstream: socket.upstream)
        session.setAddresses(from: m.pointee.msg_hdr, packetInfo: usesPacketInfo)
        session.proxied = proxy != nil
        if sessionRecords != nil { session.sourcePort = Self.sourcePort(socket.fd) }
        let slot: Int32
        do {
            slot = try sessions.open(session, now: now) { (tag) throws(SyscallError) in try waitSet.add(socket.fd, tag: tag) }
        } catch {
            counters.add(.sessionErrors)
            return nil
        }
        if let proxy { setSessionProxy(slot, proxy) }
        counters.add(.sessionsCreated)
        counters.set(.sessionsActive, UInt64(sessions.liveCount))
        upCounters[socket.upstream].sessionOpened()
        if logger.logLevel <= .debug, let skipped = sessionLogs.opened.admit(now: now) {
            logger.debug(
                "session opened",
                metadata: [
                    "peer.address": "\(clientDescription(slot))", "upstream": "\(upstreams.endpoints[socket.upstream])",
                    "log.suppressed": "\(skipped)",
                ])
        }
        return slot
    }

    /// Keeps the proxy (a `sockaddr_in` or `sockaddr_in6`) that the client of the session in
    /// `slot` came through, for its replies. Grows `sessionProxies` to the slot when needed.
    private func setSessionProxy(_ slot: Int32, _ address: UnsafePointer<sockaddr_storage>) {
        if sessionProxies.count <= Int(slot) { sessionProxies += repeatElement(sockaddr_in6(), count: Int(slot) + 1 - sessionProxies.count) }
        sessionProxies[Int(slot)] = sockaddr_in6()
        withUnsafeMutableBytes(of: &sessionProxies[Int(slot)]) { dst in
            dst.copyMemory(from: UnsafeRawBufferPointer(start: UnsafeRawPointer(address), count: dst.count))
        }
    }

    private func clientDescription(_ slot: Int32) -> String {
        sessions[slot].clientAddress.map { "\($0)" } ?? "?"
    }

    /// Takes a session out of the table (see `SessionTable.close`): its socket is held so that
    /// a late reply cannot reach a newer session on the same port, or closed (which also takes
    /// it out of the epoll set) for `refused` and `shutdown`.
    private func closeSession(_ slot: Int32, _ reason: SessionTable.CloseReason, now: UInt64) {
        if sessions.close(slot, reason: reason, now: now) { sessionClosed(slot, reason) }
    }

    /// Counts and logs a session the table has closed.
    private func sessionClosed(_ slot: Int32, _ reason: SessionTable.CloseReason) {
        dispatchPrecondition(condition: .onQueue(queue))
        let counter: Counter? =
            switch reason {
            case .evicted: .sessionsEvicted
            case .expired: .sessionsExpired
            case .answered: .sessionsClosed
            case .failed, .refused: .sessionsFailed
            case .shutdown: nil
            }
        if let counter { counters.add(counter) }
        counters.set(.sessionsActive, UInt64(sessions.liveCount))
        upCounters[Int(sessions[slot].upstream)].sessionEnded()
        recordSessionEnd(SessionRecord(sessions[slot], upstream: upstreams.address(Int(sessions[slot].upstream))), SessionEnd(reason))
        if logger.logLevel <= .debug, let skipped = sessionLogs.closed.admit(now: SystemClock.monotonicNanos()) {
            logger.debug(
                "session closed",
                metadata: [
                    "peer.address": "\(clientDescription(slot))",
                    "reason": "\(counter.map { "\($0)" } ?? "shutdown")", "replies": "\(sessions[slot].replies)",
                    "log.suppressed": "\(skipped)",
                ])
        }
    }

    /// A send to the session's upstream failed, or an ICMP error came back: count it against
    /// the upstream and close the session so the client's next datagram picks one that is up.
    /// After a refusal (nothing listens there) no reply can follow, so the port is freed at
    /// once; after other errors (unreachable, a firewall's EPERM) replies to earlier datagrams
    /// may still come, so it is held like any other closed session's.
    private func upstreamFailed(_ slot: Int32, errno err: Int32, now: UInt64) {
        let upstream = Int(sessions[slot].upstream)
        upCounters[upstream].add(.failures)
        upstreams.recordFailure(upstream, now: now, errno: err)
        closeSession(slot, err == ECONNREFUSED ? .refused : .failed, now: now)
    }

    func expireIdle(now: UInt64) {
        dispatchPrecondition(condition: .onQueue(queue))
        lastExpiry = now
        while let slot = sessions.expire(now: now) { sessionClosed(slot, .expired) }
        sessions.releaseHeld(now: now)
        flushSessionRecords(now: now)
    }

    /// A late reply (or an ICMP error) on a held socket: read and counted, never forwarded.
    /// Like every datagram from an upstream it counts in the upstream's `received_*`.
    private func drainHeld(_ slot: Int32) {
        let session = sessions[slot]
        let up = upCounters[Int(session.upstream)]
        for _ in 0..<tuning.maxBatchesPerWakeup {
            guard let received = try? replyBatch.receive(from: session.fd, resetting: replyBatch.capacity),
                received > 0
            else { return }
            repliesFilled = received
            countKernelDrops(slot, received)
            var bytes: UInt64 = 0
            for k in 0..<received { bytes &+= UInt64(replyBatch.messages[k].msg_len) }
            up.add(.receivedPackets, UInt64(received))
            up.add(.receivedBytes, bytes)
            counters.add(.repliesIgnored, UInt64(received))
            if received < replyBatch.capacity { return }
        }
    }

    /// A transparent session socket could not take its client's address and port (counted as
    /// `session_errors`, logged at most 4 times in 10 s): EADDRINUSE when another socket has
    /// them (the same client relayed to the same upstream by another listener, or a local
    /// socket on the client's port), EAFNOSUPPORT/EINVAL when the client's family is not the
    /// upstream's.
    private func transparentBindFailed(_ error: SyscallError, client: UnsafeMutablePointer<sockaddr_storage>) {
        counters.add(.sessionErrors)
        guard let skipped = transparentLogs.admit(now: SystemClock.monotonicNanos()) else { return }
        let hint =
            switch error.errno {
            case EADDRINUSE:
                "another socket has the client's address and port (the same client through another transparent listener, or a local socket on that port)"
            case EAFNOSUPPORT, EINVAL: "the client's address family is not the upstream's: a transparent session keeps the client's address"
            default: "see transparent in udprelayd.ini(5)"
            }
        logger.warning(
            "cannot bind a transparent session socket to the client's address; datagram dropped (no_session)",
            metadata: [
                "peer.address": "\(SocketAddress(sockaddr: UnsafeRawPointer(client)).map { "\($0)" } ?? "?")",
                "error": "\(error)", "hint": "\(hint)", "log.suppressed": "\(skipped)",
            ])
    }

    /// A session socket could not be opened or bound for want of descriptors or ports (`error`),
    /// or live and held sockets fill the table's budget (nil): counted, and logged once per
    /// episode with what to change.
    private func sessionSocketsFail(_ error: SyscallError?) {
        counters.add(.sessionErrors)
        guard !sessionSocketFailing else { return }
        sessionSocketFailing = true
        let hint =
            switch error?.errno {
            case nil: "too many sessions closed in the last \(sessions.holdNanos / 1_000_000) ms: each keeps its socket that long (see max_sessions)"
            case EAGAIN: "every local port in net.ipv4.ip_local_port_range is taken: widen the range or lower max_sessions"
            default: "raise the file limit (LimitNOFILE=) or lower max_sessions"
            }
        // Clients can make this flap at the limit: at most 4 lines (with the other) per 10 s.
        guard let skipped = sessionLogs.episodes.admit(now: SystemClock.monotonicNanos()) else { return }
        logger.warning(
            "cannot open session sockets; datagrams from new clients are dropped (no_session)",
            metadata: [
                "error": "\(error.map { "\($0)" } ?? "live and held session sockets at their limit (\(sessions.budget))")",
                "hint": "\(hint)", "sessions.active": "\(sessions.liveCount)", "sessions.held": "\(sessions.heldCount)",
                "log.suppressed": "\(skipped)",
            ])
    }

    // MARK: upstream -> client

    /// Reads a session's replies (or its pending socket error) and sends them to its client.
    private func upstreamReadable(_ slot: Int32) {
        // Its socket, upstream and addresses: they stay while it is open, and it is served no
        // further once it closes.
        let session = sessions[slot]
        let up = upCounters[Int(session.upstream)]
        var prepared = false
        for _ in 0..<tuning.maxBatchesPerWakeup {
            let received: Int
            do {
                received = try replyBatch.receive(from: session.fd, resetting: repliesFilled)
            } catch {
                if ErrorPolicy.isUpstreamFailure(errno: error.errno) {
                    // An ICMP error for an earlier datagram: the upstream is not there.
                    upstreamFailed(slot, errno: error.errno, now: SystemClock.monotonicNanos())
                    return
                }
                counters.add(.receiveErrors)
                return
            }
            repliesFilled = max(received, 1)
            guard received > 0 else { return }
            countKernelDrops(slot, received)
            if !prepared {
                prepareReply(session, slot: slot)
                prepared = true
            }
            let allowed = sessions.repliesAllowed(slot, received)
            // Every datagram from the upstream counts in its `received_*`, ignored ones too.
            var bytes: UInt64 = 0, forwardedBytes: UInt64 = 0
            for k in 0..<received { bytes &+= UInt64(replyBatch.messages[k].msg_len) }
            for k in 0..<allowed {
                forwardedBytes &+= UInt64(replyBatch.messages[k].msg_len)
                scratch[k] = replyBatch.messages[k]
                scratch[k].msg_hdr.msg_iov.pointee.iov_len = Int(scratch[k].msg_len)
                scratch[k].msg_hdr.msg_name = UnsafeMutableRawPointer(replyName)
                scratch[k].msg_hdr.msg_namelen = replyNameLength
                scratch[k].msg_hdr.msg_control = replyControlLength > 0 ? replyControl : nil
                scratch[k].msg_hdr.msg_controllen = replyControlLength
            }
            up.add(.receivedPackets, UInt64(received))
            up.add(.receivedBytes, bytes)
            if allowed < received { counters.add(.repliesIgnored, UInt64(received - allowed)) }
            sendToClient(count: allowed)
            if sessions.recordReplies(slot, allowed, bytes: forwardedBytes, now: SystemClock.monotonicNanos()) {
                sessionClosed(slot, .answered)
                return
            }
            if received < replyBatch.capacity { return }
        }
    }

    /// Replies the kernel dropped on a session socket (its receive buffer was full), as the
    /// last of the `received` replies in `replyBatch` reports them: `receive_buffer_full`.
    @inline(__always)
    private func countKernelDrops(_ slot: Int32, _ received: Int) {
        guard let total = replyBatch.kernelDrops(received) else { return }
        let dropped = sessions.recordKernelDrops(slot, total: total)
        if dropped != 0 { counters.add(.dropReceiveBufferFull, UInt64(dropped)) }
    }

    /// Length of the control data in `replyControl` for the session being served.
    private var replyControlLength = 0

    /// Length of the address in `replyName`.
    private var replyNameLength: socklen_t = 0

    /// Copies the session's reply destination (its client, or the proxy it came through) to
    /// `replyName` and writes its packet-info control data (wildcard listeners) to `replyControl`.
    @inline(__always)
    private func prepareReply(_ session: Session, slot: Int32) {
        if session.proxied {
            replyName.pointee = sessionProxies[Int(slot)]
            replyNameLength = RawSockaddr.length(replyName)
        } else {
            replyName.pointee = session.client
            replyNameLength = session.clientLength
        }
        replyControlLength = 0
        if session.local.sin6_family != 0 {
            replyControlLength = RawSockaddr.withSockaddr(of: session.local) {
                cur_write_source_control(replyControl, controlCapacity, $0, session.ifindex)
            }
        }
    }

    @inline(__always)
    private func sendToClient(count: Int) {
        let outcome = sender.send(fd: fd, scratch, count: count, oneDestination: true) { err, n in
            counters.add(ErrorPolicy.sendDrop(errno: err), UInt64(n))
        }
        counters.add(.sentPackets, UInt64(outcome.sent))
        counters.add(.sentBytes, outcome.bytes)
    }
}
