#if canImport(Glibc)
import Glibc
#endif
import Dispatch
import Logging
import UDPRelayConfig

/// Active health checks of an upstream table: one connected UDP socket per upstream, a probe
/// every `health_interval`, all on `controlQueue`.
extension UpstreamTable {
    func startProbes() {
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
            do {
                _ = try syscall("send") { payload.withUnsafeBytes { Glibc.send(probeFDs[i], $0.baseAddress, $0.count, 0) } }
            } catch {
                // ECONNREFUSED: an earlier probe was refused; this one goes unanswered and counts.
                logProbeError(i, "health probe not sent", error, level: .info, now: now)
            }
        }
        probeGeneration = gen
    }

    private func openProbeSocket(_ i: Int) {
        guard let address = address(i) else { return }
        if probeFDs[i] >= 0, let s = probeSources[i] {
            // Same family: just point the socket at the new address.
            do {
                try UDPSocket.connect(probeFDs[i], to: address)
                return
            } catch {
                // Another family (EAFNOSUPPORT): a new socket follows.
                logProbeError(i, "health probe socket reopened", error, level: .debug, now: monotonicNanos())
            }
            s.cancel()
            probeSources[i] = nil
            probeFDs[i] = -1
        }
        let fd: Int32
        do {
            fd = try UDPSocket.open(family: address.family)
            do {
                try UDPSocket.connect(fd, to: address)
            } catch {
                close(fd)
                throw error
            }
        } catch {
            // No socket this tick: the probe counts as unanswered and the next tick tries again.
            logProbeError(i, "cannot open health probe socket", error, level: .warning, now: monotonicNanos())
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
        let change = lock.withLockedValue { [flags] l in
            if !answered { l.lastError[i] = .probeUnanswered }
            let change = l.health[i].recordProbe(answered: answered, now: now)
            flags.probeDown[i] = l.health[i].probeDown ? 1 : 0
            return change
        }
        if let down = change {
            if down {
                let missed = settings.probeFails == 1 ? "health probe" : "\(settings.probeFails) health probes in a row"
                logger.warning("upstream down", metadata: ["upstream": "\(endpoints[i])", "reason": "\(missed) not answered within \(settings.interval)"])
            } else {
                logger.notice("upstream up", metadata: ["upstream": "\(endpoints[i])", "reason": "health probe answered"])
            }
        }
    }

    /// Logs a probe socket's error: at most one line a minute per table (on `controlQueue`),
    /// with the number left out since the last.
    private func logProbeError(_ i: Int, _ message: Logger.Message, _ error: any Error, level: Logger.Level, now: UInt64) {
        dispatchPrecondition(condition: .onQueue(controlQueue))
        guard logger.logLevel <= level, let skipped = probeErrorLog.admit(now: now) else { return }
        logger.log(level: level, message, metadata: [
            "upstream": "\(endpoints[i])", "error": "\(error)", "log.suppressed": "\(skipped)",
        ])
    }
}
