#if canImport(Glibc)
import Glibc
#endif
import Dispatch
import Logging
import NIOConcurrencyHelpers
import UDPRelayConfig

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
    let resolveInterval: Duration
    let listenerName: String
    let logger: Logger
    /// counters[worker][upstream]; the last row belongs to the control queue (probes).
    let counters: [[UpstreamCounterSet]]
    /// Bumped whenever an address changes, so workers with long-lived sockets reconnect.
    let generation = AtomicSlots(count: 1)

    private struct Locked {
        var addresses: [SocketAddress?]
        var health: [HealthState]
        /// The last failure seen per upstream, for `/status` and the page.
        var lastError: [UpstreamError?]
    }

    private let lock: NIOLockedValueBox<Locked>
    /// Per upstream: [0] passively down until (ns), [1] probe down (0/1), [2] has an address (0/1).
    private let state: AtomicSlots
    private let controlQueue: DispatchQueue
    /// getaddrinfo blocks (up to the resolver's timeouts): it gets a queue of its own so a slow
    /// DNS server cannot delay health probes.
    private let resolveQueue: DispatchQueue
    private var resolveTimer: DispatchSourceTimer?
    private var probeTimer: DispatchSourceTimer?
    private var probeSources: [DispatchSourceRead?] = []
    private var probeFDs: [Int32] = []
    private var probeGeneration: UInt64 = .max
    private var awaiting: [Bool] = []
    private var resolveFailing: [Bool] = []
    /// Per upstream: a lookup is under way (on `resolveQueue`).
    private var resolving: [Bool] = []
    /// `stop` ran: late lookups are not applied (on `resolveQueue`).
    private var resolveStopped = false
    /// The names still unresolved after `resolveWait` were logged (on `resolveQueue`).
    private var reportedSlowNames = false
    /// Left once the lookups started by init are applied; see `awaitInitialResolution`.
    private let initialResolution: DispatchGroup
    private let createdAt = DispatchTime.now()
    private static let onResolveQueue = DispatchSpecificKey<Bool>()
    private let probeClosed = DispatchGroup()
    /// `stop` ran (on `controlQueue`): no more state changes are logged.
    private var stopped = false

    /// Resolves one hostname (getaddrinfo by default; tests inject a fake).
    typealias Resolver = @Sendable (String, UInt16) -> Result<SocketAddress, ResolveError>
    private let resolver: Resolver

    init(configuration: ListenerConfiguration, workers: Int, logger: Logger,
         resolver: @escaping Resolver = { UpstreamTable.resolve(host: $0, port: $1) }) {
        self.resolver = resolver
        endpoints = configuration.upstreams
        settings = configuration.health
        resolveInterval = configuration.resolveInterval
        listenerName = configuration.name
        var log = logger
        log[metadataKey: "listener.name"] = "\(configuration.name)"
        self.logger = log
        let n = endpoints.count
        counters = (0...workers).map { _ in (0..<n).map { _ in UpstreamCounterSet() } }
        let health = HealthState(maxFails: configuration.health.maxFails, failTimeout: configuration.health.failTimeout.nanoseconds,
                                 probeFails: configuration.health.probeFails)
        lock = NIOLockedValueBox(Locked(addresses: endpoints.map(\.literal), health: Array(repeating: health, count: n),
                                        lastError: Array(repeating: nil, count: n)))
        state = AtomicSlots(count: 3 * n)
        controlQueue = DispatchQueue(label: "udprelayd.upstreams.\(configuration.name)")
        resolveQueue = DispatchQueue(label: "udprelayd.resolve.\(configuration.name)")
        awaiting = Array(repeating: false, count: n)
        resolveFailing = Array(repeating: false, count: n)
        resolving = Array(repeating: false, count: n)
        initialResolution = DispatchGroup()
        resolveQueue.setSpecific(key: Self.onResolveQueue, value: true)
        for i in 0..<n where endpoints[i].literal != nil { state[3 * i + 2] = 1 }
        initialResolution.enter()
        let started = resolveNames()
        started.notify(queue: resolveQueue) { [initialResolution] in initialResolution.leave() }
    }

    var count: Int { endpoints.count }

    // MARK: datapath reads (any queue)

    /// Whether upstream `i` may take new sessions now: resolved and not down.
    @inline(__always)
    func isUp(_ i: Int, now: UInt64) -> Bool {
        state[3 * i + 2] == 1 && state[3 * i + 1] == 0 && now >= state[3 * i]
    }

    func isDown(_ i: Int, now: UInt64) -> Bool { state[3 * i + 1] == 1 || now < state[3 * i] }

    func address(_ i: Int) -> SocketAddress? { lock.withLockedValue { $0.addresses[i] } }

    /// Records a failure seen on the datapath (refused, send error: `errno`). When it marks
    /// the upstream down, logs that (unless a probe had it down already) and schedules the
    /// end of the mark-down, which is logged too.
    func recordFailure(_ i: Int, now: UInt64, errno err: Int32) {
        let (marked, wasDown, until) = lock.withLockedValue { l -> (Bool, Bool, UInt64) in
            l.lastError[i] = .errno(err)
            guard settings.maxFails > 0 else { return (false, false, l.health[i].downUntil) }
            let wasDown = l.health[i].isDown(now: now)
            let d = l.health[i].recordFailure(now: now)
            return (d, wasDown, l.health[i].downUntil)
        }
        guard settings.maxFails > 0 else { return }
        state[3 * i] = until
        guard marked else { return }
        if !wasDown {
            logger.warning("upstream down", metadata: [
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
        let now = monotonicNanos()
        guard now >= until else {
            controlQueue.asyncAfter(deadline: .now() + .nanoseconds(Int(clamping: until - now))) { [weak self] in
                self?.schedulePassiveEnd(i, until: until)
            }
            return
        }
        let up = lock.withLockedValue { l in l.health[i].downUntil == until && !l.health[i].isDown(now: now) }
        guard up else { return }
        logger.notice("upstream up", metadata: [
            "upstream": "\(endpoints[i])",
            "reason": "fail_timeout (\(settings.failTimeout)) over: new sessions use it again; \(settings.maxFails) failure(s) mark it down again",
        ])
    }

    // MARK: resolution

    /// Longest a start or a reload waits for the hostnames of a relay listener's upstreams
    /// (config/README.md, `resolve_interval`). Names not resolved by then take no traffic until
    /// their lookup, which goes on, succeeds.
    static let resolveWait: Duration = .seconds(2)

    /// Looks up every hostname not already being looked up, all at once, each on a thread of
    /// its own (getaddrinfo blocks, up to the resolver's timeouts), and applies each result on
    /// `resolveQueue`: a new address is used by new sessions; a failure keeps the last good
    /// address and is logged once. Runs from init, then every `resolve_interval` on
    /// `resolveQueue`. The returned group is left once every lookup started here is applied.
    @discardableResult
    func resolveNames() -> DispatchGroup {
        let applied = DispatchGroup()
        let start = { [self] in
            for (i, e) in endpoints.enumerated() {
                guard case .name(let host) = e.host, !resolving[i] else { continue }
                resolving[i] = true
                applied.enter()
                let (resolver, port, queue) = (self.resolver, e.port, resolveQueue)
                ResolverThread.run { [self] in
                    let result = resolver(host, port)
                    queue.async { [self] in
                        resolving[i] = false
                        apply(result, to: i)
                        applied.leave()
                    }
                }
            }
        }
        if DispatchQueue.getSpecific(key: Self.onResolveQueue) == true { start() } else { resolveQueue.sync(execute: start) }
        return applied
    }

    /// Waits (once, at most until `resolveWait` after the table was made) for the lookups init
    /// started, then logs each name still unresolved. Workers call it before they start, so a
    /// start or reload is held at most `resolveWait` however many names hang, and each worker
    /// finds the addresses that came in time.
    func awaitInitialResolution() {
        guard initialResolution.wait(timeout: createdAt + .nanoseconds(Int(Self.resolveWait.nanoseconds))) == .timedOut else { return }
        resolveQueue.sync {
            guard !reportedSlowNames else { return }
            reportedSlowNames = true
            for (i, e) in endpoints.enumerated() where resolving[i] && address(i) == nil {
                logger.warning("upstream not resolved in time; it takes no traffic until it resolves", metadata: [
                    "upstream": "\(e)", "waited": "\(Self.resolveWait)",
                ])
            }
        }
    }

    /// Applies one lookup's result (on `resolveQueue`).
    private func apply(_ result: Result<SocketAddress, ResolveError>, to i: Int) {
        dispatchPrecondition(condition: .onQueue(resolveQueue))
        guard !resolveStopped else { return }
        let e = endpoints[i]
        switch result {
        case .success(let address):
            let changed = lock.withLockedValue { l -> Bool in
                defer { l.addresses[i] = address }
                return l.addresses[i] != address
            }
            state[3 * i + 2] = 1
            if changed {
                generation[0] = generation[0] &+ 1
                logger.info("upstream resolved", metadata: ["upstream": "\(e)", "upstream.address": "\(address)"])
            } else if resolveFailing[i] {
                logger.notice("upstream resolves again", metadata: ["upstream": "\(e)", "upstream.address": "\(address)"])
            }
            resolveFailing[i] = false
        case .failure(let message):
            lock.withLockedValue { $0.lastError[i] = .unresolved(message.description) }
            if !resolveFailing[i] {
                let kept = address(i)
                logger.error("cannot resolve upstream\(kept == nil ? "; it takes no traffic until it resolves" : "; keeping its last address")", metadata: [
                    "upstream": "\(e)", "error": "\(message)", "upstream.address": "\(kept.map { "\($0)" } ?? "none")",
                ])
            }
            resolveFailing[i] = true
        }
    }

    /// getaddrinfo, first IPv4 or IPv6 address returned.
    static func resolve(host: String, port: UInt16) -> Result<SocketAddress, ResolveError> {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_DGRAM.rawValue)
        var result: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(host, nil, &hints, &result)
        guard rc == 0 else { return .failure(ResolveError(String(cString: gai_strerror(rc)))) }
        defer { freeaddrinfo(result) }
        var p = result
        while let ai = p {
            if let sa = ai.pointee.ai_addr, var address = SocketAddress(sockaddr: UnsafeRawPointer(sa)) {
                address.port = port
                return .success(address)
            }
            p = ai.pointee.ai_next
        }
        return .failure(ResolveError("no IPv4 or IPv6 address"))
    }

    struct ResolveError: Error, Sendable, CustomStringConvertible {
        let description: String
        init(_ d: String) { description = d }
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
            for (i, s) in probeSources.enumerated() {
                if let s { s.cancel() } else if probeFDs[i] >= 0 { close(probeFDs[i]) }
            }
            probeSources = []
            probeClosed.notify(queue: .global()) { done.leave() }
        }
    }

    private func startProbes() {
        dispatchPrecondition(condition: .onQueue(controlQueue))
        probeFDs = Array(repeating: -1, count: count)
        probeSources = Array(repeating: nil, count: count)
        let interval = DispatchTimeInterval.nanoseconds(Int(clamping: settings.interval.nanoseconds))
        let t = DispatchSource.makeTimerSource(queue: controlQueue)
        t.schedule(deadline: .now(), repeating: interval, leeway: .milliseconds(5))
        t.setEventHandler { [unowned self] in probeTick() }
        probeTimer = t
        t.activate()
    }

    private func probeTick() {
        dispatchPrecondition(condition: .onQueue(controlQueue))
        guard let payload = settings.probe else { return }
        let now = monotonicNanos()
        let gen = generation[0]
        let row = counters[counters.count - 1]
        for i in 0..<count {
            if awaiting[i] { recordProbe(i, answered: false, now: now) }
            if probeFDs[i] < 0 || gen != probeGeneration { openProbeSocket(i) }
            guard probeFDs[i] >= 0 else {
                recordProbe(i, answered: false, now: now)
                continue
            }
            awaiting[i] = true
            row[i].add(.probesSent)
            _ = try? syscall("send") { payload.withUnsafeBytes { Glibc.send(probeFDs[i], $0.baseAddress, $0.count, 0) } }
        }
        probeGeneration = gen
    }

    private func openProbeSocket(_ i: Int) {
        guard let address = address(i) else { return }
        if probeFDs[i] >= 0, let s = probeSources[i] {
            // Same family: just point the socket at the new address.
            if (try? UDPSocket.connect(probeFDs[i], to: address)) != nil { return }
            s.cancel()
            probeSources[i] = nil
            probeFDs[i] = -1
        }
        guard let fd = try? UDPSocket.open(family: address.family) else { return }
        guard (try? UDPSocket.connect(fd, to: address)) != nil else {
            close(fd)
            return
        }
        let source = DispatchSource.makeReadSource(fileDescriptor: fd, queue: controlQueue)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 65536, alignment: 8)
        source.setEventHandler { [unowned self] in probeReadable(i, fd: fd, buffer: buffer) }
        probeClosed.enter()
        let closed = probeClosed
        source.setCancelHandler {
            close(fd)
            buffer.deallocate()
            closed.leave()
        }
        probeFDs[i] = fd
        probeSources[i] = source
        source.activate()
    }

    private func probeReadable(_ i: Int, fd: Int32, buffer: UnsafeMutableRawBufferPointer) {
        dispatchPrecondition(condition: .onQueue(controlQueue))
        let expect = settings.expect
        for _ in 0..<64 {
            let r: IOResult<Int>
            do {
                r = try syscall("recv") { recv(fd, buffer.baseAddress, buffer.count, 0) }
            } catch {
                // ECONNREFUSED: nobody listens; the unanswered probe marks it down at the next tick.
                continue
            }
            guard case .done(let n) = r else { return }
            guard n >= expect.count, expect.indices.allSatisfy({ buffer[$0] == expect[$0] }) else { continue }
            counters[counters.count - 1][i].add(.probesAnswered)
            if awaiting[i] {
                awaiting[i] = false
                recordProbe(i, answered: true, now: monotonicNanos())
            }
        }
    }

    /// An unanswered probe is a failure of the upstream (`failures`, the last error).
    private func recordProbe(_ i: Int, answered: Bool, now: UInt64) {
        if !answered { counters[counters.count - 1][i].add(.failures) }
        let (change, probeDown) = lock.withLockedValue { l in
            if !answered { l.lastError[i] = .probeUnanswered }
            return (l.health[i].recordProbe(answered: answered, now: now), l.health[i].probeDown)
        }
        state[3 * i + 1] = probeDown ? 1 : 0
        if let down = change {
            if down {
                let missed = settings.probeFails == 1 ? "health probe" : "\(settings.probeFails) health probes in a row"
                logger.warning("upstream down", metadata: ["upstream": "\(endpoints[i])", "reason": "\(missed) not answered within \(settings.interval)"])
            } else {
                logger.notice("upstream up", metadata: ["upstream": "\(endpoints[i])", "reason": "health probe answered"])
            }
        }
    }

    // MARK: snapshot

    func snapshot(now: UInt64 = monotonicNanos()) -> [UpstreamSnapshot] {
        let (addresses, errors) = lock.withLockedValue { ($0.addresses, $0.lastError) }
        return endpoints.indices.map { i in
            var c = UpstreamCounterSnapshot()
            for row in counters {
                for k in UpstreamCounter.allCases { c[k] &+= row[i].value(k) }
            }
            return UpstreamSnapshot(endpoint: endpoints[i].description, address: addresses[i],
                                    down: isDown(i, now: now), counters: c,
                                    lastError: errors[i].map { $0.describe(interval: settings.interval) })
        }
    }
}

/// One upstream of a relay listener as the status endpoint shows it.
public struct UpstreamSnapshot: Sendable, Equatable {
    /// As configured (`192.0.2.10:53`, `dns.example:53`).
    public let endpoint: String
    /// The address in use now; nil while a hostname has never resolved.
    public let address: SocketAddress?
    /// Marked down by passive or active health checks.
    public let down: Bool
    /// Summed over the listener's workers.
    public let counters: UpstreamCounterSnapshot
    /// The last failure seen (`connection refused`, `health probe not answered within 5s`,
    /// `cannot resolve: ...`), kept after the upstream comes back; nil when none was seen.
    public let lastError: String?

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

/// A detached thread for one blocking call (getaddrinfo): lookups of many names run at once
/// instead of one after another, and none waits for a Dispatch worker thread that another
/// blocked lookup holds.
enum ResolverThread {
    private final class Work {
        let body: @Sendable () -> Void
        init(_ body: @escaping @Sendable () -> Void) { self.body = body }
    }

    static func run(_ body: @escaping @Sendable () -> Void) {
        let work = Unmanaged.passRetained(Work(body)).toOpaque()
        var thread = pthread_t()
        let rc = pthread_create(&thread, nil, { context in
            let work = Unmanaged<Work>.fromOpaque(context!).takeRetainedValue()
            work.body()
            return nil
        }, work)
        if rc == 0 {
            pthread_detach(thread)
        } else {
            // No thread to be had: run it on a Dispatch worker instead.
            let body = Unmanaged<Work>.fromOpaque(work).takeRetainedValue().body
            DispatchQueue.global().async(execute: body)
        }
    }
}
