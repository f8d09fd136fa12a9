import Synchronization
import UDPRelayConfig

/// The counters every worker keeps. Each has one public name, a kind and the modes it is
/// reported for (`row`), from which the log, `/status`, `/metrics` and the page take their lists.
public enum Counter: Int, CaseIterable, Sendable {
    case receivedPackets
    case receivedBytes
    case sentPackets
    case sentBytes
    /// Datagrams larger than `max_datagram` (seen with MSG_TRUNC): dropped, never echoed cut short.
    case dropTooLarge
    /// The send buffer was full (EAGAIN/ENOBUFS): dropped rather than spin.
    case dropSendBufferFull
    /// ICMP port unreachable reported back (ECONNREFUSED).
    case dropRefused
    /// Any other per-datagram send failure (EHOSTUNREACH, ENETUNREACH, EMSGSIZE, EPERM, ...).
    case dropSendError
    /// Source port is a known reflector (`deny_source_ports`).
    case dropSourcePort
    /// Source is one of this daemon's own listener addresses (`loop_guard`).
    case dropLoop
    /// Denied by the listener's `allow`/`deny` rules.
    case dropDenied
    /// The source address is over `rate_limit`.
    case dropRateLimited
    /// The listener as a whole is over `rate_limit_total`.
    case dropRateLimitedTotal
    /// Relay: no session could be opened for a new client (out of descriptors, no upstream
    /// address, connect failed), so its datagram was dropped. See also `sessionErrors`.
    case dropNoSession
    /// The kernel dropped datagrams because a socket's receive buffer was full (SO_RXQ_OVFL):
    /// requests on the listener socket, replies on relay session sockets. Seen when the next
    /// datagram on that socket is read.
    case dropReceiveBufferFull
    /// Receive calls that failed with an error other than "would block".
    case receiveErrors
    /// Relay modes; zero on echo listeners.
    /// Sessions open now (a gauge, not monotonic).
    case sessionsActive
    case sessionsCreated
    /// Closed after `session_timeout` without traffic.
    case sessionsExpired
    /// Closed to make room for a new client at `max_sessions` (least recently used first).
    case sessionsEvicted
    /// Closed after `session_max_replies` replies.
    case sessionsClosed
    /// Closed because its upstream refused (ICMP port unreachable) or a send to it failed; the
    /// client's next datagram opens a new session on an upstream that is up.
    case sessionsFailed
    /// A session could not be opened (no upstream address, socket or connect failed): the
    /// datagram is dropped.
    case sessionErrors
    /// New sessions given an upstream while every upstream was down.
    case failOpen
    /// Mirror: datagrams not copied because of `sample = 1/N`.
    case sampledOut
    /// Replies from upstreams dropped on purpose: every reply in mirror mode, replies beyond
    /// `session_max_replies` in forward/balance.
    case repliesIgnored
    /// Every mode: sources forgotten by the per-source rate limiter because its table was full.
    case rateLimitEvictions
    /// `accept_proxy_protocol`: a datagram from a `proxy_protocol_from` source without a valid
    /// PROXY v2 header (missing, malformed, or cut short).
    case dropProxyHeaderInvalid
}

/// What a counter measures, which decides where it is shown.
public enum CounterKind: Sendable {
    /// Datagrams and bytes in and out (`received`, `sent` in `/status`).
    case traffic
    /// Calls that failed (`receive_errors`; an upstream's `failures`).
    case error
    /// Datagrams dropped, one counter per reason; the name is the reason (`drops` in `/status`,
    /// `udprelayd_drops_total{reason=...}`, `drop.REASON` in the totals log line).
    case drop
    /// The session table: `sessions` in `/status`, `udprelayd_sessions_*` in `/metrics`.
    case session
    /// Anything else that happened, by name: `counters` in `/status`,
    /// `udprelayd_events_total{event=...}` (`udprelayd_upstream_events_total` for upstreams).
    case event
}

extension Counter {
    /// Every listener, or only relay listeners (on echo the counter stays zero and is not shown).
    private enum Scope { case every, relay }

    /// The one table of counter facts: public name, kind and the listeners it is reported for.
    private var row: (name: String, kind: CounterKind, scope: Scope) {
        switch self {
        case .receivedPackets: ("received_packets", .traffic, .every)
        case .receivedBytes: ("received_bytes", .traffic, .every)
        case .sentPackets: ("sent_packets", .traffic, .every)
        case .sentBytes: ("sent_bytes", .traffic, .every)
        case .dropTooLarge: ("too_large", .drop, .every)
        case .dropSendBufferFull: ("send_buffer_full", .drop, .every)
        case .dropRefused: ("refused", .drop, .every)
        case .dropSendError: ("send_error", .drop, .every)
        case .dropSourcePort: ("source_port", .drop, .every)
        case .dropLoop: ("loop", .drop, .every)
        case .dropDenied: ("denied", .drop, .every)
        case .dropRateLimited: ("rate_limited", .drop, .every)
        case .dropRateLimitedTotal: ("rate_limited_total", .drop, .every)
        case .dropNoSession: ("no_session", .drop, .every)
        case .dropReceiveBufferFull: ("receive_buffer_full", .drop, .every)
        case .receiveErrors: ("receive_errors", .error, .every)
        case .sessionsActive: ("sessions_active", .session, .relay)
        case .sessionsCreated: ("sessions_created", .session, .relay)
        case .sessionsExpired: ("sessions_expired", .session, .relay)
        case .sessionsEvicted: ("sessions_evicted", .session, .relay)
        case .sessionsClosed: ("sessions_closed", .event, .relay)
        case .sessionsFailed: ("sessions_failed", .event, .relay)
        case .sessionErrors: ("session_errors", .event, .relay)
        case .failOpen: ("fail_open", .event, .relay)
        case .sampledOut: ("sampled_out", .event, .relay)
        case .repliesIgnored: ("replies_ignored", .event, .relay)
        case .rateLimitEvictions: ("rate_limit_evictions", .event, .every)
        case .dropProxyHeaderInvalid: ("proxy_header_invalid", .drop, .every)
        }
    }

    /// The name the log, `/status`, `/metrics` and the page use (a drop's is its reason).
    public var name: String { row.name }

    public var kind: CounterKind { row.kind }

    /// The listener modes that report it.
    public var modes: [ListenerMode] {
        switch row.scope {
        case .every: ListenerMode.allCases
        case .relay: ListenerMode.allCases.filter(\.isRelay)
        }
    }

    /// Every drop reason, in a fixed order: `/status` and `/metrics` show all of them.
    public static let dropCounters: [Counter] = allCases.filter { $0.kind == .drop }

    /// The session and event counters of relay listeners only (zero on echo), with their names,
    /// for the totals log line.
    public static let relayCounters: [(name: String, counter: Counter)] =
        allCases
        .filter { ($0.kind == .session || $0.kind == .event) && !$0.modes.contains(.echo) }
        .map { ($0.name, $0) }

    /// The event counters a listener of `mode` reports, in a fixed order (`counters` in `/status`).
    public static func events(for mode: ListenerMode) -> [Counter] {
        eventsByMode[mode] ?? []
    }

    private static let eventsByMode: [ListenerMode: [Counter]] = Dictionary(
        uniqueKeysWithValues: ListenerMode.allCases.map { m in
            (m, allCases.filter { $0.kind == .event && $0.modes.contains(m) })
        })
}

/// One worker's counters. Each has a single writer (the worker's queue), which adds with a
/// relaxed load and store (no locked instruction on the hot path); readers on other threads
/// take relaxed loads and sum workers on demand. 64-bit and monotonic.
public final class CounterSet: Sendable {
    private let words = AtomicWords(count: Counter.allCases.count)

    public init() {}

    deinit { words.deallocate() }

    /// Adds `n` to a counter. Call only from the owning worker's queue (single writer).
    @inline(__always)
    public func add(_ counter: Counter, _ n: UInt64 = 1) {
        words.add(counter.rawValue, n)
    }

    /// Sets a gauge (`sessionsActive`). Call only from the owning worker's queue.
    @inline(__always)
    public func set(_ counter: Counter, _ v: UInt64) {
        words[counter.rawValue] = v
    }

    public func value(_ counter: Counter) -> UInt64 {
        words[counter.rawValue]
    }

    /// Adds the monotonic counters of `earlier` (not the `sessionsActive` gauge): a worker that
    /// replaces another (a reload that rebuilds its listener) continues its counts. Call before
    /// the worker starts, or from its queue.
    public func carry(_ earlier: CounterSnapshot) {
        for c in Counter.allCases where c != .sessionsActive && earlier[c] != 0 { add(c, earlier[c]) }
    }

    public func snapshot() -> CounterSnapshot {
        var s = CounterSnapshot()
        for c in Counter.allCases { s.values[c.rawValue] = value(c) }
        return s
    }
}

/// A plain copy of counter values, summable across workers.
public struct CounterSnapshot: Sendable, Equatable {
    public var values = [UInt64](repeating: 0, count: Counter.allCases.count)

    public init() {}

    public subscript(_ c: Counter) -> UInt64 {
        get { values[c.rawValue] }
        set { values[c.rawValue] = newValue }
    }

    public static func + (a: CounterSnapshot, b: CounterSnapshot) -> CounterSnapshot {
        var s = a
        for i in s.values.indices { s.values[i] &+= b.values[i] }
        return s
    }

    /// Sum of all drop counters.
    public var dropped: UInt64 { Counter.dropCounters.reduce(0) { $0 + self[$1] } }
}

/// Per-upstream counters of one worker (single writer, like `CounterSet`).
public enum UpstreamCounter: Int, CaseIterable, Sendable {
    /// Datagrams and bytes sent to the upstream.
    case sentPackets
    case sentBytes
    /// Datagrams and bytes received from it (replies; for mirror, ignored replies).
    case receivedPackets
    case receivedBytes
    /// Datagrams for it that were dropped (send buffer full, send error, refused).
    case sendDrops
    /// Failures counted by passive health (refused, send errors).
    case failures
    /// Sessions given this upstream.
    case sessions
    /// Health probes sent and answered.
    case probesSent
    case probesAnswered
    /// Gauge: this worker's live sessions on the upstream (`sessionOpened`, `sessionEnded`);
    /// summed over workers in snapshots.
    case sessionsActive

    /// The one table of upstream counter facts: public name and kind.
    private var row: (name: String, kind: CounterKind) {
        switch self {
        case .sentPackets: ("sent_packets", .traffic)
        case .sentBytes: ("sent_bytes", .traffic)
        case .receivedPackets: ("received_packets", .traffic)
        case .receivedBytes: ("received_bytes", .traffic)
        case .sendDrops: ("send_drops", .event)
        case .failures: ("failures", .error)
        case .sessions: ("sessions", .event)
        case .probesSent: ("probes_sent", .event)
        case .probesAnswered: ("probes_answered", .event)
        case .sessionsActive: ("sessions_active", .session)
        }
    }

    /// The name the log (`upstream totals`), `/status`, `/metrics` and the page use.
    public var name: String { row.name }

    public var kind: CounterKind { row.kind }

    /// The upstream's event counters, in a fixed order (`counters` of an upstream in `/status`).
    public static let events: [UpstreamCounter] = allCases.filter { $0.kind == .event }
}

/// One worker's counters for one upstream: single writer, lock-free readers.
public final class UpstreamCounterSet: Sendable {
    private let words = AtomicWords(count: UpstreamCounter.allCases.count)

    public init() {}

    deinit { words.deallocate() }

    /// Adds `n`. Call only from the owning queue (single writer).
    @inline(__always)
    public func add(_ counter: UpstreamCounter, _ n: UInt64 = 1) {
        words.add(counter.rawValue, n)
    }

    public func value(_ counter: UpstreamCounter) -> UInt64 {
        words[counter.rawValue]
    }

    /// A session on this upstream opened: counts it (`sessions`) and raises the live gauge.
    /// Call only from the owning queue.
    @inline(__always)
    public func sessionOpened() {
        words.add(UpstreamCounter.sessions.rawValue, 1)
        words.add(UpstreamCounter.sessionsActive.rawValue, 1)
    }

    /// A live session on this upstream was taken over from the previous process or listener
    /// (a reload's handover): raises the live gauge without counting a new session.
    @inline(__always)
    public func sessionAdopted() {
        words.add(UpstreamCounter.sessionsActive.rawValue, 1)
    }

    /// A session on this upstream ended (closed, evicted, expired, handed over): lowers the
    /// live gauge. Call only from the owning queue, once per `sessionOpened`.
    @inline(__always)
    public func sessionEnded() {
        words.add(UpstreamCounter.sessionsActive.rawValue, UInt64.max)  // wraps: minus one
    }
}

/// A plain copy of one upstream's counters, summed over workers.
public struct UpstreamCounterSnapshot: Sendable, Equatable {
    public var values = [UInt64](repeating: 0, count: UpstreamCounter.allCases.count)

    public init() {}

    public subscript(_ c: UpstreamCounter) -> UInt64 {
        get { values[c.rawValue] }
        set { values[c.rawValue] = newValue }
    }
}

/// A fixed number of 64-bit atomics (relaxed), for state that one owner writes and any thread
/// reads without a lock (upstream health for balancing and snapshots).
final class AtomicSlots: Sendable {
    private let words: AtomicWords
    let count: Int

    init(count: Int) {
        self.count = count
        words = AtomicWords(count: count)
    }

    deinit { words.deallocate() }

    @inline(__always)
    subscript(_ i: Int) -> UInt64 {
        get { words[i] }
        set { words[i] = newValue }
    }

    /// Stores `value` in slot `i` unless the slot holds a larger one already (any thread).
    func raise(_ i: Int, to value: UInt64) {
        words.raise(i, to: value)
    }
}

/// `count` 64-bit atomics (`Synchronization.Atomic`) in one allocation: the storage of the
/// counter sets and slots above. A pointer, not an owner: whoever makes one deallocates it.
struct AtomicWords: @unchecked Sendable {
    // @unchecked: the words are only accessed through atomic operations.
    private let base: UnsafeMutablePointer<Atomic<UInt64>>
    private let count: Int

    init(count: Int) {
        self.count = max(count, 1)
        base = .allocate(capacity: self.count)
        for i in 0..<self.count { (base + i).initialize(to: Atomic(0)) }
    }

    func deallocate() {
        base.deinitialize(count: count)
        base.deallocate()
    }

    /// Relaxed load and store.
    @inline(__always)
    subscript(_ i: Int) -> UInt64 {
        get { base[i].load(ordering: .relaxed) }
        nonmutating set { base[i].store(newValue, ordering: .relaxed) }
    }

    /// Adds `n` with a relaxed load and store (no locked instruction): single writer only.
    @inline(__always)
    func add(_ i: Int, _ n: UInt64) {
        base[i].store(base[i].load(ordering: .relaxed) &+ n, ordering: .relaxed)
    }

    /// Stores `value` unless the word holds a larger one already (any number of writers).
    func raise(_ i: Int, to value: UInt64) {
        var current = base[i].load(ordering: .relaxed)
        while current < value {
            let (exchanged, original) = base[i].weakCompareExchange(expected: current, desired: value, ordering: .relaxed)
            if exchanged { return }
            current = original
        }
    }
}
