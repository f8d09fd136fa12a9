/// Everything the status endpoint shows, as one plain value taken at one moment.
///
/// The daemon fills it from its own state (daemon record, configuration, datapath counters)
/// through a `StatusSource`; this module only renders it. Every page (`/status`, `/metrics`,
/// `/` and `/healthz`) of one request renders from one snapshot, so they never disagree.
public struct StatusSnapshot: Sendable, Equatable {
    public var daemon: DaemonInfo
    public var config: ConfigInfo
    /// Listeners in configuration order.
    public var listeners: [ListenerStatus]
    /// Wall-clock time the snapshot was taken, seconds since the epoch.
    public var time: Double

    public init(daemon: DaemonInfo, config: ConfigInfo, listeners: [ListenerStatus], time: Double) {
        self.daemon = daemon
        self.config = config
        self.listeners = listeners
        self.time = time
    }

    /// The listener named `name`, if any.
    public func listener(named name: String) -> ListenerStatus? {
        listeners.first { $0.name == name }
    }
}

/// The running process.
public struct DaemonInfo: Sendable, Equatable {
    public var version: String
    public var pid: Int32
    /// Process start, seconds since the epoch.
    public var startTime: Double
    /// The instance is draining (SIGUSR1 until SIGUSR2): `/healthz` answers 503 so a load
    /// balancer sends new flows elsewhere, while everything is still served.
    public var draining: Bool

    public init(version: String, pid: Int32, startTime: Double, draining: Bool = false) {
        self.version = version
        self.pid = pid
        self.startTime = startTime
        self.draining = draining
    }
}

/// The running configuration and the outcome of the last reload.
public struct ConfigInfo: Sendable, Equatable {
    public var path: String
    /// 1 after start-up; +1 for every successful reload.
    public var generation: Int
    /// When the running configuration was loaded, seconds since the epoch.
    public var loadedAt: Double
    /// The last reload attempt; nil when there was none.
    public var lastReload: ReloadInfo?

    public init(path: String, generation: Int, loadedAt: Double, lastReload: ReloadInfo? = nil) {
        self.path = path
        self.generation = generation
        self.loadedAt = loadedAt
        self.lastReload = lastReload
    }
}

/// One reload attempt.
public struct ReloadInfo: Sendable, Equatable {
    public var ok: Bool
    /// Seconds since the epoch.
    public var at: Double
    /// One line per problem; empty when `ok`.
    public var errors: [String]

    public init(ok: Bool, at: Double, errors: [String] = []) {
        self.ok = ok
        self.at = at
        self.errors = errors
    }
}

/// Packets and bytes in one direction. 64-bit and monotonic.
public struct Traffic: Sendable, Equatable {
    public var packets: UInt64
    public var bytes: UInt64

    public init(packets: UInt64 = 0, bytes: UInt64 = 0) {
        self.packets = packets
        self.bytes = bytes
    }
}

/// A drop counter and its reason label (`too_large`, `send_buffer_full`, ...).
public struct DropCount: Sendable, Equatable {
    public var reason: String
    public var count: UInt64

    public init(reason: String, count: UInt64) {
        self.reason = reason
        self.count = count
    }
}

/// Any other named counter (64-bit, monotonic): relay events such as `fail_open`, or per-upstream
/// `probes_sent`. Listed under `counters` in `/status` and as `udprelayd_events_total` (listeners)
/// and `udprelayd_upstream_events_total` (upstreams) in `/metrics`.
public struct NamedCounter: Sendable, Equatable {
    public var name: String
    public var value: UInt64

    public init(_ name: String, _ value: UInt64) {
        self.name = name
        self.value = value
    }
}

/// Session table counters of a listener that keeps sessions (relay modes).
public struct SessionCounters: Sendable, Equatable {
    /// Sessions open now (a gauge).
    public var active: UInt64
    /// Monotonic totals.
    public var created: UInt64
    public var expired: UInt64
    public var evicted: UInt64

    public init(active: UInt64 = 0, created: UInt64 = 0, expired: UInt64 = 0, evicted: UInt64 = 0) {
        self.active = active
        self.created = created
        self.expired = expired
        self.evicted = evicted
    }
}

/// One upstream of a relaying listener.
public struct UpstreamStatus: Sendable, Equatable {
    /// `HOST:PORT` as configured.
    public var address: String
    /// `up`, `down`, or another lower-case word the relay defines; only `up` counts as healthy.
    public var state: String
    /// Towards the upstream.
    public var sent: Traffic
    /// From the upstream.
    public var received: Traffic
    /// Sends that failed or probes that went unanswered.
    public var failures: UInt64
    /// Other counters of this upstream (`send_drops`, `probes_sent`, ...).
    public var counters: [NamedCounter]
    /// The last failure seen (why it is down), nil when none was seen.
    public var lastError: String?
    /// `drain`: takes no new sessions while its live ones continue.
    public var draining: Bool
    /// `backup`: takes new sessions only while no primary upstream is up.
    public var backup: Bool
    /// `weight=N`: its share of new sessions relative to the others.
    public var weight: Int
    /// Sessions on this upstream now, summed over the listener's workers.
    public var sessionsActive: UInt64
    /// The address this row stands for when `address` is a hostname (each of its addresses has
    /// a row of its own); nil for a literal address, and for a hostname without any address.
    public var resolved: String?
    /// `resolved` left the hostname's answer: it drains (`draining`) and goes once its
    /// sessions end.
    public var removed: Bool

    public init(
        address: String, state: String, sent: Traffic = Traffic(), received: Traffic = Traffic(), failures: UInt64 = 0,
        counters: [NamedCounter] = [], lastError: String? = nil, draining: Bool = false, backup: Bool = false,
        weight: Int = 1, sessionsActive: UInt64 = 0, resolved: String? = nil, removed: Bool = false
    ) {
        self.resolved = resolved
        self.removed = removed
        self.address = address
        self.state = state
        self.sent = sent
        self.received = received
        self.failures = failures
        self.counters = counters
        self.lastError = lastError
        self.draining = draining
        self.backup = backup
        self.weight = weight
        self.sessionsActive = sessionsActive
    }

    /// Its labels in `/metrics`: `listener`, `upstream` (as configured), and `address` for
    /// each address of a hostname, so every address is a series of its own.
    func labels(_ listener: String) -> [(String, String)] {
        [("listener", listener), ("upstream", address)] + (resolved.map { [("address", $0)] } ?? [])
    }

    /// A counter of `counters` by name, 0 when absent.
    public func counter(_ name: String) -> UInt64 { counters.first { $0.name == name }?.value ?? 0 }

    /// The names of the probe counters the page reads from `counters` (the daemon names them
    /// after `UpstreamCounter.probesSent` and `.probesAnswered`).
    static let probesSentName = "probes_sent"
    static let probesAnsweredName = "probes_answered"

    public var isUp: Bool { state == "up" }
}

/// One socket of a listener and what its worker has done (`workers = N` gives N per address).
public struct WorkerStatus: Sendable, Equatable {
    /// The address the socket is bound to.
    public var address: String
    /// Its 1-based number among the sockets sharing its address, and their count, as the
    /// datapath numbers them (the liveness probe's "worker 2 of 2"); `/metrics` and `/` show it.
    public var number: Int
    public var of: Int
    public var received: Traffic
    public var sent: Traffic

    public init(address: String, number: Int = 1, of: Int = 1, received: Traffic = Traffic(), sent: Traffic = Traffic()) {
        self.address = address
        self.number = number
        self.of = of
        self.received = received
        self.sent = sent
    }
}

/// One listener: what it is and what it has done.
public struct ListenerStatus: Sendable, Equatable {
    public var name: String
    public var mode: String
    /// The addresses actually bound (`127.0.0.1:7007`, `[::1]:7007`).
    public var addresses: [String]
    /// How many addresses the configuration names; fewer bound ones is a health problem.
    public var configuredAddresses: Int
    public var received: Traffic
    public var sent: Traffic
    /// Receive calls that failed with something other than "would block".
    public var receiveErrors: UInt64
    /// Every drop reason the daemon knows, zero or not, in a fixed order.
    public var drops: [DropCount]
    /// nil for listeners that keep no sessions (echo).
    public var sessions: SessionCounters?
    /// Empty for listeners without upstreams (echo).
    public var upstreams: [UpstreamStatus]
    /// Other counters of the listener (relay events such as `fail_open`), in a fixed order.
    public var counters: [NamedCounter]
    /// Each socket's worker, in order; the listener's totals are their sum.
    public var workers: [WorkerStatus]
    /// What datagrams to upstreams start with (`proxy_protocol`): `off`, or `v2` for a PROXY
    /// protocol v2 header.
    public var proxyProtocol: String
    /// Whether session sockets take their client's address and port (`transparent`).
    public var transparent: Bool
    /// Whether copies leave with their client's address and port as source (`spoof`).
    public var spoof: Bool
    /// Whether datagrams from `proxy_protocol_from` sources start with a PROXY header that is
    /// taken off (`accept_proxy_protocol`): `off`, or `v2`.
    public var acceptProxyProtocol: String

    public init(
        name: String, mode: String, addresses: [String], configuredAddresses: Int? = nil,
        received: Traffic = Traffic(), sent: Traffic = Traffic(), receiveErrors: UInt64 = 0,
        drops: [DropCount] = [], sessions: SessionCounters? = nil, upstreams: [UpstreamStatus] = [],
        counters: [NamedCounter] = [], workers: [WorkerStatus] = [], proxyProtocol: String = "off",
        transparent: Bool = false, spoof: Bool = false, acceptProxyProtocol: String = "off"
    ) {
        self.name = name
        self.mode = mode
        self.addresses = addresses
        self.configuredAddresses = configuredAddresses ?? addresses.count
        self.received = received
        self.sent = sent
        self.receiveErrors = receiveErrors
        self.drops = drops
        self.sessions = sessions
        self.upstreams = upstreams
        self.counters = counters
        self.workers = workers
        self.proxyProtocol = proxyProtocol
        self.transparent = transparent
        self.spoof = spoof
        self.acceptProxyProtocol = acceptProxyProtocol
    }

    /// Whether datagrams to its upstreams carry a PROXY protocol header.
    public var sendsProxyProtocol: Bool { proxyProtocol != "off" }

    /// Sum of all drop counters.
    public var dropped: UInt64 { drops.reduce(0) { $0 &+ $1.count } }

    /// The name of `receiveErrors` in `/status`, `/metrics` and on the page (the daemon's
    /// `Counter.receiveErrors`).
    static let receiveErrorsName = "receive_errors"
}

extension ListenerStatus {
    /// True when some address is served by more than one socket (`workers` above 1).
    var hasSeveralWorkersPerAddress: Bool {
        workers.contains { $0.of > 1 }
    }
}

/// Where the status endpoint gets its data; the daemon implements it.
///
/// `snapshot()` is called on the status server's event loop for every request and once a second
/// for the rate history: it must be cheap and must not block (sum counters, copy a few values).
public protocol StatusSource: Sendable {
    /// The current state, taken now.
    func snapshot() -> StatusSnapshot
    /// Health problems, one line each; empty when healthy. May take up to about a second (a
    /// liveness probe of every datapath queue).
    func problems() async -> [String]
    /// At most `limit` live relay sessions (of `listener`, or of all), most recently active
    /// first, taken without stalling the datapath; may take up to a fraction of a second.
    func sessions(listener: String?, limit: Int) async -> SessionsAnswer
}

/// Counters of the status server itself (connections, rejections), shown next to the daemon's.
public struct ServerCounters: Sendable, Equatable {
    /// TCP connections accepted, including rejected ones.
    public var accepted: UInt64 = 0
    /// Connections being served now.
    public var open: UInt64 = 0
    /// Closed at once: the peer's address is outside `allow`.
    public var rejectedNotAllowed: UInt64 = 0
    /// Answered 503 and closed: the connection limit was reached.
    public var rejectedLimit: UInt64 = 0
    /// HTTP requests answered (any status).
    public var requests: UInt64 = 0
    /// Connections that could not be accepted for lack of file descriptors (or memory); each
    /// pauses accepting for 100 ms to 1 s.
    public var acceptErrors: UInt64 = 0

    public init() {}
}
