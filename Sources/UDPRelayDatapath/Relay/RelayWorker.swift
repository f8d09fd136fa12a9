#if canImport(Glibc)
import Glibc
#endif
import CUDPRelay
import Dispatch
import Logging
import UDPRelayConfig

/// One client session of a forward/balance listener: a connected, non-blocking upstream socket
/// on an ephemeral port, read by its own Dispatch source on the worker's queue.
///
/// Not thread-safe: touched only on its worker's queue.
final class Session {
    let slot: Int32
    let key: ClientKey
    let fd: Int32
    let upstream: Int
    /// The client's address: the destination of replies (msg_name).
    let client: UnsafeMutablePointer<sockaddr_storage>
    let clientLength: socklen_t
    /// Packet-info control data that makes replies leave from the address the client sent to
    /// (wildcard listeners only; length 0 otherwise).
    let control: UnsafeMutableRawPointer
    var controlLength: Int = 0
    var replies = 0
    var source: DispatchSourceRead?

    init(slot: Int32, key: ClientKey, fd: Int32, upstream: Int, client: UnsafeRawPointer, clientLength: socklen_t, controlCapacity: Int) {
        self.slot = slot
        self.key = key
        self.fd = fd
        self.upstream = upstream
        self.client = .allocate(capacity: 1)
        self.client.initialize(to: sockaddr_storage())
        UnsafeMutableRawPointer(self.client).copyMemory(from: client, byteCount: Int(clientLength))
        self.clientLength = clientLength
        self.control = .allocate(byteCount: max(controlCapacity, 8), alignment: 8)
    }

    deinit {
        client.deallocate()
        control.deallocate()
    }
}

/// `forward` and `balance`: datagrams from each client go to that client's session socket;
/// replies go back to the client from the listener's socket. Everything (listener socket,
/// session sockets, the expiry timer) runs on the one serial queue of this worker.
///
/// Hot path: one `recvmmsg` fills the listener batch; datagrams are grouped by session and
/// sent with one `sendmmsg` per session; replies are read with `recvmmsg` and sent back with
/// one `sendmmsg`. Session lookup hashes a fixed-size key. Nothing allocates per datagram;
/// opening a session does.
final class RelayWorker: SocketWorker, @unchecked Sendable {
    // @unchecked: as SocketWorker, all mutable state is confined to `queue`.
    private let batch: MessageBatch
    private let replyBatch: MessageBatch
    /// Send vector: messages of one group are copied here (pointing at the same buffers).
    private let scratch: UnsafeMutablePointer<cur_mmsghdr>
    /// Per received message: its session slot, -1 when dropped or already sent.
    private let sessionOf: UnsafeMutablePointer<Int32>
    private let tuning: DatapathTuning
    private let usesPacketInfo: Bool
    private let controlCapacity: Int
    private let settings: SessionSettings
    private let timeoutNanos: UInt64
    let upstreams: UpstreamTable
    private let upCounters: [UpstreamCounterSet]
    private let logger: Logger

    private var table: [ClientKey: Int32] = [:]
    private var sessions: [Session?] = []
    private var freeSlots: [Int32] = []
    private var idle = IdleList()
    private var balancer: Balancer
    private var timer: DispatchSourceTimer?
    private let sessionsClosed = DispatchGroup()
    /// Sessions opened since the last timer tick, and in the tick before: checked for a pending
    /// socket error (ICMP port unreachable) until they get a reply. Dispatch read sources on
    /// Linux do not fire for an error alone (EPOLLERR without data), so the timer asks.
    private var freshSessions: [Session] = []
    /// Opening session sockets fails (logged once until it works again).
    private var sessionSocketFailing = false
    private var recentSessions: [Session] = []
    /// `busy_poll` in nanoseconds, 0 when off.
    private let busyPoll: UInt64
    /// busy_poll: the sessions that sent upstream during this wakeup, whose replies are polled
    /// for together with the listener socket (at most `pollLimit`; more, or a listener batch of
    /// more than `pollMaxBatch` datagrams, turns polling off for the wakeup: `notPolling`).
    private var polled: [Session?] = Array(repeating: nil, count: RelayWorker.pollLimit)
    private var polledCount = 0
    private var notPolling = false
    private static let pollLimit = 8
    private static let pollMaxBatch = 4
    /// busy_poll: the `pollfd`s (listener, then `polled`), allocated once.
    private let pollSet: UnsafeMutablePointer<pollfd>

    init(fd: Int32, localAddress: SocketAddress, label: String, configuration: ListenerConfiguration,
         upstreams: UpstreamTable, workerIndex: Int, tuning: DatapathTuning, logger: Logger) {
        self.tuning = tuning
        self.usesPacketInfo = localAddress.ip.isWildcard
        self.controlCapacity = (cur_pktinfo_space() + 7) & ~7
        self.batch = MessageBatch(capacity: tuning.batchSize, bufferSize: configuration.maxDatagram, withControl: localAddress.ip.isWildcard)
        self.replyBatch = MessageBatch(capacity: tuning.batchSize, bufferSize: 65535, withControl: false)
        self.scratch = .allocate(capacity: tuning.batchSize)
        self.scratch.initialize(repeating: cur_mmsghdr(), count: tuning.batchSize)
        self.sessionOf = .allocate(capacity: tuning.batchSize)
        self.sessionOf.initialize(repeating: -1, count: tuning.batchSize)
        self.settings = configuration.sessions
        self.timeoutNanos = configuration.sessions.timeout.nanoseconds
        self.busyPoll = configuration.busyPoll.nanoseconds
        self.pollSet = .allocate(capacity: 1 + RelayWorker.pollLimit)
        self.pollSet.initialize(repeating: pollfd(), count: 1 + RelayWorker.pollLimit)
        self.upstreams = upstreams
        self.upCounters = upstreams.counters[workerIndex]
        self.balancer = Balancer(algorithm: configuration.mode == .balance ? configuration.balance : .first,
                                 upstreams: configuration.upstreams.map(\.description))
        var log = logger
        log[metadataKey: "listener.name"] = "\(configuration.name)"
        self.logger = log
        super.init(fd: fd, localAddress: localAddress, label: label)
    }

    deinit {
        scratch.deallocate()
        sessionOf.deallocate()
        pollSet.deallocate()
    }

    override func start(registered: DispatchGroup) {
        super.start(registered: registered)
        queue.async { [self] in
            let t = DispatchSource.makeTimerSource(queue: queue)
            // Check often enough that a session lives at most ~1/4 longer than its timeout.
            let every = min(max(timeoutNanos / 4, 5_000_000), 1_000_000_000)
            t.schedule(deadline: .now() + .nanoseconds(Int(every)), repeating: .nanoseconds(Int(every)), leeway: .nanoseconds(Int(every / 10)))
            t.setEventHandler { [unowned self] in
                let now = monotonicNanos()
                checkNewSessions(now: now)
                expireIdle(now: now)
            }
            timer = t
            t.activate()
        }
    }

    /// Stops the listener socket first (its last read pass may still forward datagrams), then
    /// closes every session; `done` is left once all their descriptors are closed.
    override func stop(done: DispatchGroup) {
        super.stop(done: done)
        done.enter()
        queue.async { [self] in
            timer?.cancel()
            timer = nil
            for case let s? in sessions { closeSession(s, reason: nil) }
            freshSessions = []
            recentSessions = []
            sessionsClosed.notify(queue: .global()) { done.leave() }
        }
    }

    // MARK: client -> upstream

    override func readable() {
        dispatchPrecondition(condition: .onQueue(queue))
        polledCount = 0
        notPolling = false
        serveClients()
        if busyPoll > 0 && !notPolling { pollAfterDrain() }
        for i in 0..<polledCount { polled[i] = nil }
    }

    /// busy_poll: after the listener socket ran dry, keeps polling it and the sockets of the
    /// sessions that sent upstream in this wakeup (where replies to requests come back) for up
    /// to `busyPoll` nanoseconds after the last datagram, serving whichever becomes readable on
    /// this thread without a Dispatch wakeup. Yields the CPU after every poll so an upstream on
    /// the same CPU can answer. Gives up when more than `pollLimit` sessions are active (their
    /// replies must not wait behind the loop) or the listener delivers fuller batches, after `maxBatchesPerWakeup * batchSize` rounds,
    /// or after 1 ms in all.
    private func pollAfterDrain() {
        let start = monotonicNanos()
        var dryAt = start
        var rounds = 0
        while rounds < tuning.maxBatchesPerWakeup * tuning.batchSize && !notPolling {
            pollSet[0] = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            for i in 0..<polledCount {
                let s = polled[i].flatMap { sessions[Int($0.slot)] === $0 ? $0 : nil }
                pollSet[1 + i] = pollfd(fd: s?.fd ?? -1, events: Int16(POLLIN), revents: 0)
            }
            guard case .done(let ready)? = try? syscall("poll", { poll(pollSet, nfds_t(1 + polledCount), 0) }) else { return }
            let now = monotonicNanos()
            if ready > 0 {
                for i in 0..<polledCount where pollSet[1 + i].revents != 0 {
                    if let s = polled[i] { upstreamReadable(s) }
                }
                if pollSet[0].revents != 0 { serveClients() }
                dryAt = now
                rounds += 1
            } else if now &- dryAt >= busyPoll {
                return
            }
            if now &- start >= 1_000_000 { return }
            sched_yield()
        }
    }

    /// Reads the listener socket until it is empty (at most `maxBatchesPerWakeup` batches) and
    /// forwards what it read.
    private func serveClients() {
        var lastCount = batch.capacity
        for _ in 0..<tuning.maxBatchesPerWakeup {
            batch.prepareForReceive(count: lastCount)
            let received: Int
            do {
                switch try syscall("recvmmsg", { cur_recvmmsg(fd, batch.messages, UInt32(batch.capacity), 0) }) {
                case .wouldBlock: return
                case .done(let n): received = Int(n)
                }
            } catch {
                counters.add(.receiveErrors)
                return
            }
            lastCount = max(received, 1)
            guard received > 0 else { return }
            // busy_poll serves request/response traffic; a fuller batch means a stream that
            // batches better through Dispatch (measured: W=64 p99 1.1 ms polling off, 2.1 ms on).
            if received > RelayWorker.pollMaxBatch { notPolling = true }
            forward(received, now: monotonicNanos())
            if received < batch.capacity { return }
        }
    }

    @inline(__always)
    private func forward(_ count: Int, now: UInt64) {
        var bytes: UInt64 = 0
        var pending = 0
        for i in 0..<count {
            let m = batch.messages + i
            bytes &+= UInt64(m.pointee.msg_len)
            sessionOf[i] = -1
            if m.pointee.msg_hdr.msg_flags & CUR_MSG_TRUNC != 0 {
                counters.add(.dropTooLarge)
                continue
            }
            guard let name = m.pointee.msg_hdr.msg_name, let key = ClientKey(sockaddr: name) else { continue }
            if let source = SocketAddress(sockaddr: name), let reason = filter.check(source, now: now) {
                counters.add(reason)
                continue
            }
            m.pointee.msg_hdr.msg_iov.pointee.iov_len = Int(m.pointee.msg_len)
            if let slot = table[key] {
                idle.touch(slot, now: now)
                sessionOf[i] = slot
                continue
            }
            if table.count >= settings.maxSessions {
                // Send what is queued first: it may belong to the session about to be evicted.
                sendGroups(from: pending, to: i)
                pending = i
                let oldest = idle.tail
                if oldest >= 0, let s = sessions[Int(oldest)] {
                    closeSession(s, reason: .sessionsEvicted)
                }
            }
            if let s = openSession(key: key, message: m, now: now) {
                sessionOf[i] = s.slot
            } else {
                counters.add(.dropNoSession)
            }
        }
        counters.add(.receivedPackets, UInt64(count))
        counters.add(.receivedBytes, bytes)
        if filter.needsClock { counters.add(.rateLimitEvictions, filter.newEvictions()) }
        sendGroups(from: pending, to: count)
    }

    /// Sends messages `start..<end` to their sessions: one `sendmmsg` per session and run.
    @inline(__always)
    private func sendGroups(from start: Int, to end: Int) {
        var i = start
        while i < end {
            let slot = sessionOf[i]
            guard slot >= 0, let session = sessions[Int(slot)] else {
                i += 1
                continue
            }
            var n = 0
            for j in i..<end where sessionOf[j] == slot {
                scratch[n] = batch.messages[j]
                scratch[n].msg_hdr.msg_name = nil
                scratch[n].msg_hdr.msg_namelen = 0
                scratch[n].msg_hdr.msg_control = nil
                scratch[n].msg_hdr.msg_controllen = 0
                n += 1
                sessionOf[j] = -1
            }
            sendToUpstream(session, count: n)
            i += 1
        }
    }

    /// busy_poll: remembers a session that sent in this wakeup; too many turn polling off.
    @inline(__always)
    private func notePolled(_ session: Session) {
        for i in 0..<polledCount where polled[i] === session { return }
        if polledCount == RelayWorker.pollLimit {
            notPolling = true
            return
        }
        polled[polledCount] = session
        polledCount += 1
    }

    @inline(__always)
    private func sendToUpstream(_ session: Session, count: Int) {
        if busyPoll > 0 && !notPolling { notePolled(session) }
        let up = upCounters[session.upstream]
        var i = 0
        var sentBytes: UInt64 = 0
        var sent = 0
        var failure: Int32 = 0
        while i < count {
            do {
                switch try syscall("sendmmsg", { cur_sendmmsg(session.fd, scratch + i, UInt32(count - i), 0) }) {
                case .done(let n):
                    for k in i..<(i + Int(n)) { sentBytes &+= UInt64(scratch[k].msg_len) }
                    sent += Int(n)
                    i += Int(n)
                case .wouldBlock:
                    up.add(.sendDrops, UInt64(count - i))
                    i = count
                }
            } catch {
                // Counted once, on the upstream: the listener's drop reasons are for datagrams
                // dropped before an upstream was chosen or on the way back to clients.
                up.add(.sendDrops)
                i += 1
                if ErrorPolicy.isUpstreamFailure(errno: error.errno) {
                    failure = error.errno
                }
            }
        }
        up.add(.sentPackets, UInt64(sent))
        up.add(.sentBytes, sentBytes)
        if failure != 0 { upstreamFailed(session, errno: failure, now: monotonicNanos()) }
    }

    // MARK: sessions

    private func openSession(key: ClientKey, message m: UnsafeMutablePointer<cur_mmsghdr>, now: UInt64) -> Session? {
        let pick = balancer.pick(clientHash: key.stableHash, isUp: { upstreams.isUp($0, now: now) })
        if pick.failOpen { counters.add(.failOpen) }
        guard let address = upstreams.address(pick.index) else {
            counters.add(.sessionErrors)
            return nil
        }
        let fd: Int32
        do {
            fd = try UDPSocket.open(family: address.family)
        } catch {
            counters.add(.sessionErrors)
            if !sessionSocketFailing {
                // Once per episode (EMFILE usually means max_sessions is above the file limit).
                sessionSocketFailing = true
                logger.warning("cannot open session sockets; datagrams from new clients are dropped (no_session)",
                               metadata: ["error": "\(error)", "sessions.active": "\(table.count)"])
            }
            return nil
        }
        if sessionSocketFailing {
            sessionSocketFailing = false
            logger.notice("session sockets open again", metadata: ["sessions.active": "\(table.count)"])
        }
        do {
            try UDPSocket.connect(fd, to: address)
        } catch {
            close(fd)
            counters.add(.sessionErrors)
            upCounters[pick.index].add(.failures)
            upstreams.recordFailure(pick.index, now: now)
            return nil
        }
        let slot: Int32
        if let free = freeSlots.popLast() {
            slot = free
        } else {
            slot = Int32(sessions.count)
            sessions.append(nil)
        }
        let s = Session(slot: slot, key: key, fd: fd, upstream: pick.index, client: m.pointee.msg_hdr.msg_name!,
                        clientLength: m.pointee.msg_hdr.msg_namelen, controlCapacity: controlCapacity)
        if usesPacketInfo {
            var local = sockaddr_storage()
            var ifindex: UInt32 = 0
            if cur_received_destination(&m.pointee.msg_hdr, &local, &ifindex) == 1 {
                s.controlLength = withUnsafePointer(to: &local) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                        cur_write_source_control(s.control, controlCapacity, $0, ifindex)
                    }
                }
            }
        }
        let source = DispatchSource.makeReadSource(fileDescriptor: fd, queue: queue)
        // Holds `s` until the source is released after cancellation (closeSession drops the
        // session's reference to the source, which breaks the cycle).
        source.setEventHandler { [unowned self, s] in upstreamReadable(s) }
        let closed = sessionsClosed
        closed.enter()
        source.setCancelHandler {
            close(fd)
            closed.leave()
        }
        s.source = source
        sessions[Int(slot)] = s
        table[key] = slot
        idle.insert(slot, now: now)
        counters.add(.sessionsCreated)
        counters.set(.sessionsActive, UInt64(table.count))
        upCounters[pick.index].add(.sessions)
        freshSessions.append(s)
        logger.debug("session opened", metadata: [
            "peer.address": "\(SocketAddress(sockaddr: UnsafeRawPointer(s.client)).map { "\($0)" } ?? "?")",
            "upstream": "\(upstreams.endpoints[pick.index])", "upstream.address": "\(address)",
        ])
        source.activate()
        return s
    }

    /// Removes a session and cancels its source; the descriptor is closed in the cancel handler.
    private func closeSession(_ s: Session, reason: Counter?) {
        dispatchPrecondition(condition: .onQueue(queue))
        guard sessions[Int(s.slot)] === s else { return }
        table.removeValue(forKey: s.key)
        idle.remove(s.slot)
        sessions[Int(s.slot)] = nil
        freeSlots.append(s.slot)
        // After cancel() the event handler never runs again; the guard in upstreamReadable
        // covers a wakeup already queued.
        s.source?.cancel()
        s.source = nil
        if let reason { counters.add(reason) }
        counters.set(.sessionsActive, UInt64(table.count))
        logger.debug("session closed", metadata: [
            "peer.address": "\(SocketAddress(sockaddr: UnsafeRawPointer(s.client)).map { "\($0)" } ?? "?")",
            "reason": "\(reason.map { "\($0)" } ?? "shutdown")", "replies": "\(s.replies)",
        ])
    }

    /// Looks for a pending error on sessions opened since the last tick and in the tick before
    /// (an ICMP error may come back after the first look) that have had no reply yet: a refused
    /// upstream counts as a failure and the session is closed.
    func checkNewSessions(now: UInt64) {
        dispatchPrecondition(condition: .onQueue(queue))
        for list in [recentSessions, freshSessions] {
            for s in list where s.replies == 0 && sessions[Int(s.slot)] === s {
                var err: Int32 = 0
                var len = socklen_t(MemoryLayout<Int32>.size)
                guard getsockopt(s.fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0, err != 0 else { continue }
                upstreamFailed(s, errno: err, now: now)
            }
        }
        recentSessions = freshSessions
        freshSessions = []
    }

    /// A send to the session's upstream failed, or an ICMP error came back: count it against
    /// the upstream and close the session so the client's next datagram picks one that is up.
    private func upstreamFailed(_ s: Session, errno err: Int32, now: UInt64) {
        upCounters[s.upstream].add(.failures)
        upstreams.recordFailure(s.upstream, now: now)
        closeSession(s, reason: .sessionsFailed)
    }

    func expireIdle(now: UInt64) {
        dispatchPrecondition(condition: .onQueue(queue))
        while let slot = idle.expired(now: now, timeout: timeoutNanos), let s = sessions[Int(slot)] {
            closeSession(s, reason: .sessionsExpired)
        }
    }

    // MARK: upstream -> client

    private func upstreamReadable(_ s: Session) {
        dispatchPrecondition(condition: .onQueue(queue))
        guard sessions[Int(s.slot)] === s else { return }
        let up = upCounters[s.upstream]
        var lastCount = replyBatch.capacity
        for _ in 0..<tuning.maxBatchesPerWakeup {
            replyBatch.prepareForReceive(count: lastCount)
            let received: Int
            do {
                switch try syscall("recvmmsg", { cur_recvmmsg(s.fd, replyBatch.messages, UInt32(replyBatch.capacity), 0) }) {
                case .wouldBlock: return
                case .done(let n): received = Int(n)
                }
            } catch {
                if ErrorPolicy.isUpstreamFailure(errno: error.errno) {
                    // An ICMP error for an earlier datagram: the upstream is not there.
                    upstreamFailed(s, errno: error.errno, now: monotonicNanos())
                    return
                }
                counters.add(.receiveErrors)
                return
            }
            lastCount = max(received, 1)
            guard received > 0 else { return }
            var allowed = received
            if let max = settings.maxReplies { allowed = min(received, max - s.replies) }
            var bytes: UInt64 = 0
            for k in 0..<allowed {
                scratch[k] = replyBatch.messages[k]
                bytes &+= UInt64(scratch[k].msg_len)
                scratch[k].msg_hdr.msg_iov.pointee.iov_len = Int(scratch[k].msg_len)
                scratch[k].msg_hdr.msg_name = UnsafeMutableRawPointer(s.client)
                scratch[k].msg_hdr.msg_namelen = s.clientLength
                scratch[k].msg_hdr.msg_control = s.controlLength > 0 ? s.control : nil
                scratch[k].msg_hdr.msg_controllen = s.controlLength
            }
            up.add(.receivedPackets, UInt64(received))
            up.add(.receivedBytes, bytes)
            if allowed < received { counters.add(.repliesIgnored, UInt64(received - allowed)) }
            sendToClient(count: allowed)
            s.replies += allowed
            idle.touch(s.slot, now: monotonicNanos())
            if let max = settings.maxReplies, s.replies >= max {
                closeSession(s, reason: .sessionsClosed)
                return
            }
            if received < replyBatch.capacity { return }
        }
    }

    @inline(__always)
    private func sendToClient(count: Int) {
        var i = 0
        var sentBytes: UInt64 = 0
        var sent = 0
        while i < count {
            do {
                switch try syscall("sendmmsg", { cur_sendmmsg(fd, scratch + i, UInt32(count - i), 0) }) {
                case .done(let n):
                    for k in i..<(i + Int(n)) { sentBytes &+= UInt64(scratch[k].msg_len) }
                    sent += Int(n)
                    i += Int(n)
                case .wouldBlock:
                    counters.add(.dropSendBufferFull, UInt64(count - i))
                    i = count
                }
            } catch {
                counters.add(ErrorPolicy.sendDrop(errno: error.errno))
                i += 1
            }
        }
        counters.add(.sentPackets, UInt64(sent))
        counters.add(.sentBytes, sentBytes)
    }
}
