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
                logger.warning(
                    "upstream not resolved in time; it takes no traffic until it resolves",
                    metadata: [
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
            let changed = lock.withLockedValue { [flags] l -> Bool in
                defer {
                    l.addresses[i] = address
                    flags.resolved[i] = 1
                }
                return l.addresses[i] != address
            }
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
                logger.error(
                    "cannot resolve upstream\(kept == nil ? "; it takes no traffic until it resolves" : "; keeping its last address")",
                    metadata: [
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
