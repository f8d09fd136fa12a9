import DequeModule
import Dispatch
import Logging
import NIOConcurrencyHelpers
import Synchronization
import UDPRelayConfig

#if canImport(Glibc)
import Glibc
#endif

// Concurrency model. Each socket has one worker and each worker one serial Dispatch queue, which
// owns everything of that socket: its read source, its batches and, for relay listeners, its
// sessions and session sockets (the private epoll set of a relay worker is read on that queue
// too). Nothing a worker owns is touched from another thread; other threads reach a worker only
// through `SocketWorker.submit` (ping, stop, reload, snapshots), which queues the block and rings
// the worker's doorbell so a turn of its read loop yields (ReadLoop.swift). Counters are the exception that is read elsewhere: a worker
// writes its own counters (single-writer relaxed atomics) and any thread (snapshots for /status,
// the totals at shutdown) may read them without a lock. Each relay listener's `UpstreamTable`
// has two queues of its own: `controlQueue` for health probes and `resolveQueue` for applying
// DNS answers (each lookup blocks a detached thread); its health and addresses are written only
// under its lock, and the datapath reads the published flags as atomics. The listener set
// (`current`, `running`) is behind NIO locks, and `reloading` (a gate that suspends its waiters,
// never blocks them) serializes reloads and the start of a stop. Atomics are the standard
// library's (`Synchronization.Atomic`) everywhere; locks are NIO's, which ThreadSanitizer
// understands. Swift concurrency meets all this at `start`, `stop`, `apply` (a reload) and
// `probe`, which are async: they hand the work to the queues and suspend on a continuation that
// a DispatchGroup's `notify` (or a ping's reply, or the probe's deadline) resumes, so no
// cooperative thread blocks.

/// All listeners of a running daemon. Binding happens in `init` so a start that cannot bind
/// fails before anything is announced; `start()` arms the read sources; `stop()` cancels them
/// and returns once every socket is closed.
public final class Datapath: Sendable {
    /// The current listeners, in configuration order. A reload (`apply`) replaces the set.
    public var listeners: [Listener] { current.withLockedValue { $0 } }
    // NIO's pthread_mutex locks, not Synchronization.Mutex: ThreadSanitizer does not see the
    // latter's futex on Linux and reports the guarded accesses as races.
    let current: NIOLockedValueBox<[Listener]>
    /// True between `start()` and `stop()`: listeners added by a reload start at once.
    let running = NIOLockedValueBox(false)
    /// Serializes reloads, and a stop with them: a stop waits for a reload in progress.
    let reloading = AsyncGate()
    /// Left once the sockets `stop()` closes are closed; a reload that comes meanwhile waits
    /// for it (`stop` leaves `reloading` as soon as the sockets are being closed).
    let stopped = NIOLockedValueBox<DispatchGroup?>(nil)
    /// Sockets passed in by systemd, by listener name. Kept open for the life of the process;
    /// listeners serve duplicates, so a reload can hand the same socket to a new listener.
    let inherited: [String: [Int32]]
    let tuning: DatapathTuning
    let logger: Logger

    /// Binds every listener of `configuration`, except those named in `inherited`, which serve
    /// the sockets passed in for them instead; on failure closes everything already opened.
    /// `stored` are listener sockets an earlier process left in systemd's file descriptor store,
    /// by the address they are bound to (a worker group each): a listener on that address serves
    /// duplicates of them (the caller closes the originals), so the datagrams that arrived during
    /// the restart are read.
    public init(
        configuration: Configuration, logger: Logger, tuning: DatapathTuning = DatapathTuning(),
        inherited: [String: [Int32]] = [:], stored: [SocketAddress: [Int32]] = [:]
    ) throws(BindError) {
        self.inherited = inherited
        self.tuning = tuning
        self.logger = logger
        var listeners: [Listener] = []
        for lc in configuration.listeners {
            do throws(BindError) {
                listeners.append(try Self.open(lc, tuning: tuning, inherited: inherited, reusable: stored, logger: logger))
            } catch {
                for l in listeners { l.discard() }
                throw error
            }
        }
        current = NIOLockedValueBox(listeners)
    }

    /// Arms every read source and returns once all are registered with the kernel.
    public func start() async {
        await beginStart().completion()
    }

    /// Arms every read source; the group is left once all are registered with the kernel.
    func beginStart() -> DispatchGroup {
        running.withLockedValue { $0 = true }
        let all = listeners
        return start(all, all: all)
    }

    /// Arms `listeners`; `all` is the whole set they will be part of (each worker learns every
    /// local address, for the loop guard). The group is left once every read source is
    /// registered with the kernel.
    func start(_ listeners: [Listener], all: [Listener]) -> DispatchGroup {
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
        return registered
    }

    /// Stops reading, closes every socket and returns when all are closed. Waits for a reload
    /// in progress first.
    public func stop() async {
        await reloading.enter()
        let done = beginStop()
        reloading.leave()
        await done.completion()
    }

    /// Stops as `stop()` does, except that the live relay sessions are not closed: they are
    /// returned, sockets open (the caller owns them), for the next process (see
    /// `SessionArchive`). Held sessions close as usual.
    public func stopHandingOverSessions() async -> [HandedOverSession] {
        await reloading.enter()
        let handedOver = Self.handSessionsOverAtStop(listeners.filter { $0.configuration.mode.hasSessions })
        let done = beginStop()
        reloading.leave()
        await done.completion()
        return handedOver.withLockedValue { $0 }
    }

    /// Has the relay workers of `listeners` hand their live sessions over at stop instead of
    /// closing them (`RelayWorker.handSessionsOverAtStop`, each under its socket index); the box
    /// holds them all once the stop is done.
    static func handSessionsOverAtStop(_ listeners: [Listener]) -> NIOLockedValueBox<[HandedOverSession]> {
        let handedOver = NIOLockedValueBox<[HandedOverSession]>([])
        for l in listeners {
            for (index, w) in l.workers.enumerated() {
                (w as? RelayWorker)?.handSessionsOverAtStop(socket: UInt16(index)) { s in handedOver.withLockedValue { $0 += s } }
            }
        }
        return handedOver
    }

    /// Gives relay sessions an earlier process handed over (`stopHandingOverSessions`) to the
    /// workers of the same listener and socket; call after `init`, before `start`. Sessions that
    /// cannot be taken are closed and counted (see `RelayWorker.Adoption`).
    public func takeOver(_ sessions: [HandedOverSession]) async -> (adopted: Int, refused: Int) {
        await Self.takeOver(sessions, into: listeners)
    }

    /// Every socket this datapath bound or adopted itself (not those passed in by socket
    /// activation), a worker group per address: what goes to systemd's file descriptor store.
    public func ownSocketGroups() -> [(address: SocketAddress, fds: [Int32])] {
        listeners.filter { inherited[$0.name] == nil }.flatMap { l in l.groups.map { ($0[0].localAddress, $0.map(\.fd)) } }
    }

    /// Stops reading and closes every socket; the group is left once all are closed. Callers
    /// hold `reloading` (tests that run no reload may call it alone).
    func beginStop() -> DispatchGroup {
        running.withLockedValue { $0 = false }
        let done = stop(listeners)
        stopped.withLockedValue { $0 = done }
        return done
    }

    /// Stops `listeners`; the group is left once all their sockets are closed.
    func stop(_ listeners: [Listener]) -> DispatchGroup {
        let done = DispatchGroup()
        for l in listeners { l.stop(done: done) }
        return done
    }

    public func listener(named name: String) -> Listener? {
        listeners.first { $0.name == name }
    }
}

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
    /// `proxy_protocol`: `off` or `v2`.
    public var proxyProtocol = ProxyProtocolVersion.off.rawValue
    /// `transparent`: whether session sockets take their client's address and port.
    public var transparent = false
    /// `spoof`: whether copies leave with their client's address and port.
    public var spoof = false
    /// `accept_proxy_protocol`: `off` or `v2`.
    public var acceptProxyProtocol = ProxyProtocolVersion.off.rawValue
}

/// One socket of a listener and the counters of the worker that serves it.
public struct WorkerSnapshot: Sendable {
    /// The address the socket is bound to (shared by the sockets of one `listen` address).
    public let address: SocketAddress
    /// Its number among the sockets of that address.
    public let place: WorkerPlace
    public let counters: CounterSnapshot
}

extension Datapath {
    /// Sums every worker's counters now; takes no lock the datapath holds.
    public func snapshot() -> [ListenerSnapshot] {
        listeners.map { l in
            let workers = zip(l.workers, l.workerPlaces).map { w, place in
                WorkerSnapshot(address: w.localAddress, place: place, counters: w.counters.snapshot())
            }
            return ListenerSnapshot(
                name: l.name, mode: l.configuration.mode.rawValue,
                addresses: l.boundAddresses, counters: workers.reduce(CounterSnapshot()) { $0 + $1.counters },
                upstreams: l.upstreamSnapshots(), workers: workers, proxyProtocol: l.configuration.proxyProtocol.rawValue,
                transparent: l.configuration.transparent, spoof: l.configuration.spoof,
                acceptProxyProtocol: l.configuration.protection.acceptProxyProtocol.rawValue)
        }
    }

    /// Liveness probe: asks every worker queue to run a no-op and waits up to `timeout`.
    /// Returns one line per queue that did not answer (empty when all are alive). A wedged
    /// queue never answers, so health checks and the watchdog cannot be fooled by a healthy
    /// side thread.
    public func probe(timeout: Duration = .seconds(1)) async -> [String] {
        // (listener, worker, " (worker k of n)" when several sockets share the address)
        let workers = listeners.flatMap { l in zip(l.workers, l.workerPlaces).map { (l.name, $0, $1.suffix) } }
        guard !workers.isEmpty else { return [] }
        let answered = ProbeTally(count: workers.count)
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let resume = ResumeOnce(c)
            for (index, (_, worker, _)) in workers.enumerated() {
                worker.ping { if answered.mark(index) { resume() } }
            }
            DispatchQueue.global().asyncAfter(deadline: .now() + .nanoseconds(Int(clamping: timeout.nanoseconds))) { resume() }
        }
        return answered.missing.map { i in
            "listener '\(workers[i].0)' queue for \(workers[i].1.localAddress)\(workers[i].2) did not answer within \(timeout)"
        }
    }
}

extension DispatchGroup {
    /// Suspends until the group is empty, without blocking a thread (`notify`, not `wait`).
    func completion() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            notify(queue: .global()) { c.resume() }
        }
    }
}

/// Mutual exclusion for async code that suspends instead of blocking a thread: one holder at
/// a time, the others wait in arrival order.
final class AsyncGate: Sendable {
    private struct State {
        var held = false
        var waiting = Deque<CheckedContinuation<Void, Never>>()
    }
    private let state = NIOLockedValueBox(State())

    /// Returns once the caller holds the gate.
    func enter() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let admitted = state.withLockedValue { s -> Bool in
                if s.held {
                    s.waiting.append(c)
                    return false
                }
                s.held = true
                return true
            }
            if admitted { c.resume() }
        }
    }

    /// Hands the gate to the next waiter, or opens it.
    func leave() {
        let next = state.withLockedValue { s -> CheckedContinuation<Void, Never>? in
            if let next = s.waiting.popFirst() { return next }
            s.held = false
            return nil
        }
        next?.resume()
    }
}

/// Resumes a continuation the first time it is called; later calls do nothing.
final class ResumeOnce: Sendable {
    private let continuation: CheckedContinuation<Void, Never>
    private let resumed = Synchronization.Atomic(false)
    init(_ continuation: CheckedContinuation<Void, Never>) { self.continuation = continuation }
    func callAsFunction() {
        if !resumed.exchange(true, ordering: .acquiringAndReleasing) { continuation.resume() }
    }
}

/// Which probes were answered: one atomic flag per queue, so answering never waits on a lock.
final class ProbeTally: Sendable {
    private let seen: AtomicSlots
    private let unanswered: Synchronization.Atomic<Int>
    init(count: Int) {
        seen = AtomicSlots(count: count)
        unanswered = Synchronization.Atomic(count)
    }
    /// Marks probe `i` answered; true when it was the last one unanswered.
    func mark(_ i: Int) -> Bool {
        seen[i] = 1
        return unanswered.subtract(1, ordering: .acquiringAndReleasing).newValue == 0
    }
    var missing: [Int] { (0..<seen.count).filter { seen[$0] == 0 } }
}
