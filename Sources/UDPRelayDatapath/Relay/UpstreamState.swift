import UDPRelayConfig

#if canImport(Glibc)
import Glibc
#endif

/// What the datapath reads about each upstream without a lock, one named atomic per fact and
/// upstream (relaxed loads, any thread).
///
/// One owner writes it: the holder of `UpstreamTable`'s lock, in the same critical section that
/// changes the `HealthState` or address it mirrors, so a value published from one worker's
/// queue cannot be overwritten by an older decision from another queue. `downUntil` moreover
/// only moves forward (`extendDownUntil`), as `HealthState.downUntil` does.
struct UpstreamFlags: @unchecked Sendable {
    // @unchecked: the slots are only accessed through atomic operations.
    /// Passively down until this time (monotonic ns); 0: never marked down.
    let downUntil: AtomicSlots
    /// Actively down: the last `health_fails` probes went unanswered (0 or 1).
    let probeDown: AtomicSlots
    /// Holds an address that takes new sessions (0 or 1): a literal, or an address of its
    /// hostname's last answer (0 for a free slot and for an address that left the answer).
    let resolved: AtomicSlots

    init(count: Int) {
        downUntil = AtomicSlots(count: count)
        probeDown = AtomicSlots(count: count)
        resolved = AtomicSlots(count: count)
    }

    /// Whether upstream `i` may take new sessions now: resolved and not down.
    @inline(__always)
    func isUp(_ i: Int, now: UInt64) -> Bool {
        resolved[i] == 1 && probeDown[i] == 0 && now >= downUntil[i]
    }

    func isDown(_ i: Int, now: UInt64) -> Bool { probeDown[i] == 1 || now < downUntil[i] }

    /// Publishes a passive mark-down that lasts until `until`, unless a later one is there.
    func extendDownUntil(_ i: Int, to until: UInt64) {
        downUntil.raise(i, to: until)
    }
}

/// What `UpstreamTable` keeps behind its lock, per upstream.
struct UpstreamLockedState {
    var addresses: [SocketAddress?]
    var health: [HealthState]
    /// The last failure seen per upstream, for `/status` and the page.
    var lastError: [UpstreamError?]
    /// Per slot: when its address left its hostname's answer (monotonic ns); nil while it is in
    /// the answer (or a literal, or free).
    var removedAt: [UInt64?]
    /// Per slot: its counters when it took its present address (a slot is reused once free).
    var counterBase: [UpstreamCounterSnapshot]
}

/// One upstream of a relay listener as the status endpoint shows it.
public struct UpstreamSnapshot: Sendable, Equatable {
    /// As configured (`192.0.2.10:53`, `dns.example:53`): every address of a hostname has a
    /// row of its own with the hostname here.
    public let endpoint: String
    /// The address of this row; nil while a hostname has no address.
    public let address: SocketAddress?
    /// Marked down by passive or active health checks.
    public let down: Bool
    /// Summed over the listener's workers.
    public let counters: UpstreamCounterSnapshot
    /// The last failure seen (`connection refused`, `health probe not answered within 5s`,
    /// `cannot resolve: ...`), kept after the upstream comes back; nil when none was seen.
    public let lastError: String?
    /// `drain`, or an address its hostname no longer resolves to: takes no new sessions; its
    /// sessions continue (`counters[.sessionsActive]`).
    public let draining: Bool
    /// `backup`: takes new sessions only while no primary is up.
    public let backup: Bool
    /// `weight=N` (1 when not given).
    public let weight: Int
    /// `endpoint` is a hostname: `address` is one of its addresses.
    public let hostname: Bool
    /// The address left its hostname's answer: it drains, and goes once its sessions end.
    public let removed: Bool

    public init(
        endpoint: String, address: SocketAddress?, down: Bool, counters: UpstreamCounterSnapshot, lastError: String?,
        draining: Bool, backup: Bool, weight: Int, hostname: Bool = false, removed: Bool = false
    ) {
        self.endpoint = endpoint
        self.address = address
        self.down = down
        self.counters = counters
        self.lastError = lastError
        self.draining = draining
        self.backup = backup
        self.weight = weight
        self.hostname = hostname
        self.removed = removed
    }

    /// One lower-case word for status pages: `up`, `down` (health checks), or `unresolved`
    /// (a hostname that has never resolved; it takes no traffic).
    public var state: String {
        if address == nil { return "unresolved" }
        return down ? "down" : "up"
    }
}

/// The last failure of an upstream, stored without allocating and described when shown.
enum UpstreamError: Sendable, Equatable {
    /// A send or receive towards it failed (ECONNREFUSED: ICMP port unreachable).
    case errno(Int32)
    /// A health probe got no answer within `health_interval`.
    case probeUnanswered
    /// Its hostname did not resolve.
    case unresolved(String)

    func describe(interval: Duration) -> String {
        switch self {
        case .errno(let e): String(cString: strerror(e)).lowercased() + (e == ECONNREFUSED ? " (ICMP port unreachable)" : "")
        case .probeUnanswered: "health probe not answered within \(interval)"
        case .unresolved(let message): "cannot resolve: \(message)"
        }
    }
}
