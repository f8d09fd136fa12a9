import Dispatch
import Synchronization
import Logging
import UDPRelayConfig

/// All listeners of a running daemon. Binding happens in `init` so a start that cannot bind
/// fails before anything is announced; `start()` arms the read sources; `stop()` cancels them
/// and waits until every socket is closed.
public final class Datapath: Sendable {
    public let listeners: [Listener]
    private let logger: Logger

    /// Binds every listener of `configuration`; on failure closes everything already bound.
    public init(configuration: Configuration, logger: Logger, tuning: DatapathTuning = DatapathTuning()) throws(BindError) {
        var listeners: [Listener] = []
        for lc in configuration.listeners {
            do {
                listeners.append(try Listener(lc, tuning: tuning))
            } catch {
                for l in listeners { for w in l.workers { close(w.fd) } }
                throw error
            }
        }
        self.listeners = listeners
        self.logger = logger
    }

    /// Arms every read source and returns once all are registered with the kernel.
    public func start() {
        let own = LocalAddresses.expand(listeners.flatMap(\.boundAddresses))
        for l in listeners { for w in l.workers { w.setOwnAddresses(own) } }
        let registered = DispatchGroup()
        for l in listeners {
            l.start(registered: registered)
            var log = logger
            log[metadataKey: "listener.name"] = "\(l.name)"
            log[metadataKey: "listener.mode"] = "\(l.configuration.mode.rawValue)"
            for address in l.boundAddresses {
                log.info("listening", metadata: ["listener.address": "\(address)"])
            }
        }
        registered.wait()
    }

    /// Stops reading, closes every socket and returns when all are closed.
    public func stop() {
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
    /// Summed over the listener's workers at the time of the snapshot.
    public let counters: CounterSnapshot
}

extension Datapath {
    /// Sums every worker's counters now; takes no lock the datapath holds.
    public func snapshot() -> [ListenerSnapshot] {
        listeners.map {
            ListenerSnapshot(name: $0.name, mode: $0.configuration.mode.rawValue,
                             addresses: $0.boundAddresses, counters: $0.counters())
        }
    }

    /// Liveness probe: asks every worker queue to run a no-op and waits up to `timeout`.
    /// Returns one line per queue that did not answer (empty when all are alive). A wedged
    /// queue never answers, so health checks and the watchdog cannot be fooled by a healthy
    /// side thread.
    public func probe(timeout: Duration = .seconds(1)) async -> [String] {
        let workers = listeners.flatMap { l in l.workers.map { (l.name, $0) } }
        guard !workers.isEmpty else { return [] }
        let answered = ProbeTally(count: workers.count)
        for (index, (_, worker)) in workers.enumerated() {
            worker.ping { answered.mark(index) }
        }
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline, !answered.all {
            try? await Task.sleep(for: .milliseconds(5))
        }
        return answered.missing.map { i in
            "listener '\(workers[i].0)' queue for \(workers[i].1.localAddress) did not answer within \(timeout)"
        }
    }
}

/// Which probes were answered.
final class ProbeTally: Sendable {
    private let seen: Mutex<[Bool]>
    init(count: Int) { seen = Mutex(Array(repeating: false, count: count)) }
    func mark(_ i: Int) { seen.withLock { $0[i] = true } }
    var all: Bool { seen.withLock { !$0.contains(false) } }
    var missing: [Int] { seen.withLock { s in s.indices.filter { !s[$0] } } }
}
