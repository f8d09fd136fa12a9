import Dispatch
import NIOConcurrencyHelpers
import UDPRelayConfig

/// One live relay session as `/sessions` shows it: plain values copied on its worker's queue.
public struct LiveSession: Sendable, Equatable {
    /// `[listener NAME]`.
    public var listener: String
    /// The client's address; nil when it could not be read back.
    public var client: SocketAddress?
    /// The upstream as configured (`upstream =` entry, as `/status` names it).
    public var upstream: String
    /// The address the session sends to: the entry's, or for a hostname the one of its answer
    /// the session was opened on (nil while a name has no address).
    public var upstreamAddress: SocketAddress?
    /// Since the session opened, and since its last datagram either way (nanoseconds).
    public var ageNanos: UInt64
    public var idleNanos: UInt64
    /// Its last datagram either way, on the monotonic clock (`SystemClock.monotonicNanos`):
    /// the order of sessions taken on different workers at slightly different times.
    public var lastActiveNanos: UInt64
    /// Datagrams and bytes sent to the upstream, and replies and their bytes forwarded to the
    /// client.
    public var requests: UInt64
    public var requestBytes: UInt64
    public var replies: UInt64
    public var replyBytes: UInt64

    public init(
        listener: String, client: SocketAddress?, upstream: String, upstreamAddress: SocketAddress? = nil, ageNanos: UInt64,
        idleNanos: UInt64, lastActiveNanos: UInt64, requests: UInt64, requestBytes: UInt64, replies: UInt64, replyBytes: UInt64
    ) {
        self.listener = listener
        self.client = client
        self.upstream = upstream
        self.upstreamAddress = upstreamAddress
        self.ageNanos = ageNanos
        self.idleNanos = idleNanos
        self.lastActiveNanos = lastActiveNanos
        self.requests = requests
        self.requestBytes = requestBytes
        self.replies = replies
        self.replyBytes = replyBytes
    }
}

/// What `Datapath.liveSessions` found: the sessions, most recently used first, and the workers
/// that did not answer in time (one line each, as the liveness probe words them).
public struct LiveSessions: Sendable {
    public var sessions: [LiveSession]
    public var unanswered: [String]
}

extension RelayWorker {
    /// At most `limit` live sessions of this worker, most recently used first, with the time
    /// they were taken: copied on its queue (a walk of `limit` entries of the idle list, plain
    /// values, no formatting) and passed to `reply` there; `describe` formats them off the queue.
    func liveSessions(limit: Int, reply: @escaping @Sendable (_ found: [(session: Session, lastUsed: UInt64)], _ now: UInt64) -> Void) {
        submit { [self] in
            reply(sessions.mostRecentSessions(limit: limit), SystemClock.monotonicNanos())
        }
    }

    /// A session `liveSessions` found at `now`, as `/sessions` shows it. Reads only what does
    /// not change while the worker runs, and the upstream table under its lock (a slot keeps its
    /// address while sessions use it), so any thread may call it.
    func describe(_ s: Session, lastUsed: UInt64, now: UInt64) -> LiveSession {
        LiveSession(
            listener: listenerName, client: s.clientAddress,
            upstream: upstreams.endpoints[Int(s.upstream)].description, upstreamAddress: upstreams.address(Int(s.upstream)),
            ageNanos: now &- min(now, s.started), idleNanos: now &- min(now, lastUsed),
            lastActiveNanos: lastUsed,
            requests: UInt64(s.requests), requestBytes: s.requestBytes,
            replies: UInt64(s.replies), replyBytes: s.replyBytes)
    }
}

extension Datapath {
    /// At most `limit` live relay sessions (of listener `listener`, or of all), most recently
    /// used first: each relay worker copies its `limit` most recent on its own queue, and the
    /// lists are merged. Waits at most `timeout` for the workers; those that did not answer by
    /// then are listed in `unanswered` (their sessions are missing). Suspends, never blocks a
    /// thread.
    public func liveSessions(listener: String? = nil, limit: Int, timeout: Duration = .milliseconds(200)) async -> LiveSessions {
        let workers = listeners.filter { $0.configuration.mode.hasSessions && (listener == nil || $0.name == listener) }
            .flatMap { l in zip(l.workers, l.workerPlaces).compactMap { w, place in (w as? RelayWorker).map { (l.name, $0, place.suffix) } } }
        guard !workers.isEmpty, limit > 0 else { return LiveSessions(sessions: [], unanswered: []) }
        let answers = NIOLockedValueBox([(found: [(session: Session, lastUsed: UInt64)], now: UInt64)?](repeating: nil, count: workers.count))
        let tally = ProbeTally(count: workers.count)
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let resume = ResumeOnce(c)
            for (index, (_, worker, _)) in workers.enumerated() {
                worker.liveSessions(limit: limit) { found, now in
                    answers.withLockedValue { $0[index] = (found, now) }
                    if tally.mark(index) { resume() }
                }
            }
            DispatchQueue.global().asyncAfter(deadline: .now() + .nanoseconds(Int(clamping: timeout.nanoseconds))) { resume() }
        }
        let lists = answers.withLockedValue { $0 }
        // Merged on last use (the workers' clocks are one), then only the first `limit` formatted.
        let merged = lists.indices.flatMap { i in (lists[i]?.found ?? []).map { (worker: i, entry: $0) } }
            .sorted { $0.entry.lastUsed > $1.entry.lastUsed }.prefix(limit)
            .map { m in workers[m.worker].1.describe(m.entry.session, lastUsed: m.entry.lastUsed, now: lists[m.worker]!.now) }
        let unanswered = lists.indices.filter { lists[$0] == nil }.map { i in
            "listener '\(workers[i].0)' queue for \(workers[i].1.localAddress)\(workers[i].2) did not answer within \(timeout)"
        }
        return LiveSessions(sessions: merged, unanswered: unanswered)
    }
}
