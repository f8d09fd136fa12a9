import Dispatch
import Logging
import UDPRelayConfig

#if canImport(Glibc)
import Glibc
#endif

/// Active health checks of an upstream table: one connected UDP socket per upstream (each
/// address of a hostname is one), a probe every `health_interval`, all on `controlQueue`.
extension UpstreamTable {
    func startProbes() {
        dispatchPrecondition(condition: .onQueue(controlQueue))
        probeBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 65536, alignment: 8)
        probeSockets = (0..<count).map { i in
            ConnectedSocket(
                watch: .source(
                    controlQueue, closed: probeClosed,
                    onReadable: { [unowned self] fd in
                        probeReadable(i, fd: fd)
                    }))
        }
        let interval = DispatchTimeInterval.nanoseconds(Int(clamping: settings.interval.nanoseconds))
        let t = DispatchSource.makeTimerSource(queue: controlQueue)
        t.schedule(deadline: .now(), repeating: interval, leeway: .milliseconds(5))
        t.setEventHandler { [unowned self] in probeTick() }
        probeTimer = t
        t.activate()
    }

    private func probeTick() {
        dispatchPrecondition(condition: .onQueue(controlQueue))
        guard let payload = probePayload else { return }
        let now = SystemClock.monotonicNanos()
        let gen = generation[0]
        let row = counters[counters.count - 1]
        for i in 0..<count {
            // Every address that takes sessions is probed, and an entry still without any
            // (its probes go unanswered); free slots and addresses that left the answer are not.
            guard isActive(i) || (i < configured.count && address(i) == nil) else {
                awaiting[i] = false
                continue
            }
            if awaiting[i] { recordProbe(i, answered: false, now: now) }
            if probeSockets[i].fd < 0 || gen != probeGeneration { connectProbeSocket(i) }
            let fd = probeSockets[i].fd
            guard fd >= 0 else {
                recordProbe(i, answered: false, now: now)
                continue
            }
            awaiting[i] = true
            row[i].add(.probesSent)
            do {
                _ = try payload.withUnsafeBytes { bytes in Result { () throws(SyscallError) in try Syscall.send(fd, bytes) } }.get()
            } catch {
                // ECONNREFUSED: an earlier probe was refused; this one goes unanswered and counts.
                ConnectedSocket.log(
                    .info, "health probe not sent", error: error, upstream: endpoints[i], logger: logger,
                    limiter: &probeErrorLog, now: now)
            }
        }
        probeGeneration = gen
    }

    /// Points probe socket `i` at the upstream's address (a new socket when the family changed).
    /// With no socket this tick, the probe counts as unanswered and the next tick tries again.
    private func connectProbeSocket(_ i: Int) {
        guard let address = address(i) else { return }
        probeSockets[i].connect(to: address) { problem in
            ConnectedSocket.log(
                problem, what: "health probe", upstream: endpoints[i], logger: logger,
                limiter: &probeErrorLog, now: SystemClock.monotonicNanos())
        }
    }

    private func probeReadable(_ i: Int, fd: Int32) {
        dispatchPrecondition(condition: .onQueue(controlQueue))
        guard let buffer = probeBuffer else { return }
        let expect = settings.expect
        for _ in 0..<64 {
            let r: IOResult<Int>
            do {
                r = try Syscall.recv(fd, into: buffer)
            } catch {
                // ECONNREFUSED: nobody listens; the unanswered probe marks it down at the next tick.
                if error.errno != ECONNREFUSED {
                    ConnectedSocket.log(
                        .info, "health probe reply not read", error: error, upstream: endpoints[i], logger: logger,
                        limiter: &probeErrorLog, now: SystemClock.monotonicNanos())
                }
                continue
            }
            guard case .done(let n) = r else { return }
            guard n >= expect.count, expect.indices.allSatisfy({ buffer[$0] == expect[$0] }) else { continue }
            counters[counters.count - 1][i].add(.probesAnswered)
            if awaiting[i] {
                awaiting[i] = false
                recordProbe(i, answered: true, now: SystemClock.monotonicNanos())
            }
        }
    }

    /// An unanswered probe is a failure of the upstream (`failures`, the last error).
    private func recordProbe(_ i: Int, answered: Bool, now: UInt64) {
        if !answered { counters[counters.count - 1][i].add(.failures) }
        let change = lock.withLockedValue { [flags] l in
            if !answered { l.lastError[i] = .probeUnanswered }
            let change = l.health[i].recordProbe(answered: answered, now: now)
            flags.probeDown[i] = l.health[i].probeDown ? 1 : 0
            return change
        }
        if let down = change {
            if down {
                let missed = settings.probeFails == 1 ? "health probe" : "\(settings.probeFails) health probes in a row"
                logger.warning("upstream down", metadata: logMetadata(i, ["reason": "\(missed) not answered within \(settings.interval)"]))
            } else {
                logger.notice("upstream up", metadata: logMetadata(i, ["reason": "health probe answered"]))
            }
        }
    }
}
