import Atomics
import Dispatch
import Logging
import NIOConcurrencyHelpers
import UDPRelayConfig

/// All listeners of a running daemon. Binding happens in `init` so a start that cannot bind
/// fails before anything is announced; `start()` arms the read sources; `stop()` cancels them
/// and waits until every socket is closed.
public final class Datapath: Sendable {
    /// The current listeners, in configuration order. A reload (`apply`) replaces the set.
    public var listeners: [Listener] { current.withLockedValue { $0 } }
    // NIO's pthread_mutex locks, not Synchronization.Mutex: ThreadSanitizer does not see the
    // latter's futex on Linux and reports the guarded accesses as races.
    let current: NIOLockedValueBox<[Listener]>
    /// True between `start()` and `stop()`: listeners added by a reload start at once.
    let running = NIOLockedValueBox(false)
    /// Serializes reloads.
    let reloading = NIOLock()
    /// Sockets passed in by systemd, by listener name. Kept open for the life of the process;
    /// listeners serve duplicates, so a reload can hand the same socket to a new listener.
    let inherited: [String: [Int32]]
    let tuning: DatapathTuning
    let logger: Logger

    /// Binds every listener of `configuration`, except those named in `inherited`, which serve
    /// the sockets passed in for them instead; on failure closes everything already opened.
    public init(configuration: Configuration, logger: Logger, tuning: DatapathTuning = DatapathTuning(),
                inherited: [String: [Int32]] = [:]) throws(BindError) {
        self.inherited = inherited
        self.tuning = tuning
        self.logger = logger
        var listeners: [Listener] = []
        for lc in configuration.listeners {
            do throws(BindError) {
                listeners.append(try Self.open(lc, tuning: tuning, inherited: inherited, reusable: [:], logger: logger))
            } catch {
                for l in listeners { for w in l.workers { close(w.fd) } }
                throw error
            }
        }
        current = NIOLockedValueBox(listeners)
    }

    /// Arms every read source and returns once all are registered with the kernel.
    public func start() {
        running.withLockedValue { $0 = true }
        let all = listeners
        start(all, all: all)
    }

    /// Arms `listeners`; `all` is the whole set they will be part of (each worker learns every
    /// local address, for the loop guard).
    func start(_ listeners: [Listener], all: [Listener]) {
        let loop = LocalAddresses.context(all)
        for l in all { for w in l.workers { w.setLoopContext(loop) } }
        let registered = DispatchGroup()
        for l in listeners {
            l.start(registered: registered)
            var log = logger
            log[metadataKey: "listener.name"] = "\(l.name)"
            log[metadataKey: "listener.mode"] = "\(l.configuration.mode.rawValue)"
            for group in l.groups {
                log.info("listening", metadata: ["listener.address": "\(group[0].localAddress)", "listener.workers": "\(group.count)"])
            }
        }
        registered.wait()
    }

    /// Stops reading, closes every socket and returns when all are closed.
    public func stop() {
        reloading.withLock {
            running.withLockedValue { $0 = false }
            stop(listeners)
        }
    }

    func stop(_ listeners: [Listener]) {
        let done = DispatchGroup()
        for l in listeners { l.stop(done: done) }
        done.wait()
    }

    public func listener(named name: String) -> Listener? {
        listeners.first { $0.name == name }
    }
}

#if canImport(Glibc)
import Glibc
#endif

/// A consistent, lock-free view of one listener, for status pages and logs.
public struct ListenerSnapshot: Sendable {
    public let name: String
    public let mode: String
    public let addresses: [SocketAddress]
    /// Summed over the listener's workers at the time of the snapshot. Relay listeners also
    /// fill the session counters (`sessionsActive`, `sessionsCreated`, `sessionsExpired`,
    /// `sessionsEvicted`, `sessionsClosed`, `sessionErrors`, `failOpen`, `sampledOut`,
    /// `repliesIgnored`); they stay zero for echo.
    public let counters: CounterSnapshot
    /// Relay modes: one entry per `upstream =` address in file order (endpoint, resolved
    /// address, `state` up/down/unresolved, per-upstream counters); empty for echo.
    public var upstreams: [UpstreamSnapshot] = []
    /// Each socket's worker with its own counters, in the order of `Listener.workers` (one per
    /// address unless `workers` is above 1); `counters` is their sum.
    public var workers: [WorkerSnapshot] = []
}

/// One socket of a listener and the counters of the worker that serves it.
public struct WorkerSnapshot: Sendable {
    /// The address the socket is bound to (shared by the sockets of one `listen` address).
    public let address: SocketAddress
    public let counters: CounterSnapshot
}

extension Datapath {
    /// Sums every worker's counters now; takes no lock the datapath holds.
    public func snapshot() -> [ListenerSnapshot] {
        listeners.map { l in
            let workers = l.workers.map { WorkerSnapshot(address: $0.localAddress, counters: $0.counters.snapshot()) }
            return ListenerSnapshot(name: l.name, mode: l.configuration.mode.rawValue,
                                    addresses: l.boundAddresses, counters: workers.reduce(CounterSnapshot()) { $0 + $1.counters },
                                    upstreams: l.upstreamSnapshots(), workers: workers)
        }
    }

    /// Liveness probe: asks every worker queue to run a no-op and waits up to `timeout`.
    /// Returns one line per queue that did not answer (empty when all are alive). A wedged
    /// queue never answers, so health checks and the watchdog cannot be fooled by a healthy
    /// side thread.
    public func probe(timeout: Duration = .seconds(1)) async -> [String] {
        // (listener, worker, " (worker k of n)" when several sockets share the address)
        let workers = listeners.flatMap { l in
            l.groups.flatMap { g in g.enumerated().map { (l.name, $1, g.count > 1 ? " (worker \($0 + 1) of \(g.count))" : "") } }
        }
        guard !workers.isEmpty else { return [] }
        let answered = ProbeTally(count: workers.count)
        for (index, (_, worker, _)) in workers.enumerated() {
            worker.ping { answered.mark(index) }
        }
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline, !answered.all {
            try? await Task.sleep(for: .milliseconds(5))
        }
        return answered.missing.map { i in
            "listener '\(workers[i].0)' queue for \(workers[i].1.localAddress)\(workers[i].2) did not answer within \(timeout)"
        }
    }
}

/// Which probes were answered: one atomic flag per queue, so answering never waits on a lock.
final class ProbeTally: Sendable {
    private let seen: [ManagedAtomic<Bool>]
    init(count: Int) { seen = (0..<count).map { _ in ManagedAtomic(false) } }
    func mark(_ i: Int) { seen[i].store(true, ordering: .releasing) }
    var all: Bool { seen.allSatisfy { $0.load(ordering: .acquiring) } }
    var missing: [Int] { seen.indices.filter { !seen[$0].load(ordering: .acquiring) } }
}
