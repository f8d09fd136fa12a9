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
/// Reads on the datapath are lock-free (atomics); the mutex is taken only when an address
/// changes, a failure is recorded or a session picks its upstream's address.
final class UpstreamTable: @unchecked Sendable {
    // @unchecked: mutable state is behind `lock`, in atomics, or confined to one queue:
    // `controlQueue` (probe sockets and timer, `awaiting`, `stopped`), `resolveQueue`
    // (`resolveFailing`, `resolving`, `resolveStopped`, `reportedSlowNames`).
    let endpoints: [UpstreamEndpoint]
    let settings: HealthSettings
    /// What a health probe sends: `health_probe`, after a PROXY v2 LOCAL header when the
    /// listener speaks PROXY v2.
    let probePayload: [UInt8]?
    let resolveInterval: Duration
    let listenerName: String
    let logger: Logger
    /// counters[worker][upstream]; the last row belongs to the control queue (probes).
    let counters: [[UpstreamCounterSet]]
    /// Bumped whenever an address changes, so workers with long-lived sockets reconnect.
    let generation = AtomicSlots(count: 1)

    /// Addresses, health and last errors; every change of `flags` is made holding it too.
    let lock: NIOLockedValueBox<UpstreamLockedState>
    /// What the datapath reads without the lock (written only under `lock`).
    let flags: UpstreamFlags
    let controlQueue: DispatchQueue
    /// getaddrinfo blocks (up to the resolver's timeouts): it gets a queue of its own so a slow
    /// DNS server cannot delay health probes.
    let resolveQueue: DispatchQueue
    var resolveTimer: DispatchSourceTimer?
    var probeTimer: DispatchSourceTimer?
    /// One connected socket per upstream, each with a read source on `controlQueue`.
    var probeSockets: [ConnectedSocket] = []
    /// Where probe replies are read (on `controlQueue`); allocated when probes start.
    var probeBuffer: UnsafeMutableRawBufferPointer?
    var probeGeneration: UInt64 = .max
    var awaiting: [Bool] = []
    var resolveFailing: [Bool] = []
    /// Per upstream: a lookup is under way (on `resolveQueue`).
    var resolving: [Bool] = []
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

    /// Resolves one hostname (getaddrinfo by default; tests inject a fake).
    typealias Resolver = @Sendable (String, UInt16) -> Result<SocketAddress, ResolveError>
    let resolver: Resolver

    init(
        configuration: ListenerConfiguration, workers: Int, logger: Logger,
        resolver: @escaping Resolver = { UpstreamTable.resolve(host: $0, port: $1) }
    ) {
        self.resolver = resolver
        endpoints = configuration.upstreams
        settings = configuration.health
        // With proxy_protocol = v2 the upstream expects a header on every datagram: probes get
        // the LOCAL one (replies are plain, as for relayed datagrams).
        probePayload = configuration.health.probe.map { (configuration.proxyProtocol == .v2 ? ProxyProtocolV2.localHeader : []) + $0 }
        resolveInterval = configuration.resolveInterval
        listenerName = configuration.name
        var log = logger
        log[metadataKey: "listener.name"] = "\(configuration.name)"
        self.logger = log
        let n = endpoints.count
        counters = (0...workers).map { _ in (0..<n).map { _ in UpstreamCounterSet() } }
        let health = HealthState(
            maxFails: configuration.health.maxFails, failTimeout: configuration.health.failTimeout.nanoseconds,
            probeFails: configuration.health.probeFails)
        lock = NIOLockedValueBox(
            UpstreamLockedState(
                addresses: endpoints.map(\.literal), health: Array(repeating: health, count: n),
                lastError: Array(repeating: nil, count: n)))
        let flags = UpstreamFlags(count: n)
        for i in 0..<n where endpoints[i].literal != nil { flags.resolved[i] = 1 }
        self.flags = flags
        controlQueue = DispatchQueue(label: "udprelayd.upstreams.\(configuration.name)")
        resolveQueue = DispatchQueue(label: "udprelayd.resolve.\(configuration.name)")
        awaiting = Array(repeating: false, count: n)
        resolveFailing = Array(repeating: false, count: n)
        resolving = Array(repeating: false, count: n)
        initialResolution = DispatchGroup()
        resolveQueue.setSpecific(key: Self.onResolveQueue, value: true)
        initialResolution.enter()
        let started = resolveNames()
        started.notify(queue: resolveQueue) { [initialResolution] in initialResolution.leave() }
    }

    deinit { probeBuffer?.deallocate() }

    var count: Int { endpoints.count }

    // MARK: datapath reads (any queue)

    /// Whether upstream `i` is resolved and not down. (Whether it may take new sessions
    /// depends on its options too, `drain` and `backup`: `Balancer` applies them.)
    @inline(__always)
    func isUp(_ i: Int, now: UInt64) -> Bool { flags.isUp(i, now: now) }

    func isDown(_ i: Int, now: UInt64) -> Bool { flags.isDown(i, now: now) }

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
                metadata: [
                    "upstream": "\(endpoints[i])", "reason": "\(settings.maxFails) failure(s) within \(settings.failTimeout)",
                    "down_for": "\(settings.failTimeout)",
                ])
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
            metadata: [
                "upstream": "\(endpoints[i])",
                "reason": "fail_timeout (\(settings.failTimeout)) over: new sessions use it again; \(settings.maxFails) failure(s) mark it down again",
            ])
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

    func snapshot(now: UInt64 = SystemClock.monotonicNanos()) -> [UpstreamSnapshot] {
        let (addresses, errors) = lock.withLockedValue { ($0.addresses, $0.lastError) }
        return endpoints.indices.map { i in
            var c = UpstreamCounterSnapshot()
            for row in counters {
                for k in UpstreamCounter.allCases { c[k] &+= row[i].value(k) }
            }
            return UpstreamSnapshot(
                endpoint: endpoints[i].description, address: addresses[i],
                down: isDown(i, now: now), counters: c,
                lastError: errors[i].map { $0.describe(interval: settings.interval) },
                draining: endpoints[i].drain, backup: endpoints[i].backup, weight: endpoints[i].weight)
        }
    }
}
