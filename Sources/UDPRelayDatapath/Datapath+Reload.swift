import Dispatch
import Logging
import NIOConcurrencyHelpers
import UDPRelayConfig

#if canImport(Glibc)
import Glibc
#endif

extension Datapath {
    /// Applies a new configuration as a diff (see `ListenerChanges`): unchanged listeners keep
    /// their sockets, workers and counters and are not touched at all; changed and new ones are
    /// opened and started first; the replaced and removed ones are then drained and closed, and
    /// the new set is swapped in. A changed or new listener on an address the running daemon already has open
    /// (same configured address with a port not 0, or the address a socket is bound to) takes
    /// over a duplicate of that socket instead of binding again, so rebinding neither fails with
    /// EADDRINUSE nor loses queued datagrams.
    /// If any socket cannot be opened, nothing changes and the error is thrown. Returns once the
    /// new listeners serve and the replaced ones are closed; reloads run one at a time.
    @discardableResult
    public func apply(_ configuration: Configuration) async throws(BindError) -> ListenerChanges {
        await reloading.enter()
        defer { reloading.leave() }
        if let stopping = stopped.withLockedValue({ $0 }) { await stopping.completion() }
        let old = listeners
        let changes = ListenerChanges(from: old.map(\.configuration), to: configuration.listeners)
        let keep = Set(changes.unchanged)
        let byName = Dictionary(uniqueKeysWithValues: old.map { ($0.name, $0) })

        // Sockets of the listeners that go away, by configured address (port not 0) and by
        // the address they are bound to (a port 0 the file now names explicitly).
        // A whole worker group each, so none of its sockets closes with datagrams queued on it.
        var reusable: [SocketAddress: [Int32]] = [:]
        for l in old where !keep.contains(l.name) && inherited[l.name] == nil {
            for (address, group) in zip(l.configuration.listen, l.groups) {
                reusable[group[0].localAddress] = group.map(\.fd)
                if address.port != 0 { reusable[address] = group.map(\.fd) }
            }
        }

        var opened: [Listener] = []
        var next: [Listener] = []
        for lc in configuration.listeners {
            if keep.contains(lc.name), let l = byName[lc.name] {
                next.append(l)
                continue
            }
            do throws(BindError) {
                let l = try Self.open(lc, tuning: tuning, inherited: inherited, reusable: reusable, logger: logger)
                opened.append(l)
                next.append(l)
            } catch {
                for l in opened { l.discard() }
                throw error
            }
        }

        let isRunning = running.withLockedValue { $0 }
        let retired = old.filter { !keep.contains($0.name) }
        if isRunning {
            // `reloading` is held until the new sockets serve and the old ones are closed.
            // A changed listener is stopped first and its replacement started after: the
            // replacement continues its counters and takes over its relay sessions (same upstream
            // socket, so the upstream sees the same source port), and never two workers serve
            // one client at once. Meanwhile datagrams wait in the socket, which both hold.
            // The old listeners stay in the set (and in `probe()`) until they have drained
            // and closed: a queue wedged now must still stop the watchdog pings.
            let replaced = Dictionary(uniqueKeysWithValues: opened.compactMap { l in byName[l.name].map { (l.name, ($0, l)) } })
            let handedOver = Self.handSessionsOverAtStop(
                replaced.values.filter { $0.0.configuration.mode.hasSessions && $0.1.configuration.mode.hasSessions }.map(\.0))
            await stop(retired).completion()
            for (old, new) in replaced.values { Self.carryCounters(from: old, to: new) }
            let sessions = handedOver.withLockedValue { $0 }
            if !sessions.isEmpty { await Self.takeOver(sessions, into: next) }
            await start(opened, all: next).completion()
        } else {
            for l in retired { l.discard() }
        }
        current.withLockedValue { $0 = next }
        for name in changes.removed where inherited[name] != nil {
            logger.warning(
                "listener removed, but its socket came from systemd and stays open until the socket unit stops it",
                metadata: ["listener.name": "\(name)"])
        }
        return changes
    }

    /// The replacement of a listener continues its counts: worker k carries worker k's counters,
    /// and the first worker those of workers the replacement no longer has.
    static func carryCounters(from old: Listener, to new: Listener) {
        let newWorkers = new.workers
        guard !newWorkers.isEmpty else { return }
        for (k, w) in old.workers.enumerated() {
            newWorkers[k < newWorkers.count ? k : 0].counters.carry(w.counters.snapshot())
        }
    }

    /// Gives relay sessions handed over (by the workers of a listener this reload replaced, or
    /// by the previous process) to the worker of the same listener and socket index (the one
    /// the kernel sends those clients' datagrams to while the sockets stay the same); with fewer
    /// workers now, to worker index modulo their number. Sessions of a listener that is gone or
    /// has no sessions now are closed. Before the workers start. Returns how many were adopted
    /// and how many refused (each refusal counted on the listener, see `RelayWorker.Adoption`).
    @discardableResult
    static func takeOver(_ sessions: [HandedOverSession], into listeners: [Listener]) async -> (adopted: Int, refused: Int) {
        var byWorker: [ObjectIdentifier: (RelayWorker, [HandedOverSession])] = [:]
        var closed = 0
        let byName = Dictionary(uniqueKeysWithValues: listeners.map { ($0.name, $0) })
        for s in sessions {
            guard let l = byName[s.entry.listener], l.configuration.mode.hasSessions, !l.workers.isEmpty,
                let w = l.workers[Int(s.entry.socket) % l.workers.count] as? RelayWorker
            else {
                if s.fd >= 0 { Syscall.close(s.fd) }
                closed += 1
                continue
            }
            byWorker[ObjectIdentifier(w), default: (w, [])].1.append(s)
        }
        var adopted = 0, refused = closed
        for (w, handed) in byWorker.values {
            // `takeOver` waits for upstream names and the worker's queue: off the cooperative pool.
            let result = await withCheckedContinuation { c in
                DispatchQueue.global().async { c.resume(returning: w.takeOver(handed)) }
            }
            adopted += result.adopted
            refused += result.refused
        }
        return (adopted, refused)
    }

    /// Opens one listener: systemd's sockets for it if there are any (exactly those, one worker
    /// each), else duplicates of a running (or stored) worker group on the same configured
    /// address, else a fresh bind per address; the configured `workers` then fill each group,
    /// joining the address with SO_REUSEPORT.
    static func open(
        _ lc: ListenerConfiguration, tuning: DatapathTuning, inherited: [String: [Int32]],
        reusable: [SocketAddress: [Int32]], logger: Logger
    ) throws(BindError) -> Listener {
        var sources: [SocketSource] = []
        func abandon() { for s in sources { s.discard() } }
        if let fds = inherited[lc.name] {
            let asked = lc.workers.resolved()
            if asked > 1 {
                logger.notice(
                    "workers ignored: the listener serves the sockets passed by systemd, one worker each",
                    metadata: ["listener.name": "\(lc.name)", "workers": "\(lc.workers)", "sockets": "\(fds.count)"])
            }
            for fd in fds {
                do {
                    sources.append(try SocketSource.adopting(duplicateOf: fd))
                } catch {
                    abandon()
                    throw BindError(listener: lc.name, address: lc.listen.first ?? SocketAddress(ip: .v4(0), port: 0), underlying: error)
                }
            }
        } else {
            for address in lc.listen {
                guard let fds = reusable[address], !fds.isEmpty else {
                    sources.append(.bind(address))
                    continue
                }
                do {
                    sources.append(try SocketSource.adopting(duplicatesOf: fds))
                } catch {
                    abandon()
                    throw BindError(listener: lc.name, address: address, underlying: error)
                }
            }
        }
        return try Listener(
            lc, tuning: tuning, sockets: sources, workersPerSocket: inherited[lc.name] != nil ? 1 : nil,
            logger: logger)
    }
}
