import CUDPRelay
import Dispatch
import UDPRelayConfig

#if canImport(Glibc)
import Glibc
#endif

/// The worker runtime: how a worker's thread waits for datagrams. One loop, used by every mode
/// (echo, forward/balance, mirror).
///
/// Every worker has one Dispatch read source on its serial queue, the entry point of its
/// sockets: for echo on the listener socket; for relay and mirror on their `WaitSet`, the epoll
/// set that holds the listener and the session (relay) or upstream (mirror) sockets. A Dispatch
/// wakeup is expensive next to a datagram: libdispatch's event thread disarms the source, wakes
/// a worker thread (futex), that thread runs the handler, and the source is re-armed after it
/// (two `epoll_ctl`, an eventfd write and read, a FIONREAD). Paid per datagram, it would be most
/// of what a datagram costs at everyday rates (BENCHMARKS.md has the measurements).
///
/// So once the source fires, the handler serves on that thread and waits in the kernel itself:
/// the loop alternates `epoll_wait` on the wait set (with a timeout; an echo listener joins
/// the set for the turn) and serving what it reports: listener batches with `recvmmsg`
/// (`receiveBatch`), member sockets by tag (`memberReady`). While traffic keeps coming a
/// datagram costs what it costs a C epoll server: one `epoll_wait`, one `recvmmsg`, one send.
/// The source stays disarmed meanwhile, so libdispatch's event thread sleeps. The turn ends,
/// and the thread goes back to Dispatch, when nothing arrived for `DatapathTuning.idleHold`,
/// when the wait set's doorbell rings, or after `DatapathTuning.turnLimit` in all. Work that
/// other threads queue on the worker's serial queue (stop, reload, liveness probes,
/// `/sessions` snapshots, the session handover) goes through `SocketWorker.submit`, which
/// rings the doorbell (an eventfd in the set), so it waits for one batch, not for the turn;
/// the relay's session expiry runs inside the turn when due (`turnTick`). `turnLimit` bounds
/// only what nothing rings for (the refusal log's flush). An idle worker therefore makes no
/// wakeups at all, and a steady stream costs one Dispatch wakeup per `turnLimit` instead of
/// one per datagram.
///
/// `busy_poll` (off by default) adds a spin before the wait: for up to that long after the
/// last datagram the loop polls without blocking (yielding the CPU in between), which shaves
/// the kernel's sleep-and-wake off a ping-pong's round trip at the price of a CPU kept busy.
///
/// Allocates nothing: the event array is allocated once with the wait set.
final class WaitSet {
    /// The epoll descriptor. Owned by the wait set until `handOver()` (to the read source that
    /// closes it, after its members); closed by `close()` or when the set is freed otherwise.
    let fd: Int32
    private var owned: SocketDescriptor?
    /// What one `epoll_wait` reports.
    let ready: UnsafeMutablePointer<cur_ready>
    static let capacity = 64
    /// The tag of the listener socket while it is a member (during a turn).
    static let listenerTag = UInt64.max
    /// The tag of the doorbell, a member for good.
    static let doorbellTag = UInt64.max - 1
    /// The doorbell: an eventfd that `ring` makes readable, so a turn waiting in the set
    /// returns to its queue. Closed with the set object, after every thread that could ring it
    /// has let go of the worker.
    private let doorbell: SocketDescriptor

    init() throws(SyscallError) {
        let epoll = SocketDescriptor(try Syscall.epollCreate())
        let bell = SocketDescriptor(try Syscall.eventCreate())
        try Syscall.epollAdd(epoll.rawValue, bell.rawValue, tag: WaitSet.doorbellTag)
        fd = epoll.rawValue
        owned = consume epoll
        doorbell = consume bell
        ready = .allocate(capacity: WaitSet.capacity)
        ready.initialize(repeating: cur_ready(), count: WaitSet.capacity)
    }

    /// Makes the set readable until a turn answers: any thread, any time.
    func ring() {
        Syscall.eventSignal(doorbell.rawValue)
    }

    /// Silences the doorbell (on the worker's queue, when a turn saw it).
    func answer() {
        Syscall.eventReset(doorbell.rawValue)
    }

    deinit { ready.deallocate() }

    /// Hands the epoll descriptor to a new owner (a read source's cancel handler), which
    /// closes it; the set no longer does.
    func handOver() -> Int32? {
        owned.take()?.take()
    }

    /// Closes the epoll descriptor now, unless it was handed over or closed already.
    func close() {
        owned.take()?.close()
    }

    /// Adds `member` for EPOLLIN (level-triggered), reported with `tag`.
    func add(_ member: Int32, tag: UInt64) throws(SyscallError) {
        try Syscall.epollAdd(fd, member, tag: tag)
    }

    /// Removes `member` (closing a descriptor removes it too).
    func remove(_ member: Int32) {
        Syscall.epollRemove(fd, member)
    }

    /// Waits up to `timeout` ms (0: not at all) and returns how many members are ready in
    /// `ready`, 0 on timeout or error.
    @inline(__always)
    func wait(timeout: Int32) -> Int {
        guard case .done(let n)? = try? Syscall.epollWait(fd, ready, capacity: Int32(WaitSet.capacity), timeout: timeout) else {
            return 0
        }
        return Int(n)
    }
}

extension SocketWorker {
    /// One turn of the worker on its queue: serves the listener and the wait set's members
    /// until nothing arrived for `tuning.idleHold`, the doorbell rang, or for at most
    /// `tuning.turnLimit` (see `WaitSet`). With `holding` false (the last pass of `stop`), serves only what is
    /// already waiting and returns as soon as all is empty.
    final func serveTurn(holding: Bool) {
        dispatchPrecondition(condition: .onQueue(queue))
        turnStarted()
        let joined = listenerAlwaysInSet || (try? waitSet.add(fd, tag: WaitSet.listenerTag)) != nil
        defer { if joined && !listenerAlwaysInSet { waitSet.remove(fd) } }
        if !joined {
            // Cannot wait in the kernel (no memory for the epoll entry): serve what is there.
            drainListener()
            return
        }
        let start = SystemClock.monotonicNanos()
        var last = start
        var timeout: Int32 = 0
        while true {
            let n = waitSet.wait(timeout: timeout)
            var rung = false
            for i in 0..<n {
                let tag = waitSet.ready[i].tag
                if tag == WaitSet.listenerTag {
                    drainListener()
                } else if tag == WaitSet.doorbellTag {
                    waitSet.answer()
                    rung = true
                } else {
                    memberReady(tag)
                }
            }
            let now = SystemClock.monotonicNanos()
            if n > 0 { last = now }
            turnTick(now)
            // Work is waiting on the queue: let it run (the last pass of `stop` is that work).
            if rung && holding { return }
            if !holding {
                // The last pass: never waits, bounded like a turn.
                if n == 0 || now &- start >= tuning.turnLimit { return }
                continue
            }
            let end = min(last &+ tuning.idleHold, start &+ tuning.turnLimit)
            if now >= end { return }
            if busyPoll > 0 && now &- last < busyPoll {
                // busy_poll: poll without blocking, letting a client or upstream on this CPU run.
                if n == 0 { sched_yield() }
                timeout = 0
            } else {
                // Whole milliseconds, rounded up (epoll_wait's resolution).
                timeout = Int32((end &- now &+ 999_999) / 1_000_000)
            }
        }
    }

    /// Reads the listener until a batch comes back short (the socket is empty, or nearly: the
    /// wait set reports it again if not), at most `tuning.maxBatchesPerWakeup` batches in a row
    /// so members get their turn.
    @inline(__always)
    final func drainListener() {
        for _ in 0..<tuning.maxBatchesPerWakeup {
            guard let n = receiveBatch(), n == tuning.batchSize else { return }
        }
    }
}
