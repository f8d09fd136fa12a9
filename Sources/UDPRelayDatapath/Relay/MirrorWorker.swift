import CUDPRelay
import Dispatch
import Logging
import UDPRelayConfig

#if canImport(Glibc)
import Glibc
#endif

/// `mirror`: every datagram (or one in `sample` N) is copied to every upstream, each from a
/// connected non-blocking socket of its own, with one `DatagramSender` call per upstream per
/// batch (equal-sized runs segmented, the rest with `sendmmsg`). A full
/// buffer or an error on one upstream drops only that upstream's copies (counted), never the
/// others'. Replies are read, counted as `repliesIgnored` and dropped: the upstream sockets
/// sit in the worker's wait set, tagged with their index, and are served by the read loop
/// (see `WaitSet`) like relay sessions.
///
/// `spoof = yes`: the copies go out through `SpoofedSender` instead, with each client's own
/// address and port as their source, one raw socket per upstream; no UDP socket is opened
/// (replies, if any, go to the clients).
final class MirrorWorker: SocketWorker, @unchecked Sendable {
    // @unchecked: as SocketWorker, all mutable state is confined to `queue`.
    private let batch: MessageBatch
    /// Replies are only counted: 1-byte buffers, real lengths via MSG_TRUNC.
    private let replyBatch: MessageBatch
    private let scratch: UnsafeMutablePointer<cur_mmsghdr>
    /// Sends each upstream's copies (segmented where it applies).
    private var sender: DatagramSender
    /// `proxy_protocol = v2`: one header per copied datagram of a batch, sent in front of it
    /// to every upstream; nil when off.
    private let proxyHeaders: ProxyHeaders?
    /// `spoof = yes`: the raw sockets and headers that send the copies as their clients; nil
    /// when off.
    private var spoofer: SpoofedSender?
    /// Bounds the log lines of copies a spoofing mirror cannot send (family mismatch).
    private var mismatchLog = LogLimiter(lines: 1, per: .seconds(60))
    private let sampleEvery: Int
    private var sampleCounter = 0
    let upstreams: UpstreamTable
    private let upCounters: [UpstreamCounterSet]
    /// One connected socket per upstream, in the worker's wait set tagged with its index; the
    /// listener's `rcvbuf`/`sndbuf` apply to them too.
    private var sockets: [ConnectedSocket]
    private var connectedGeneration: UInt64 = .max
    /// Bounds the log lines of upstream socket errors: one a minute per worker.
    private var socketErrorLog = LogLimiter(lines: 1, per: .seconds(60))

    init(
        fd: Int32, localAddress: SocketAddress, label: String, configuration: ListenerConfiguration,
        upstreams: UpstreamTable, workerIndex: Int, tuning: DatapathTuning
    ) throws(SyscallError) {
        let proxy = configuration.proxyProtocol == .v2
        // Packet info (the address a client sent to) is needed only for the PROXY header.
        self.batch = MessageBatch(
            capacity: tuning.batchSize, bufferSize: configuration.maxDatagram, withControl: proxy && localAddress.ip.isWildcard)
        self.lastCount = tuning.batchSize
        self.replyBatch = MessageBatch(capacity: tuning.batchSize, bufferSize: 1, withControl: false)
        self.scratch = .allocate(capacity: tuning.batchSize)
        self.scratch.initialize(repeating: cur_mmsghdr(), count: tuning.batchSize)
        // Each datagram carries its own header, so none go out as one segmented send.
        self.sender = DatagramSender(segmentation: configuration.segmentation && !proxy)
        self.proxyHeaders = proxy ? ProxyHeaders(capacity: tuning.batchSize, listener: localAddress) : nil
        self.spoofer =
            configuration.spoof
            ? SpoofedSender(capacity: tuning.batchSize, collectors: upstreams.count, sendBuffer: configuration.sendBuffer) : nil
        self.sampleEvery = configuration.sampleEvery
        self.upstreams = upstreams
        self.upCounters = upstreams.counters[workerIndex]
        self.sockets = []
        try super.init(fd: fd, localAddress: localAddress, label: label, tuning: tuning, busyPoll: .zero)
        let buffers = (receive: configuration.receiveBuffer, send: configuration.sendBuffer)
        sockets = (0..<upstreams.count).map { ConnectedSocket(watch: .waitSet(waitSet, tag: UInt64($0)), buffers: buffers) }
    }

    deinit {
        scratch.deallocate()
        sender.deallocate()
        proxyHeaders?.deallocate()
        spoofer?.deallocate()
    }

    override func start(registered: DispatchGroup) {
        upstreams.awaitInitialResolution()  // as RelayWorker
        submit { [self] in connectUpstreams() }
        super.start(registered: registered)
    }

    override var hasMembers: Bool { true }

    /// After the listener's last pass (which may still copy datagrams): closes the upstream sockets.
    override func stopMembers() {
        for i in sockets.indices { sockets[i].close() }
        spoofer?.closeAll()
    }

    /// (Re)connects each upstream socket to its current address; called at start and when a
    /// hostname resolves to a new address.
    private func connectUpstreams() {
        dispatchPrecondition(condition: .onQueue(queue))
        connectedGeneration = upstreams.generation[0]
        for i in 0..<upstreams.count {
            // An upstream that is a relay listener of this daemon would copy forever: left
            // unconnected (its copies count as send drops).
            guard let address = upstreams.address(i), !filter.isOwnRelayListener(address) else { continue }
            if spoofer != nil {
                connectSpoofed(i, to: address)
                continue
            }
            sockets[i].connect(to: address) { problem in
                // Unwatched: copies are still sent; replies are not read (they count as kernel drops).
                if case .unwatched = problem { counters.add(.receiveErrors) }
                // No socket: its copies count as send drops until the next address change.
                ConnectedSocket.log(
                    problem, what: "mirror", upstream: upstreams.endpoints[i], logger: upstreams.logger,
                    limiter: &socketErrorLog, now: SystemClock.monotonicNanos())
            }
        }
    }

    /// Points upstream `i`'s raw socket at `address`; a failure is logged (rate-limited) and
    /// its copies count as send drops until the next address change.
    private func connectSpoofed(_ i: Int, to address: SocketAddress) {
        do throws(SyscallError) {
            try spoofer?.connect(i, to: address)
        } catch {
            ConnectedSocket.log(
                .cannotOpen(error), what: "spoofing mirror", upstream: upstreams.endpoints[i], logger: upstreams.logger,
                limiter: &socketErrorLog, now: SystemClock.monotonicNanos())
        }
    }

    override func turnStarted() {
        if connectedGeneration != upstreams.generation[0] { connectUpstreams() }
    }

    /// Slots of `batch` the last `recvmmsg` filled, to be reset before the next.
    private var lastCount: Int

    /// One `recvmmsg` on the listener, copied: the datagrams read, 0 when none, nil on error.
    override func receiveBatch() -> Int? {
        guard let received = receive(into: batch, resetting: lastCount) else { return nil }
        guard received > 0 else { return 0 }
        lastCount = received
        mirror(received)
        return received
    }

    /// An upstream socket in the wait set is readable: its replies (or an error) are drained.
    override func memberReady(_ tag: UInt64) {
        let u = Int(tag)
        guard u < sockets.count, sockets[u].fd >= 0 else { return }
        drainReplies(u, fd: sockets[u].fd)
    }

    @inline(__always)
    private func mirror(_ count: Int) {
        var bytes: UInt64 = 0
        var n = 0
        spoofer?.reset()
        let now = filter.needsClock ? SystemClock.coarseMonotonicNanos() : 0
        for i in 0..<count {
            let m = batch.messages + i
            bytes &+= UInt64(m.pointee.msg_len)
            guard admits(batch, i, now: now) else { continue }
            if sampleEvery > 1 {
                sampleCounter += 1
                if sampleCounter < sampleEvery {
                    counters.add(.sampledOut)
                    continue
                }
                sampleCounter = 0
            }
            m.pointee.msg_hdr.msg_iov.pointee.iov_len = Int(m.pointee.msg_len)
            if spoofer != nil, let client = m.pointee.msg_hdr.msg_name {
                spoofer?.add(client: client, payload: m.pointee.msg_hdr.msg_iov.pointee)
                n += 1
                continue
            }
            scratch[n] = m.pointee
            scratch[n].msg_hdr.msg_name = nil
            scratch[n].msg_hdr.msg_namelen = 0
            scratch[n].msg_hdr.msg_control = nil
            scratch[n].msg_hdr.msg_controllen = 0
            if let proxyHeaders {
                proxyHeaders.write(n, from: m.pointee.msg_hdr)
                proxyHeaders.prepend(n, to: &scratch[n].msg_hdr, slot: n)
            }
            n += 1
        }
        countReceived(count, bytes: bytes)
        guard n > 0 else { return }
        // The listener's `sent` is every copy that went out, packets and bytes: the sum of its
        // upstreams' `sent`.
        var copies = 0
        var copiedBytes: UInt64 = 0
        for u in 0..<sockets.count {
            let outcome = spoofer != nil ? sendSpoofed(toUpstream: u) : send(n, toUpstream: u)
            copies += outcome.sent
            copiedBytes &+= outcome.bytes
        }
        counters.add(.sentPackets, UInt64(copies))
        counters.add(.sentBytes, copiedBytes)
    }

    /// Sends the `count` messages of `scratch` to one upstream; returns the datagrams and bytes
    /// that went out.
    @inline(__always)
    private func send(_ count: Int, toUpstream u: Int) -> (sent: Int, bytes: UInt64) {
        let up = upCounters[u]
        let ufd = sockets[u].fd
        guard ufd >= 0 else {
            up.add(.sendDrops, UInt64(count))
            return (0, 0)
        }
        var failure: Int32 = 0
        let outcome = sender.send(fd: ufd, scratch, count: count, oneDestination: true) { err, n in
            // Counted once, on the upstream (as in RelayWorker).
            up.add(.sendDrops, UInt64(n))
            if ErrorPolicy.isUpstreamFailure(errno: err) {
                up.add(.failures)
                failure = err
            }
        }
        if failure != 0 { upstreams.recordFailure(u, now: SystemClock.monotonicNanos(), errno: failure) }
        up.add(.sentPackets, UInt64(outcome.sent))
        up.add(.sentBytes, outcome.bytes)
        return (outcome.sent, outcome.bytes)
    }

    /// Sends the batch recorded in `spoofer` to one upstream as its clients; returns the copies
    /// and payload bytes that went out. Copies it cannot send count as the upstream's send drops.
    @inline(__always)
    private func sendSpoofed(toUpstream u: Int) -> (sent: Int, bytes: UInt64) {
        let up = upCounters[u]
        guard let count = spoofer?.count else { return (0, 0) }
        guard let fd = spoofer?.fds[u], fd >= 0 else {
            up.add(.sendDrops, UInt64(count))
            return (0, 0)
        }
        var failure: Int32 = 0
        let sent = spoofer?.send(toCollector: u) { err, n in
            up.add(.sendDrops, UInt64(n))
            if ErrorPolicy.isUpstreamFailure(errno: err) {
                up.add(.failures)
                failure = err
            }
        }
        if failure != 0 { upstreams.recordFailure(u, now: SystemClock.monotonicNanos(), errno: failure) }
        let outcome = sent ?? SpoofedSender.Outcome()
        if outcome.mismatched > 0 {
            up.add(.sendDrops, UInt64(outcome.mismatched))
            logMismatch(u)
        }
        up.add(.sentPackets, UInt64(outcome.sent))
        up.add(.sentBytes, outcome.bytes)
        return (outcome.sent, outcome.bytes)
    }

    /// Logs (at most once a minute per worker) that copies to upstream `u` were dropped because
    /// their clients have the other address family.
    private func logMismatch(_ u: Int) {
        let logger = upstreams.logger
        guard logger.logLevel <= .warning, let skipped = mismatchLog.admit(now: SystemClock.monotonicNanos()) else { return }
        logger.warning(
            "spoofing mirror: copies from clients of the other address family than the upstream are dropped",
            metadata: ["upstream": "\(upstreams.endpoints[u])", "log.suppressed": "\(skipped)"])
    }

    private func drainReplies(_ u: Int, fd ufd: Int32) {
        dispatchPrecondition(condition: .onQueue(queue))
        let up = upCounters[u]
        for _ in 0..<tuning.maxBatchesPerWakeup {
            let received: Int
            do {
                received = try replyBatch.receive(from: ufd, resetting: replyBatch.capacity, flags: CUR_MSG_TRUNC)
            } catch {
                // ECONNREFUSED for an earlier copy: count it against the upstream and go on.
                if ErrorPolicy.isUpstreamFailure(errno: error.errno) {
                    up.add(.failures)
                    upstreams.recordFailure(u, now: SystemClock.monotonicNanos(), errno: error.errno)
                    continue
                }
                counters.add(.receiveErrors)
                return
            }
            guard received > 0 else { return }
            var bytes: UInt64 = 0
            for k in 0..<received { bytes &+= UInt64(replyBatch.messages[k].msg_len) }
            up.add(.receivedPackets, UInt64(received))
            up.add(.receivedBytes, bytes)
            counters.add(.repliesIgnored, UInt64(received))
            if received < replyBatch.capacity { return }
        }
    }
}
