import CUDPRelay
import Dispatch
import Logging
import UDPRelayConfig

#if canImport(Glibc)
import Glibc
#endif

/// RFC 862 echo: every datagram goes back to its sender, byte for byte, from the local address
/// it was sent to. Receives and replies in place in the same vectors (no copy).
final class EchoWorker: SocketWorker, @unchecked Sendable {
    // @unchecked: as SocketWorker, state confined to `queue`.
    private let batch: MessageBatch
    private let usesPacketInfo: Bool
    /// Slots used by the last `recvmmsg`, to be reset before the next.
    private var lastCount: Int
    private var sender: DatagramSender

    init(
        fd: Int32, localAddress: SocketAddress, label: String, maxDatagram: Int, busyPoll: Duration = .zero,
        segmentation: Bool = true, tuning: DatapathTuning
    ) throws(SyscallError) {
        self.usesPacketInfo = localAddress.ip.isWildcard
        self.batch = MessageBatch(capacity: tuning.batchSize, bufferSize: maxDatagram, withControl: localAddress.ip.isWildcard)
        self.lastCount = tuning.batchSize
        self.sender = DatagramSender(segmentation: segmentation)
        try super.init(fd: fd, localAddress: localAddress, label: label, tuning: tuning, busyPoll: busyPoll)
    }

    deinit { sender.deallocate() }

    /// One `recvmmsg` and the replies: the datagrams received, 0 when none were waiting, nil on error.
    override func receiveBatch() -> Int? {
        guard let received = receive(into: batch, resetting: lastCount) else { return nil }
        guard received > 0 else { return 0 }
        lastCount = received
        echo(received)
        return received
    }

    /// Turns the `count` received messages into replies and sends the runs between drops.
    @inline(__always)
    private func echo(_ count: Int) {
        var bytes: UInt64 = 0
        var runStart = 0
        let now = filter.needsClock ? SystemClock.coarseMonotonicNanos() : 0
        for i in 0..<count {
            let m = batch.messages + i
            bytes &+= UInt64(m.pointee.msg_len)
            guard admits(batch, i, now: now) else {
                send(from: runStart, to: i)
                runStart = i + 1
                continue
            }
            m.pointee.msg_hdr.msg_iov.pointee.iov_len = Int(m.pointee.msg_len)
            restoreProxySender(batch, i)
            if usesPacketInfo {
                cur_prepare_reply_control(&m.pointee.msg_hdr)
            } else {
                m.pointee.msg_hdr.msg_controllen = 0
            }
        }
        countReceived(count, bytes: bytes)
        send(from: runStart, to: count)
    }

    /// Sends messages `start..<end` with as few system calls as possible (`DatagramSender`:
    /// segmented where consecutive replies go to one client); a datagram that fails is counted
    /// under its drop reason and skipped; a full send buffer drops the rest of the run (counted)
    /// instead of spinning.
    @inline(__always)
    private func send(from start: Int, to end: Int) {
        guard end > start else { return }
        let outcome = sender.send(fd: fd, batch.messages + start, count: end - start, oneDestination: false) { err, n in
            counters.add(ErrorPolicy.sendDrop(errno: err), UInt64(n))
        }
        if outcome.sent > 0 {
            counters.add(.sentPackets, UInt64(outcome.sent))
            counters.add(.sentBytes, outcome.bytes)
        }
    }
}
