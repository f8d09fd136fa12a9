import Dispatch
import Logging
import NIOConcurrencyHelpers
import UDPRelayConfig

#if canImport(Glibc)
import Glibc
#endif

/// The upstreams of one relay listener, shared by its workers: resolved addresses, health and
/// per-worker counters. Resolution and active probes run on a control queue of their own.
///
/// Upstreams live in slots, fixed at init so that workers, counters and sessions can name one
/// by index without a lock: one per `upstream =` entry (slot `e` for entry `e`), and for each
/// hostname entry `slotsPerName - 1` more after those, so that every address of its answer is
/// an upstream of its own (`UpstreamResolver.swift`). A hostname's slot is free (no address),
/// active (its address is in the last answer) or draining (it left the answer: no new
/// sessions, its sessions continue, and it is freed once they have ended).
///
/// Reads on the datapath are lock-free (atomics); the mutex is taken only when an address
/// changes, a failure is recorded or a session picks its upstream's address.
final class UpstreamTable: @unchecked Sendable {
    // @unchecked: mutable state is behind `lock`, in atomics, or confined to one queue:
    // `controlQueue` (probe sockets and timer, `awaiting`, `stopped`), `resolveQueue`
    // (`resolveFailing`, `resolving`, `reportedNoRoom`, `idleAtLastSweep`, the timers,
    // `resolveStopped`, `reportedSlowNames`).
    /// The `upstream =` entries as configured.
    let configured: [UpstreamEndpoint]
    /// Per slot: the entry it belongs to (its options, its text in logs).
    let endpoints: [UpstreamEndpoint]
    /// Per slot: the index of its entry in `configured`.
    let entryOf: [Int]
    /// Per entry: its slots, the entry's own first.
    let slotsOf: [[Int]]
    /// Slots in file order (an entry's slots together), as `balance = first` ranks them.
    let fileOrder: [Int]
    /// Which addresses of a hostname are used (`resolve`).
    let family: ResolveFamily
    /// `mirror`: each hostname has one slot, its answer's first address.
    let firstAddressOnly: Bool
    let settings: HealthSettings
    /// What a health probe sends: `health_probe`, after a PROXY v2 LOCAL header when the
    /// listener speaks PROXY v2.
    let probePayload: [UInt8]?
    let resolveInterval: Duration
    let listenerName: String
    let logger: Logger
    /// counters[worker][slot]; the last row belongs to the control queue (probes).
    let counters: [[UpstreamCounterSet]]
    /// Bumped whenever a slot's address changes (set, freed), so workers with long-lived
    /// sockets reconnect and balancers take the new set.
    let generation = AtomicSlots(count: 1)
    /// Per slot: the rendezvous seed of what it holds (its entry's text for a literal, its
    /// address for a hostname's), written under `lock` with the address.
    let seeds: AtomicSlots

    /// Addresses, health and last errors; every change of `flags` is made holding it too.
    let lock: NIOLockedValueBox<UpstreamLockedState>
    /// What the datapath reads without the lock (written only under `lock`).
    let flags: UpstreamFlags
    let controlQueue: DispatchQueue
    /// getaddrinfo blocks (up to the resolver's timeouts): it gets a queue of its own so a slow
    /// DNS server cannot delay health probes.
    let resolveQueue: DispatchQueue
    var resolveTimer: DispatchSourceTimer?
    /// Frees drained slots (on `resolveQueue`), every `sweepInterval` while a table has names.
    var sweepTimer: DispatchSourceTimer?
    var probeTimer: DispatchSourceTimer?
    /// One connected socket per slot, each with a read source on `controlQueue`.
    var probeSockets: [ConnectedSocket] = []
    /// Where probe replies are read (on `controlQueue`); allocated when probes start.
    var probeBuffer: UnsafeMutableRawBufferPointer?
    var probeGeneration: UInt64 = .max
    var awaiting: [Bool] = []
    /// Per entry: its last lookup failed (on `resolveQueue`).
    var resolveFailing: [Bool] = []
    /// Per entry: a lookup is under way (on `resolveQueue`).
    var resolving: [Bool] = []
    /// Per entry: the answer had more addresses than it has room for, logged once until it fits.
    var reportedNoRoom: [Bool] = []
    /// Per slot: it drained and had no session at the last sweep (on `resolveQueue`).
    var idleAtLastSweep: [Bool] = []
    /// `stop` ran: late lookups are not applied (on `resolveQueue`).
    var resolveStopped = false
    /// The names still unresolved after `resolveWait` were logged (on `resolveQueue`).
    var reportedSlowNames = false
    /// Left once the lookups started by init are applied; see `awaitInitialResolution`.
    let initialResolution: DispatchGroup
    let createdAt = DispatchTime.now()
    static let onResolveQueue = DispatchSpecificKey<Bool>()
    let probeClosed = DispatchGroup()
    /// `stop` ran (on `controlQueue`): no more state changes are logged.
    var stopped = false
    /// Bounds the log lines of probe socket errors: one a minute per table (on `controlQueue`).
    var probeErrorLog = LogLimiter(lines: 1, per: .seconds(60))

    /// Resolves one hostname to its addresses, port set (getaddrinfo by default; tests inject
    /// a fake). The answer may hold both families: `resolve` filters it.
    typealias Resolver = @Sendable (String, UInt16) -> Result<[SocketAddress], ResolveError>
    let resolver: Resolver

    /// Slots of one hostname entry: the addresses of one answer it uses (`addressesPerName`)
    /// and as many again for addresses that left the answer and still drain.
    static let addressesPerName = 16
    static let slotsPerName = 2 * addressesPerName

    init(
        configuration: ListenerConfiguration, workers: Int, logger: Logger,
        resolver: Resolver? = nil
    ) {
        self.resolver = resolver ?? { UpstreamTable.resolve(host: $0, port: $1) }
        let entries = configuration.upstreams
        configured = entries
        family = configuration.resolveFamily
        var entryOf = Array(entries.indices)
        var slotsOf = entries.indices.map { [$0] }
        // A mirror copies to each upstream once: a hostname there keeps one address, the
        // first of its answer, replaced in place when it changes (no sessions to drain).
        firstAddressOnly = configuration.mode == .mirror
        for (e, u) in entries.enumerated() where u.literal == nil && !firstAddressOnly {
            for _ in 1..<Self.slotsPerName {
                slotsOf[e].append(entryOf.count)
                entryOf.append(e)
            }
        }
        self.entryOf = entryOf
        self.slotsOf = slotsOf
        fileOrder = slotsOf.flatMap { $0 }
        endpoints = entryOf.map { configuration.upstreams[$0] }
        settings = configuration.health
        // With proxy_protocol = v2 the upstream expects a header on every datagram: probes get
        // the LOCAL one (replies are plain, as for relayed datagrams).
        probePayload = configuration.health.probe.map { (configuration.proxyProtocol == .v2 ? ProxyProtocolV2.localHeader : []) + $0 }
        resolveInterval = configuration.resolveInterval
        listenerName = configuration.name
        var log = logger
        log[metadataKey: "listener.name"] = "\(configuration.name)"
        self.logger = log
        let n = entryOf.count
        counters = (0...workers).map { _ in (0..<n).map { _ in UpstreamCounterSet() } }
        let health = Self.freshHealth(configuration.health)
        lock = NIOLockedValueBox(
            UpstreamLockedState(
                addresses: entryOf.indices.map { $0 < entries.count ? entries[$0].literal : nil },
                health: Array(repeating: health, count: n),
                lastError: Array(repeating: nil, count: n), removedAt: Array(repeating: nil, count: n),
                counterBase: Array(repeating: UpstreamCounterSnapshot(), count: n)))
        let flags = UpstreamFlags(count: n)
        seeds = AtomicSlots(count: n)
        for (e, u) in entries.enumerated() where u.literal != nil {
            flags.resolved[e] = 1
            seeds[e] = Balancer.seed(of: u)
        }
        self.flags = flags
        controlQueue = DispatchQueue(label: "udprelayd.upstreams.\(configuration.name)")
        resolveQueue = DispatchQueue(label: "udprelayd.resolve.\(configuration.name)")
        awaiting = Array(repeating: false, count: n)
        idleAtLastSweep = Array(repeating: false, count: n)
        resolveFailing = Array(repeating: false, count: entries.count)
        resolving = Array(repeating: false, count: entries.count)
        reportedNoRoom = Array(repeating: false, count: entries.count)
        initialResolution = DispatchGroup()
        resolveQueue.setSpecific(key: Self.onResolveQueue, value: true)
        initialResolution.enter()
        let started = resolveNames()
        started.notify(queue: resolveQueue) { [initialResolution] in initialResolution.leave() }
    }

    deinit { probeBuffer?.deallocate() }

    static func freshHealth(_ settings: HealthSettings) -> HealthState {
        HealthState(maxFails: settings.maxFails, failTimeout: settings.failTimeout.nanoseconds, probeFails: settings.probeFails)
    }

    /// Slots, hostnames' free ones included.
    var count: Int { endpoints.count }

    // MARK: datapath reads (any queue)

    /// Whether slot `i` holds an address that takes new sessions (a literal, or one of its
    /// hostname's last answer) and is not down. (Whether it may take new sessions depends on
    /// its options too, `drain` and `backup`: `Balancer` applies them.)
    @inline(__always)
    func isUp(_ i: Int, now: UInt64) -> Bool { flags.isUp(i, now: now) }

    func isDown(_ i: Int, now: UInt64) -> Bool { flags.isDown(i, now: now) }

    /// Whether slot `i` holds an address that takes new sessions, up or down: what a balancer
    /// falls back to when none is up (never a free slot nor a draining address).
    func isActive(_ i: Int) -> Bool { flags.resolved[i] == 1 }

    /// A balancer over this table's slots: their options, file order and current seeds.
    func makeBalancer(algorithm: BalanceAlgorithm, hashKey: HashKey) -> Balancer {
        var b = Balancer(algorithm: algorithm, upstreams: endpoints, hashKey: hashKey, order: fileOrder)
        b.reseed(generation: generation[0], seed: { seeds[$0] })
        return b
    }

    /// The slot for a new session of the client whose key hashes to `clientHash`, with
    /// `balancer` brought up to the table's current set first (once per change).
    func pick(_ balancer: inout Balancer, clientHash: UInt64, now: UInt64) -> (index: Int, failOpen: Bool) {
        let g = generation[0]
        if g != balancer.seedGeneration { balancer.reseed(generation: g, seed: { seeds[$0] }) }
        return balancer.pick(clientHash: clientHash, isUp: { isUp($0, now: now) }, isActive: { isActive($0) })
    }

    func address(_ i: Int) -> SocketAddress? { lock.withLockedValue { $0.addresses[i] } }

    /// Records a failure seen on the datapath (refused, send error: `errno`). When it marks
    /// the upstream down, logs that (unless a probe had it down already) and schedules the
    /// end of the mark-down, which is logged too.
    func recordFailure(_ i: Int, now: UInt64, errno err: Int32) {
        // The mark-down is published while the lock is held: a worker that decided earlier
        // cannot store its older time over this one after the lock is released.
        let (marked, wasDown, until) = lock.withLockedValue { [flags] l -> (Bool, Bool, UInt64) in
            l.lastError[i] = .errno(err)
            guard settings.maxFails > 0 else { return (false, false, l.health[i].downUntil) }
            let wasDown = l.health[i].isDown(now: now)
            let d = l.health[i].recordFailure(now: now)
            flags.extendDownUntil(i, to: l.health[i].downUntil)
            return (d, wasDown, l.health[i].downUntil)
        }
        guard marked else { return }
        if !wasDown {
            logger.warning(
                "upstream down",
                metadata: logMetadata(
                    i, ["reason": "\(settings.maxFails) failure(s) within \(settings.failTimeout)", "down_for": "\(settings.failTimeout)"]))
        }
        controlQueue.async { [self] in schedulePassiveEnd(i, until: until) }
    }

    /// Logs "upstream up" once a passive mark-down that ended at `until` is over, unless the
    /// upstream is still down for another reason (a probe; its answer then logs the way back).
    private func schedulePassiveEnd(_ i: Int, until: UInt64) {
        dispatchPrecondition(condition: .onQueue(controlQueue))
        guard !stopped else { return }
        let now = SystemClock.monotonicNanos()
        guard now >= until else {
            controlQueue.asyncAfter(deadline: .now() + .nanoseconds(Int(clamping: until - now))) { [weak self] in
                self?.schedulePassiveEnd(i, until: until)
            }
            return
        }
        let up = lock.withLockedValue { l in l.health[i].downUntil == until && !l.health[i].isDown(now: now) }
        guard up else { return }
        logger.notice(
            "upstream up",
            metadata: logMetadata(
                i,
                [
                    "reason":
                        "fail_timeout (\(settings.failTimeout)) over: new sessions use it again; \(settings.maxFails) failure(s) mark it down again"
                ]))
    }

    /// Log metadata of slot `i`, with `more`: its entry (`upstream`) and, for an address of a
    /// hostname, the address (`upstream.address`).
    func logMetadata(_ i: Int, _ more: Logger.Metadata = [:]) -> Logger.Metadata {
        var m = more
        m["upstream"] = "\(endpoints[i])"
        if endpoints[i].literal == nil, let a = address(i) { m["upstream.address"] = "\(a)" }
        return m
    }

    // MARK: start / stop (resolve timer, probes)

    func start() {
        resolveQueue.async { [self] in
            guard endpoints.contains(where: { $0.literal == nil }) else { return }
            let t = DispatchSource.makeTimerSource(queue: resolveQueue)
            let interval = DispatchTimeInterval.nanoseconds(Int(clamping: resolveInterval.nanoseconds))
            t.schedule(deadline: .now() + interval, repeating: interval, leeway: .milliseconds(100))
            t.setEventHandler { [unowned self] in resolveNames() }
            resolveTimer = t
            t.activate()
            let sweeper = DispatchSource.makeTimerSource(queue: resolveQueue)
            let every = DispatchTimeInterval.nanoseconds(Int(clamping: Self.sweepInterval.nanoseconds))
            sweeper.schedule(deadline: .now() + every, repeating: every, leeway: .milliseconds(100))
            sweeper.setEventHandler { [unowned self] in sweep(now: SystemClock.monotonicNanos()) }
            sweepTimer = sweeper
            sweeper.activate()
        }
        controlQueue.async { [self] in
            if settings.probe != nil { startProbes() }
        }
    }

    /// Cancels timers and probe sockets; `done` is left once every probe socket is closed.
    func stop(done: DispatchGroup) {
        done.enter()
        resolveQueue.async { [self] in
            resolveStopped = true
            resolveTimer?.cancel()
            resolveTimer = nil
            sweepTimer?.cancel()
            sweepTimer = nil
            done.leave()
        }
        done.enter()
        controlQueue.async { [self] in
            stopped = true
            probeTimer?.cancel()
            probeTimer = nil
            for i in probeSockets.indices { probeSockets[i].close() }
            probeSockets = []
            probeClosed.notify(queue: .global()) { done.leave() }
        }
    }

    // MARK: snapshot

    /// Live sessions on slot `i`, over every worker.
    func sessionsActive(_ i: Int) -> UInt64 {
        counters.reduce(0) { $0 &+ $1[i].value(.sessionsActive) }
    }

    /// One row per upstream: a literal entry's, and each address a hostname has (active or
    /// draining), in file order; a hostname without any address has one row, `unresolved`.
    func snapshot(now: UInt64 = SystemClock.monotonicNanos()) -> [UpstreamSnapshot] {
        let (addresses, errors, removed, bases) = lock.withLockedValue { ($0.addresses, $0.lastError, $0.removedAt, $0.counterBase) }
        return configured.indices.flatMap { e -> [UpstreamSnapshot] in
            let held = slotsOf[e].filter { addresses[$0] != nil }
            return (held.isEmpty ? [e] : held).map { i in
                var c = UpstreamCounterSnapshot()
                for row in counters {
                    for k in UpstreamCounter.allCases { c[k] &+= row[i].value(k) }
                }
                // A reused slot counts from when it took its address (the gauge needs no base).
                for k in UpstreamCounter.allCases where k != .sessionsActive { c[k] &-= bases[i][k] }
                return UpstreamSnapshot(
                    endpoint: endpoints[i].description, address: addresses[i],
                    down: isDown(i, now: now), counters: c,
                    lastError: errors[i].map { $0.describe(interval: settings.interval) },
                    draining: endpoints[i].drain || removed[i] != nil, backup: endpoints[i].backup, weight: endpoints[i].weight,
                    hostname: endpoints[i].literal == nil, removed: removed[i] != nil)
            }
        }
    }
}
