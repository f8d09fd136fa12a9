import CUDPRelay
import Dispatch
import Logging
import UDPRelayConfig

#if canImport(Glibc)
import Glibc
#endif

/// Hostname resolution of an upstream table: lookups on threads of their own, results applied
/// on `resolveQueue`.
extension UpstreamTable {
    /// Longest a start or a reload waits for the hostnames of a relay listener's upstreams
    /// (config/README.md, `resolve_interval`). Names not resolved by then take no traffic until
    /// their lookup, which goes on, succeeds.
    static let resolveWait: Duration = .seconds(2)

    /// How long an address that left its hostname's answer stays at least before its slot is
    /// freed, sessions or not: a worker that picked the slot just before the change has opened
    /// its session (and counted it) well within this time.
    static let removalGrace: UInt64 = 1_000_000_000
    /// How often drained addresses are looked for (on `resolveQueue`).
    static let sweepInterval: Duration = .seconds(1)

    /// Looks up every hostname not already being looked up, all at once, each on a thread of
    /// its own (getaddrinfo blocks, up to the resolver's timeouts), and applies each answer on
    /// `resolveQueue`: each new address becomes an upstream new sessions use, each address
    /// gone from the answer drains; a failure keeps the last good addresses and is logged
    /// once. Runs from init, then every `resolve_interval` on `resolveQueue`. The returned
    /// group is left once every lookup started here is applied.
    @discardableResult
    func resolveNames() -> DispatchGroup {
        let applied = DispatchGroup()
        let start = { [self] in
            for (e, u) in configured.enumerated() {
                guard case .name(let host) = u.host, !resolving[e] else { continue }
                resolving[e] = true
                applied.enter()
                let (resolver, port, queue) = (self.resolver, u.port, resolveQueue)
                ResolverThread.run { [self] in
                    let result = resolver(host, port)
                    queue.async { [self] in
                        resolving[e] = false
                        apply(result, to: e)
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
            for (e, u) in configured.enumerated() where resolving[e] && !hasAddress(e) {
                logger.warning(
                    "upstream not resolved in time; it takes no traffic until it resolves",
                    metadata: [
                        "upstream": "\(u)", "waited": "\(Self.resolveWait)",
                    ])
            }
        }
    }

    /// Whether entry `e` has an address that takes new sessions.
    private func hasAddress(_ e: Int) -> Bool { slotsOf[e].contains { flags.resolved[$0] == 1 } }

    /// The addresses of an answer that `resolve` keeps, in the answer's order, each once, at
    /// most `addressesPerName`.
    func usable(_ answer: [SocketAddress]) -> [SocketAddress] {
        var out: [SocketAddress] = []
        for a in answer where !out.contains(a) {
            switch (family, a.ip) {
            case (.ipv4, .v6), (.ipv6, .v4): continue
            default: out.append(a)
            }
        }
        return out
    }

    /// What one answer changed, for the log.
    private struct Changes {
        var added: [SocketAddress] = []
        var draining: [(SocketAddress, UInt64)] = []
        var back: [SocketAddress] = []
        var noRoom: [SocketAddress] = []
    }

    /// Applies one lookup's result (on `resolveQueue`).
    private func apply(_ result: Result<[SocketAddress], ResolveError>, to e: Int) {
        dispatchPrecondition(condition: .onQueue(resolveQueue))
        guard !resolveStopped else { return }
        let u = configured[e]
        let answer: [SocketAddress]
        switch result {
        case .success(let all):
            answer = usable(all)
            if answer.isEmpty {
                let what = family == .ipv4 ? "no IPv4 address (resolve = ipv4)" : family == .ipv6 ? "no IPv6 address (resolve = ipv6)" : "no address"
                return failed(e, ResolveError(what))
            }
        case .failure(let message):
            return failed(e, message)
        }
        if firstAddressOnly { return replace(e, with: answer[0]) }
        let used = Array(answer.prefix(Self.addressesPerName))
        let now = SystemClock.monotonicNanos()
        let changes = lock.withLockedValue { [self] l -> Changes in
            var c = Changes()
            // Addresses held: kept, back in the answer, or gone from it.
            for i in slotsOf[e] {
                guard let a = l.addresses[i] else { continue }
                if used.contains(a) {
                    if l.removedAt[i] != nil {
                        l.removedAt[i] = nil
                        flags.resolved[i] = 1
                        c.back.append(a)
                    }
                } else if l.removedAt[i] == nil {
                    l.removedAt[i] = now
                    flags.resolved[i] = 0
                    c.draining.append((a, sessionsActive(i)))
                }
            }
            // New addresses take free slots, the entry's own first.
            for a in used where !slotsOf[e].contains(where: { l.addresses[$0] == a }) {
                guard let i = slotsOf[e].first(where: { l.addresses[$0] == nil }) else {
                    c.noRoom.append(a)
                    continue
                }
                take(i, address: a, removedAt: nil, in: &l)
                flags.resolved[i] = 1
                c.added.append(a)
            }
            return c
        }
        if !changes.added.isEmpty || !changes.draining.isEmpty || !changes.back.isEmpty {
            generation[0] = generation[0] &+ 1
        }
        for a in changes.added {
            logger.info("upstream resolved", metadata: ["upstream": "\(u)", "upstream.address": "\(a)"])
        }
        for a in changes.back {
            logger.info("upstream address back in the answer", metadata: ["upstream": "\(u)", "upstream.address": "\(a)"])
        }
        for (a, sessions) in changes.draining {
            logger.notice(
                "upstream address left the answer; it takes no new sessions and goes once its sessions end",
                metadata: ["upstream": "\(u)", "upstream.address": "\(a)", "sessions.active": "\(sessions)"])
        }
        if changes.added.isEmpty && changes.draining.isEmpty && resolveFailing[e] {
            logger.notice("upstream resolves again", metadata: ["upstream": "\(u)", "upstream.address": "\(used.map { "\($0)" }.joined(separator: ", "))"])
        }
        resolveFailing[e] = false
        let overflow = answer.count > used.count || !changes.noRoom.isEmpty
        if overflow && !reportedNoRoom[e] {
            logger.warning(
                "upstream resolves to more addresses than it has room for; the others are left out",
                metadata: [
                    "upstream": "\(u)", "addresses": "\(answer.count)", "used": "\(Self.addressesPerName)",
                    "left_out": "\((answer.dropFirst(Self.addressesPerName) + changes.noRoom).map { "\($0)" }.joined(separator: ", "))",
                ])
        }
        reportedNoRoom[e] = overflow
        sweep(now: now)
    }

    /// Gives free slot `i` an address (holding `lock`): fresh health, no error, its counters
    /// from now on; `removedAt` nil for an address of the answer, else it drains. The caller
    /// sets `flags.resolved` last, once the rest is in place.
    private func take(_ i: Int, address: SocketAddress, removedAt: UInt64?, in l: inout UpstreamLockedState) {
        var base = UpstreamCounterSnapshot()
        for row in counters {
            for k in UpstreamCounter.allCases { base[k] &+= row[i].value(k) }
        }
        base[.sessionsActive] = 0
        l.counterBase[i] = base
        l.addresses[i] = address
        l.health[i] = Self.freshHealth(settings)
        l.lastError[i] = nil
        l.removedAt[i] = removedAt
        flags.downUntil[i] = 0
        flags.probeDown[i] = 0
        seeds[i] = Balancer.seed(of: address)
    }

    /// `mirror`: entry `e`'s one address becomes `address` (its row, health and counters go on).
    private func replace(_ e: Int, with address: SocketAddress) {
        let changed = lock.withLockedValue { [self] l -> Bool in
            defer {
                l.addresses[e] = address
                seeds[e] = Balancer.seed(of: address)
                flags.resolved[e] = 1
            }
            return l.addresses[e] != address
        }
        if changed {
            generation[0] = generation[0] &+ 1
            logger.info("upstream resolved", metadata: ["upstream": "\(configured[e])", "upstream.address": "\(address)"])
        } else if resolveFailing[e] {
            logger.notice("upstream resolves again", metadata: ["upstream": "\(configured[e])", "upstream.address": "\(address)"])
        }
        resolveFailing[e] = false
    }

    /// A lookup of entry `e` failed: its addresses stay as they are.
    private func failed(_ e: Int, _ message: ResolveError) {
        let held = lock.withLockedValue { [self] l -> [SocketAddress] in
            let active = slotsOf[e].filter { flags.resolved[$0] == 1 }
            for i in active.isEmpty ? [e] : active { l.lastError[i] = .unresolved(message.description) }
            return active.compactMap { l.addresses[$0] }
        }
        if !resolveFailing[e] {
            logger.error(
                "cannot resolve upstream\(held.isEmpty ? "; it takes no traffic until it resolves" : "; keeping its last address")",
                metadata: [
                    "upstream": "\(configured[e])", "error": "\(message)",
                    "upstream.address": "\(held.isEmpty ? "none" : held.map { "\($0)" }.joined(separator: ", "))",
                ])
        }
        resolveFailing[e] = true
    }

    /// Frees the slots of addresses that left their answer at least `removalGrace` before
    /// `now` and had no session at this sweep and the one before: their rows leave the status
    /// (on `resolveQueue`). Two sweeps, because a worker counts a session's end a moment before
    /// it reads the session's address for its record.
    func sweep(now: UInt64) {
        dispatchPrecondition(condition: .onQueue(resolveQueue))
        let freed = lock.withLockedValue { [self] l -> [(Int, SocketAddress)] in
            var freed: [(Int, SocketAddress)] = []
            for i in l.removedAt.indices {
                guard let at = l.removedAt[i], let a = l.addresses[i] else { continue }
                let idle = sessionsActive(i) == 0
                defer { idleAtLastSweep[i] = idle }
                guard idle, idleAtLastSweep[i], now >= at &+ Self.removalGrace else { continue }
                l.addresses[i] = nil
                l.removedAt[i] = nil
                freed.append((i, a))
            }
            return freed
        }
        guard !freed.isEmpty else { return }
        generation[0] = generation[0] &+ 1
        for (i, a) in freed {
            logger.info("upstream address drained and removed", metadata: ["upstream": "\(endpoints[i])", "upstream.address": "\(a)"])
        }
    }

    /// A slot for sessions handed over (a reload) on `address`, which no upstream has now: an
    /// address their hostname no longer resolves to. It is given to the first hostname entry of
    /// the same port as an address that drains (its sessions continue, no new one comes), and
    /// the next such session finds it there. Nil when no hostname entry has that port or a free
    /// slot: the session ends as `upstream_removed`. Any queue.
    func drainingSlot(for address: SocketAddress) -> Int? {
        let claimed = lock.withLockedValue { [self] l -> (slot: Int, new: Bool)? in
            if let i = l.addresses.firstIndex(of: address) { return (i, false) }
            guard let e = configured.indices.first(where: { configured[$0].literal == nil && configured[$0].port == address.port }),
                let i = slotsOf[e].first(where: { l.addresses[$0] == nil })
            else { return nil }
            take(i, address: address, removedAt: SystemClock.monotonicNanos(), in: &l)
            return (i, true)
        }
        guard let claimed else { return nil }
        if claimed.new {
            generation[0] = generation[0] &+ 1
            logger.notice(
                "sessions handed over on an address the upstream no longer resolves to: it drains",
                metadata: ["upstream": "\(endpoints[claimed.slot])", "upstream.address": "\(address)"])
        }
        return claimed.slot
    }

    /// getaddrinfo: every IPv4 and IPv6 address returned, in its order, each once.
    static func resolve(host: String, port: UInt16) -> Result<[SocketAddress], ResolveError> {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_DGRAM.rawValue)
        var result: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(host, nil, &hints, &result)
        guard rc == 0 else { return .failure(ResolveError(String(cString: gai_strerror(rc)))) }
        defer { freeaddrinfo(result) }
        var out: [SocketAddress] = []
        var p = result
        while let ai = p {
            if let sa = ai.pointee.ai_addr, var address = SocketAddress(sockaddr: UnsafeRawPointer(sa)) {
                address.port = port
                if !out.contains(address) { out.append(address) }
            }
            p = ai.pointee.ai_next
        }
        return out.isEmpty ? .failure(ResolveError("no IPv4 or IPv6 address")) : .success(out)
    }

    struct ResolveError: Error, Sendable, CustomStringConvertible {
        let description: String
        init(_ d: String) { description = d }
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
        let rc = pthread_create(
            &thread, nil,
            { context in
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
