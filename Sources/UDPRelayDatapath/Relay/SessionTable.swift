import DequeModule
import UDPRelayConfig

#if canImport(Glibc)
import Glibc
#endif

/// The sessions of one relay worker: which client has which slot, the slots themselves (a flat
/// array of `Session`), the free slots, the least-recently-used order (`IdleList`) and the held
/// sockets of closed sessions.
///
/// A session that is evicted, expires, gets its `session_max_replies` or fails on an upstream
/// that may still answer keeps its socket, out of the table, for `holdNanos`, and no held
/// socket is released before that (see `RelayWorker` for why). Live and held sockets together
/// stay within `budget`. A reused slot gets a new generation, so an epoll tag of the session
/// that had it before no longer resolves.
///
/// A value without I/O of its own: every operation that needs the time takes `now`
/// (nanoseconds), sockets are opened by the caller, and closing one goes through the injected
/// `closer`, so tests drive it with a fake clock and made-up descriptors. Epoll, counters and
/// logs are the caller's: operations say what they did (the slot opened, closed or evicted).
struct SessionTable {
    /// Why a session closes; it decides whether the socket is held.
    enum CloseReason {
        /// The least recently used session, for a new client at `max_sessions`.
        case evicted
        /// Idle for `session_timeout`.
        case expired
        /// It had its `session_max_replies` for every request.
        case answered
        /// Its upstream failed (unreachable, a firewall's EPERM): replies to earlier datagrams
        /// may still come, so the socket is held.
        case failed
        /// Its upstream refused (nothing listens there): no reply can follow, so the socket
        /// is closed at once.
        case refused
        /// The worker stops: closed at once.
        case shutdown
    }

    /// Most live sessions (`max_sessions`); a new client beyond it evicts the least recently used.
    let maxSessions: Int
    /// Most sockets, live and held: `max_sessions` + `heldCapacity`.
    let budget: Int
    /// How long the socket of a closed session is held.
    let holdNanos: UInt64
    /// A session without traffic either way for this long expires (`session_timeout`).
    let timeoutNanos: UInt64
    private let maxReplies: Int?
    private let closer: (Int32) -> Void

    private var table: [ClientKey: Int32] = [:]
    private var sessions: ContiguousArray<Session> = []
    private var freeSlots: [Int32] = []
    private var idle = IdleList()
    /// Closed sessions whose sockets are held, oldest first, with the time each was closed.
    private var heldSlots = Deque<(slot: Int32, since: UInt64)>()

    /// Room for held sockets per worker beyond `max_sessions`: `max_sessions`, within 256...4096.
    static func heldCapacity(maxSessions: Int) -> Int { min(4096, max(256, maxSessions)) }

    /// `closer` closes a session's descriptor when its slot is released.
    init(settings: SessionSettings, holdNanos: UInt64, closer: @escaping (Int32) -> Void = { Syscall.close($0) }) {
        self.maxSessions = settings.maxSessions
        self.budget = settings.maxSessions + Self.heldCapacity(maxSessions: settings.maxSessions)
        self.holdNanos = holdNanos
        self.timeoutNanos = settings.timeout.nanoseconds
        self.maxReplies = settings.maxReplies
        self.closer = closer
    }

    // MARK: looking sessions up

    /// Live sessions.
    var liveCount: Int { table.count }
    /// Closed sessions whose sockets are held.
    var heldCount: Int { heldSlots.count }
    /// At `max_sessions`: a new session needs `evictLeastRecentlyUsed` first.
    var isFull: Bool { table.count >= maxSessions }

    /// The session in `slot` (live, held, or what a free slot last held).
    @inline(__always)
    subscript(slot: Int32) -> Session { sessions[Int(slot)] }

    /// The slot of `key`'s live session, if it has one.
    @inline(__always)
    func slot(of key: ClientKey) -> Int32? { table[key] }

    /// The slot of `key`'s live session, marked as used at `now`.
    @inline(__always)
    mutating func lookup(_ key: ClientKey, now: UInt64) -> Int32? {
        guard let slot = table[key] else { return nil }
        idle.touch(slot, now: now)
        return slot
    }

    /// Open and not held: datagrams from its client go to its upstream.
    @inline(__always)
    func isLive(_ slot: Int32) -> Bool { sessions[Int(slot)].fd >= 0 && !sessions[Int(slot)].held }

    @inline(__always)
    func isHeld(_ slot: Int32) -> Bool { sessions[Int(slot)].fd >= 0 && sessions[Int(slot)].held }

    /// The slot an epoll `tag` (see `Session.tag(slot:)`) was given for, if that session's
    /// socket is still open (live or held); nil once the slot was released or reused.
    @inline(__always)
    func slot(forTag tag: UInt64) -> Int32? {
        let slot = Int32(bitPattern: UInt32(truncatingIfNeeded: tag))
        guard slot >= 0, Int(slot) < sessions.count, sessions[Int(slot)].fd >= 0,
            sessions[Int(slot)].generation == UInt32(truncatingIfNeeded: tag >> 32)
        else { return nil }
        return slot
    }

    /// Live sessions by slot, for shutdown.
    var liveSlots: [Int32] { sessions.indices.compactMap { isLive(Int32($0)) ? Int32($0) : nil } }

    /// At most `limit` live sessions, most recently used first, each with its last use: plain
    /// copies, for `/sessions` (see `RelayWorker.liveSessions`). Walks no further than `limit`.
    func mostRecentSessions(limit: Int) -> [(session: Session, lastUsed: UInt64)] {
        idle.mostRecent(limit).map { (sessions[Int($0.slot)], $0.lastUsed) }
    }

    // MARK: opening

    /// Whether one more socket fits in `budget`. When it does not, the held sockets whose hold
    /// is over at `now` are released first; a held socket is never released early.
    mutating func makeRoom(now: UInt64) -> Bool {
        if table.count + heldSlots.count >= budget { releaseHeld(now: now) }
        return table.count + heldSlots.count < budget
    }

    /// Runs `call` (opening or connecting a session socket); when descriptors or ports run out,
    /// releases the held sockets whose hold is over at `now` and tries once more.
    mutating func opening<T>(now: UInt64, _ call: () throws(SyscallError) -> T) throws(SyscallError) -> T {
        do {
            return try call()
        } catch {
            let before = heldSlots.count
            guard Self.isLocalShortage(error.errno) else { throw error }
            releaseHeld(now: now)
            guard heldSlots.count < before else { throw error }
            return try call()
        }
    }

    /// Out of descriptors (EMFILE, ENFILE, ENOBUFS) or of ephemeral ports (EAGAIN from the
    /// automatic bind of `connect`): this host's shortage, not the upstream's fault.
    /// (EADDRNOTAVAIL from `connect` means no source address for the upstream's family: that
    /// upstream cannot be reached, and counts against it.)
    static func isLocalShortage(_ err: Int32) -> Bool {
        err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM || err == EAGAIN
    }

    /// Makes `session` (its socket opened, its key and addresses set) the live session of its
    /// client, started at `now`, in a free slot or a new one, with a new generation. `register`
    /// gets the session's epoll tag; when it throws, the socket is closed and nothing is added. When
    /// `isFull`, call `evictLeastRecentlyUsed` first.
    mutating func open(
        _ session: Session, now: UInt64,
        register: (UInt64) throws(SyscallError) -> Void
    ) throws(SyscallError) -> Int32 {
        let slot: Int32
        if let free = freeSlots.popLast() {
            slot = free
        } else {
            slot = Int32(sessions.count)
            sessions.append(Session())
        }
        var s = session
        s.generation = sessions[Int(slot)].generation &+ 1
        s.held = false
        s.requests = 0
        s.replies = 0
        s.kernelDrops = 0
        s.requestBytes = 0
        s.replyBytes = 0
        s.started = now
        do {
            try register(s.tag(slot: slot))
        } catch {
            closer(s.fd)
            freeSlots.append(slot)
            throw error
        }
        sessions[Int(slot)] = s
        table[s.key] = slot
        idle.insert(slot, now: now)
        return slot
    }

    // MARK: closing

    /// Takes the live session in `slot` out of the table at `now`; its socket is held or, for
    /// `refused` and `shutdown` (or without a hold), closed. False when it was not live.
    @discardableResult
    mutating func close(_ slot: Int32, reason: CloseReason, now: UInt64) -> Bool {
        guard isLive(slot) else { return false }
        table.removeValue(forKey: sessions[Int(slot)].key)
        idle.remove(slot)
        switch reason {
        case .refused, .shutdown:
            release(slot)
        case .evicted, .expired, .answered, .failed:
            if holdNanos == 0 {
                release(slot)
            } else {
                sessions[Int(slot)].held = true
                heldSlots.append((slot, now))
            }
        }
        return true
    }

    /// Closes the least recently used session (`evicted`); returns its slot, nil when none is live.
    mutating func evictLeastRecentlyUsed(now: UInt64) -> Int32? {
        let oldest = idle.tail
        guard oldest >= 0 else { return nil }
        close(oldest, reason: .evicted, now: now)
        return oldest
    }

    /// Closes the least recently used session if it has been idle for `session_timeout` at
    /// `now` (`expired`) and returns its slot; nil when none has. Call until nil.
    mutating func expire(now: UInt64) -> Int32? {
        guard let slot = idle.expired(now: now, timeout: timeoutNanos) else { return nil }
        close(slot, reason: .expired, now: now)
        return slot
    }

    /// Releases the held sockets whose hold is over at `now`, oldest first. Sessions closed
    /// after `now` was read are stamped later: they stay, as does all after them.
    mutating func releaseHeld(now: UInt64) {
        while let oldest = heldSlots.first, oldest.since <= now, now - oldest.since >= holdNanos {
            heldSlots.removeFirst()
            release(oldest.slot)
        }
    }

    /// Releases the held sockets of `key`'s earlier sessions at once, whatever their hold;
    /// returns how many. For `transparent = yes`, where a session's socket is bound to its
    /// client's own address and port: a held one would keep the client's next session from
    /// binding them. The hold protects other clients from replies meant for this one; a reply
    /// to a released socket of this client can only ever be this client's, so releasing it
    /// early sends no one else's reply anywhere.
    @discardableResult
    mutating func releaseHeld(of key: ClientKey) -> Int {
        var released = 0
        var i = heldSlots.startIndex
        while i < heldSlots.endIndex {
            let slot = heldSlots[i].slot
            if sessions[Int(slot)].key == key {
                heldSlots.remove(at: i)
                release(slot)
                released += 1
            } else {
                i += 1
            }
        }
        return released
    }

    /// Releases every held socket, whatever its hold (the worker stops).
    mutating func releaseAllHeld() {
        while let oldest = heldSlots.popFirst() { release(oldest.slot) }
    }

    /// Closes a session's socket and frees its slot.
    private mutating func release(_ slot: Int32) {
        closer(sessions[Int(slot)].fd)
        sessions[Int(slot)].fd = -1
        sessions[Int(slot)].held = false
        freeSlots.append(slot)
    }

    // MARK: handing over

    /// Takes every live session out of the table without closing its socket, least recently
    /// used first, each with the time it was last used: sessions for another worker or the
    /// next process (see `RelayWorker.takeSessions`). Their slots are freed; held sessions
    /// stay, and close after their hold as usual. The caller owns the descriptors returned
    /// (and takes them out of its epoll set).
    mutating func takeLive() -> [(session: Session, lastUsed: UInt64)] {
        var out: [(session: Session, lastUsed: UInt64)] = []
        out.reserveCapacity(table.count)
        while idle.tail >= 0 {
            let slot = idle.tail
            out.append((sessions[Int(slot)], idle.lastUsed(slot)))
            table.removeValue(forKey: sessions[Int(slot)].key)
            idle.remove(slot)
            sessions[Int(slot)].fd = -1
            freeSlots.append(slot)
        }
        return out
    }

    /// Why `adopt` refused a session (its socket is then closed).
    enum AdoptionRefusal: Error, Equatable {
        /// At `max_sessions`, or live and held sockets fill the `budget`.
        case full
        /// Its client already has a live session here.
        case clientHasSession
        /// It could not join the epoll set.
        case register(SyscallError)
    }

    /// Makes `session`, handed over from another worker or process (its socket open and
    /// connected; key, addresses, upstream, counts and start set), a live session here,
    /// last used at `lastUsed`, in a free slot or a new one, with a new generation. `register`
    /// gets its epoll tag. From then on it is like any session opened here: it expires
    /// `session_timeout` after `lastUsed`, is evicted in its turn, counts its replies against
    /// `session_max_replies` with the requests and replies it brought.
    ///
    /// Idle order is kept by clamping: `lastUsed` is taken at most `now` and at least the time
    /// of the most recently used session already here, so adopt the oldest first (as
    /// `takeLive` returns them) into a table that serves no one yet to keep every idle time
    /// exact; adopted later, a session may live a little longer, never shorter.
    ///
    /// Refused (and its socket closed through the closer) when the table is full (an adopted
    /// session never evicts one here: held sockets whose hold is over are released to make
    /// room, as for a new client), when its client already has a live session, or when
    /// `register` throws.
    @discardableResult
    mutating func adopt(
        _ session: Session, lastUsed: UInt64, now: UInt64,
        register: (UInt64) throws(SyscallError) -> Void
    ) throws(AdoptionRefusal) -> Int32 {
        guard table[session.key] == nil else {
            closer(session.fd)
            throw .clientHasSession
        }
        guard !isFull, makeRoom(now: now) else {
            closer(session.fd)
            throw .full
        }
        var stamp = min(lastUsed, now)
        if idle.head >= 0 { stamp = max(stamp, idle.lastUsed(idle.head)) }
        let requests = session.requests, replies = session.replies, kernelDrops = session.kernelDrops
        let requestBytes = session.requestBytes, replyBytes = session.replyBytes, started = session.started
        let slot: Int32
        do {
            slot = try open(session, now: stamp, register: register)
        } catch {
            throw .register(error)
        }
        sessions[Int(slot)].requests = requests
        sessions[Int(slot)].replies = replies
        sessions[Int(slot)].kernelDrops = kernelDrops
        sessions[Int(slot)].requestBytes = requestBytes
        sessions[Int(slot)].replyBytes = replyBytes
        sessions[Int(slot)].started = started
        return slot
    }

    // MARK: requests and replies

    /// `sent` datagrams (`bytes` in all) went to the session's upstream.
    @inline(__always)
    mutating func recordRequests(_ slot: Int32, _ sent: Int, bytes: UInt64 = 0) {
        sessions[Int(slot)].requests = Self.saturatingAdd(sessions[Int(slot)].requests, sent)
        sessions[Int(slot)].requestBytes &+= bytes
    }

    /// Of `received` replies, how many may still go to the session's client.
    @inline(__always)
    func repliesAllowed(_ slot: Int32, _ received: Int) -> Int {
        Self.repliesAllowed(
            received, maxReplies: maxReplies, requests: sessions[Int(slot)].requests,
            replies: sessions[Int(slot)].replies)
    }

    /// `forwarded` replies (`bytes` in all) went to the session's client at `now`. When that
    /// was the last one `session_max_replies` allows for the requests so far, the session is
    /// closed (`answered`) and the result is true.
    @inline(__always)
    mutating func recordReplies(_ slot: Int32, _ forwarded: Int, bytes: UInt64 = 0, now: UInt64) -> Bool {
        sessions[Int(slot)].replies = Self.saturatingAdd(sessions[Int(slot)].replies, forwarded)
        sessions[Int(slot)].replyBytes &+= bytes
        idle.touch(slot, now: now)
        guard repliesAllowed(slot, 1) == 0 else { return false }
        return close(slot, reason: .answered, now: now)
    }

    /// The kernel's drop count of the session's socket is now `total`: returns how many were
    /// dropped since it was last seen.
    @inline(__always)
    mutating func recordKernelDrops(_ slot: Int32, total: UInt32) -> UInt32 {
        let new = total &- sessions[Int(slot)].kernelDrops
        sessions[Int(slot)].kernelDrops = total
        return new
    }

    /// Of `received` replies, how many may still go to the client: with `session_max_replies`
    /// = R, a session expects R replies per request it forwarded (nginx `proxy_responses` per
    /// `proxy_requests`), so pipelined requests (DNS A and AAAA from one socket) each get theirs.
    static func repliesAllowed(_ received: Int, maxReplies: Int?, requests: UInt32, replies: UInt32) -> Int {
        guard let maxReplies else { return received }
        let expected = UInt64(maxReplies) * UInt64(requests)
        return expected > UInt64(replies) ? Int(min(UInt64(received), expected - UInt64(replies))) : 0
    }

    @inline(__always)
    static func saturatingAdd(_ a: UInt32, _ n: Int) -> UInt32 {
        let (sum, overflow) = a.addingReportingOverflow(UInt32(clamping: n))
        return overflow ? .max : sum
    }
}
