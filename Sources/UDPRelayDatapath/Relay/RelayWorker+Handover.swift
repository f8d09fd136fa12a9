import CUDPRelay
import Dispatch
import Logging
import UDPRelayConfig

#if canImport(Glibc)
import Glibc
#endif

/// Relay sessions handed from one worker to another: a reload that rebuilds a listener, or a
/// restart through systemd's file descriptor store (see `SessionArchive`).
extension RelayWorker {
    /// What `adoptSessions` did with the sessions handed to it.
    struct Adoption: Equatable, Sendable {
        /// Live here now.
        var adopted = 0
        /// Their upstream is no longer in this listener's list: closed, counted as
        /// `sessions_closed`.
        var upstreamRemoved = 0
        /// Not a UDP socket connected to the entry's upstream, or a client of the other address
        /// family than this listener's socket: closed (when a descriptor at all), counted as
        /// `session_errors`.
        var unusable = 0
        /// Beyond `max_sessions` (or the room for live and held sockets): closed, counted as
        /// `sessions_evicted`.
        var noRoom = 0
        /// Their client already has a session here (one opened since the listener started
        /// reading): closed, counted as `sessions_closed`; the newer session stays.
        var clientHasSession = 0

        var refused: Int { upstreamRemoved + unusable + noRoom + clientHasSession }
    }

    /// Takes every live session out of this worker without closing its socket, for another
    /// worker (a reload that rebuilds the listener) or the next process (a restart): each leaves
    /// the wait set, `sessions_active` drops to 0, and the caller owns the descriptors returned.
    /// Entries carry this listener's name, `socket` (which of the listener's sockets this
    /// worker serves: the caller knows), the upstream the socket is connected to, the idle time
    /// at `now` (from the last datagram either way), the requests and replies so far, and the
    /// kernel's drop count last seen, its age and bytes each way (for its record in the session
    /// log, which comes where it ends: a handed-over session has not ended). Least recently
    /// used first.
    ///
    /// Runs on `queue`, once the listener has stopped reading (the caller sees to it: a datagram
    /// read afterwards opens a new session). Held sessions stay: they close after their hold,
    /// or at stop. Not counted as closed: the sessions live on elsewhere.
    func takeSessions(socket: UInt16, now: UInt64 = SystemClock.monotonicNanos()) -> [HandedOverSession] {
        dispatchPrecondition(condition: .onQueue(queue))
        let taken = sessions.takeLive()
        var out: [HandedOverSession] = []
        out.reserveCapacity(taken.count)
        for (session, lastUsed) in taken {
            waitSet.remove(session.fd)
            upCounters[Int(session.upstream)].sessionEnded()
            let upstream = Self.peerAddress(session.fd) ?? upstreams.address(Int(session.upstream))
            guard let client = session.clientAddress, let upstream else {
                // Cannot happen for a socket this worker connected; closed rather than lost.
                Syscall.close(session.fd)
                counters.add(.sessionErrors)
                continue
            }
            guard !session.proxied else {
                // Its replies go to the proxy it came through, which an archive entry does not
                // carry: closed, and the client's next datagram through the proxy opens a new one.
                Syscall.close(session.fd)
                recordSessionEnd(SessionRecord(session, upstream: upstream), SessionEnd(.shutdown))
                continue
            }
            let idle = UInt32(clamping: (now > lastUsed ? now - lastUsed : 0) / 1_000_000)
            let entry = SessionArchive.Entry(
                listener: listenerName, socket: socket, client: client, local: session.localAddress,
                interface: session.ifindex, upstream: upstream, idleMilliseconds: idle,
                requests: session.requests, replies: session.replies, kernelDrops: session.kernelDrops,
                ageMilliseconds: (now > session.started ? now - session.started : 0) / 1_000_000,
                requestBytes: session.requestBytes, replyBytes: session.replyBytes)
            out.append(HandedOverSession(entry: entry, fd: session.fd, kernelDrops: session.kernelDrops))
        }
        counters.set(.sessionsActive, UInt64(sessions.liveCount))
        if !out.isEmpty {
            logger.info("sessions handed over", metadata: ["sessions": "\(out.count)", "sessions.held": "\(sessions.heldCount)"])
        }
        return out
    }

    /// Has `stop` hand the live sessions to `sink` (on `queue`, after the listener's last pass,
    /// see `takeSessions`) instead of closing them; held ones still close. Call before `stop`.
    func handSessionsOverAtStop(socket: UInt16, to sink: @escaping @Sendable ([HandedOverSession]) -> Void) {
        submit { [self] in handOverAtStop = (socket, sink) }
    }

    /// `adoptSessions` from any thread but `queue`, once the listener's upstream hostnames have
    /// had their first answers (waits for them as `start` does, at most
    /// `UpstreamTable.resolveWait`): before `start`, or right after it.
    func takeOver(_ handed: [HandedOverSession]) -> Adoption {
        upstreams.awaitInitialResolution()
        return submitAndWait { adoptSessions(handed) }
    }

    /// Takes in sessions handed over by another worker or process. For each: its descriptor must
    /// be a UDP socket of the upstream's family connected to the entry's upstream, and the client
    /// of this listener socket's family; the upstream must still be in this listener's list
    /// (matched by address); the table must have room (`max_sessions`: the least recently used
    /// beyond it go; an adopted session never evicts one here) and no session for that client. Otherwise the socket is closed and
    /// counted (see `Adoption`). An adopted session gets this listener's socket buffers and is
    /// then like one opened here: its replies go to its client (from the entry's local address on
    /// wildcard listeners), its client's datagrams reuse it, it expires `session_timeout` after
    /// its last use (`now` minus its idle time; older first keeps the order exact), is evicted,
    /// and counts replies against `session_max_replies` with the requests and replies it brought.
    /// Not counted in `sessions_created`, nor in its upstream's `sessions`: it was created before.
    /// With `session_log`, each one refused is a session that ends here, and gets its record
    /// (`upstream_removed`, `evicted`, `replaced`, `unusable`).
    ///
    /// Runs on `queue`, before the worker serves (a client that sent meanwhile has a newer session
    /// here, which stays). Upstream hostnames are matched by the addresses they have now: call
    /// it after `UpstreamTable.awaitInitialResolution` (`takeOver` does).
    @discardableResult
    func adoptSessions(_ handed: [HandedOverSession], now: UInt64 = SystemClock.monotonicNanos()) -> Adoption {
        dispatchPrecondition(condition: .onQueue(queue))
        var result = Adoption()
        let addresses = (0..<upstreams.count).map { upstreams.address($0) }
        // Oldest first, so every idle time is kept exactly (see `SessionTable.adopt`); beyond
        // `max_sessions` the least recently used go, as eviction would pick them.
        let ordered = handed.sorted(by: { $0.entry.idleMilliseconds > $1.entry.idleMilliseconds })
        var beyondRoom = ordered.count - max(0, sessions.maxSessions - sessions.liveCount)
        for h in ordered {
            let e = h.entry
            let sourcePort = sessionRecords != nil ? Self.sourcePort(h.fd) : 0
            func ended(_ end: SessionEnd) { recordSessionEnd(SessionRecord(e, sourcePort: sourcePort, now: now), end) }
            if beyondRoom > 0 {
                beyondRoom -= 1
                ended(.evicted)
                if h.fd >= 0 { Syscall.close(h.fd) }
                counters.add(.sessionsEvicted)
                result.noRoom += 1
                continue
            }
            guard e.client.ip.isIPv6 == localAddress.ip.isIPv6, (e.local?.ip.isIPv6 ?? e.client.ip.isIPv6) == e.client.ip.isIPv6,
                Self.isSessionSocket(h.fd, connectedTo: e.upstream)
            else {
                ended(.unusable)
                if h.fd >= 0 { Syscall.close(h.fd) }
                counters.add(.sessionErrors)
                result.unusable += 1
                continue
            }
            guard let upstream = addresses.firstIndex(of: e.upstream) ?? upstreams.drainingSlot(for: e.upstream) else {
                ended(.upstreamRemoved)
                Syscall.close(h.fd)
                counters.add(.sessionsClosed)
                result.upstreamRemoved += 1
                continue
            }
            UDPSocket.setBuffers(h.fd, receive: receiveBuffer, send: sendBuffer, force: &forceBuffers)
            UDPSocket.enableDropCount(h.fd)
            var session = Session(fd: h.fd, key: ClientKey(high: 0, low: 0, rest: 0), upstream: upstream)
            session.setAddresses(client: e.client, local: usesPacketInfo ? e.local : nil, interface: e.interface)
            // The key a datagram from this client gets (`forward`), from the same bytes.
            guard let key = withUnsafeBytes(of: session.client, { ClientKey(sockaddr: $0.baseAddress!) }) else {
                ended(.unusable)
                Syscall.close(h.fd)
                counters.add(.sessionErrors)
                result.unusable += 1
                continue
            }
            session.key = key
            session.requests = e.requests
            session.replies = e.replies
            session.kernelDrops = h.kernelDrops
            session.requestBytes = e.requestBytes
            session.replyBytes = e.replyBytes
            session.started = SessionRecord.started(ageMilliseconds: e.ageMilliseconds, now: now)
            session.sourcePort = sourcePort
            let idle = UInt64(e.idleMilliseconds) * 1_000_000
            do {
                try sessions.adopt(session, lastUsed: now > idle ? now - idle : 0, now: now) { (tag) throws(SyscallError) in
                    try waitSet.add(h.fd, tag: tag)
                }
                upCounters[upstream].sessionAdopted()
                result.adopted += 1
            } catch {
                switch error {
                case .full:
                    ended(.evicted)
                    counters.add(.sessionsEvicted)
                    result.noRoom += 1
                case .clientHasSession:
                    ended(.replaced)
                    counters.add(.sessionsClosed)
                    result.clientHasSession += 1
                case .register:
                    ended(.unusable)
                    counters.add(.sessionErrors)
                    result.unusable += 1
                }
            }
        }
        counters.set(.sessionsActive, UInt64(sessions.liveCount))
        if result.refused > 0 {
            logger.notice(
                "handed-over sessions refused: closed",
                metadata: [
                    "sessions.adopted": "\(result.adopted)", "upstream_removed": "\(result.upstreamRemoved)",
                    "unusable": "\(result.unusable)", "no_room": "\(result.noRoom)", "client_has_session": "\(result.clientHasSession)",
                ])
        } else if result.adopted > 0 {
            logger.info("sessions taken over", metadata: ["sessions.adopted": "\(result.adopted)"])
        }
        return result
    }

    /// Whether `fd` is a UDP socket of `upstream`'s family connected to `upstream`; made
    /// non-blocking and close-on-exec when it is (a descriptor from elsewhere may not be).
    static func isSessionSocket(_ fd: Int32, connectedTo upstream: SocketAddress) -> Bool {
        guard fd >= 0,
            (try? UDPSocket.getIntOption(fd, SOL_SOCKET, SO_TYPE)) == Int32(SOCK_DGRAM.rawValue),
            (try? UDPSocket.getIntOption(fd, SOL_SOCKET, SO_DOMAIN)) == upstream.family,
            (try? UDPSocket.getIntOption(fd, SOL_SOCKET, SO_PROTOCOL)) == Int32(IPPROTO_UDP),
            peerAddress(fd) == upstream
        else { return false }
        guard (try? Syscall.setNonBlocking(fd)) != nil else { return false }
        try? Syscall.setCloseOnExec(fd)
        return true
    }

    /// The peer a socket is connected to (getpeername), nil when none or not a socket.
    static func peerAddress(_ fd: Int32) -> SocketAddress? {
        try? Syscall.peerAddress(fd)
    }
}
