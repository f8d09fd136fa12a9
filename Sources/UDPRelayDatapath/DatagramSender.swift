import CUDPRelay

#if canImport(Glibc)
import Glibc
#endif

/// Sends a vector of datagrams with as few system calls as the kernel allows, in order.
///
/// Runs of equal-sized datagrams to the same destination (the last of a run may be shorter) go
/// out as one `sendmsg` with UDP generic segmentation offload (`UDP_SEGMENT`): the payloads are gathered from their
/// buffers by an iovec list (no copy) and the kernel builds, routes and passes down one large
/// packet that it cuts into the datagrams at the end, instead of doing all of that once per
/// datagram. Everything else goes out with `sendmmsg`, as before. A kernel or route that
/// refuses segmentation (EINVAL, EIO, EMSGSIZE, ENOPROTOOPT, EOPNOTSUPP) gets the run again
/// without it; the segment size it refused becomes the limit for later runs, and a kernel
/// without the feature, or `maxRefusals` refusals, turn it off for good.
///
/// Not thread-safe: owned by one worker and used only on its queue. Allocates once.
struct DatagramSender {
    /// What was sent; failures were reported through `drop`.
    struct Outcome {
        var sent = 0
        var bytes: UInt64 = 0
        /// Of `sent`, the datagrams that went out in segmented sends.
        var segmented = 0
    }

    /// Datagrams per segmented send (the kernel's UDP_MAX_SEGMENTS is 64 or more).
    static let maxSegments = 64
    /// Shorter runs stay in the `sendmmsg` batch: splitting the batch around a run of two or
    /// three costs about what segmenting them saves.
    static let minSegments = 4
    /// Payload bytes per segmented send (below IPv4's 65,507-byte limit for one UDP packet).
    static let maxPayload = 65_000

    private let iov: UnsafeMutablePointer<iovec>
    /// Segmentation is used for segments of at most this many bytes; 0 turns it off.
    private(set) var maxSegment: Int
    /// Runs the kernel refused to segment; after `maxRefusals` segmentation is off for good.
    private(set) var refusals = 0
    static let maxRefusals = 8

    /// - Parameter segmentation: use UDP GSO where it applies.
    init(segmentation: Bool) {
        iov = .allocate(capacity: DatagramSender.maxSegments)
        iov.initialize(repeating: iovec(), count: DatagramSender.maxSegments)
        maxSegment = segmentation ? 65_535 : 0
    }

    /// Frees the iovec list (the owner calls this in its deinit).
    func deallocate() {
        iov.deallocate()
    }

    /// Sends `vec[0..<count]` on `fd`; every message has one iovec whose `iov_len` is the
    /// datagram's size. `oneDestination`: every message has the destination and control data
    /// of `vec[0]` (a connected socket, or replies to one client); otherwise runs are cut where
    /// the destination or control data changes. `drop(errno, n)` is told about `n` datagrams
    /// that were not sent (`EAGAIN`: the send buffer is full and the rest of the run is dropped
    /// rather than spun on).
    @inline(__always)
    mutating func send(
        fd: Int32, _ vec: UnsafeMutablePointer<cur_mmsghdr>, count: Int, oneDestination: Bool,
        drop: (_ errno: Int32, _ count: Int) -> Void
    ) -> Outcome {
        var outcome = Outcome()
        var plainFrom = 0
        var i = 0
        while i < count {
            let end = maxSegment > 0 ? runEnd(vec, from: i, count: count, oneDestination: oneDestination) : i + 1
            if end - i < DatagramSender.minSegments {
                i += 1
                continue
            }
            sendPlain(fd: fd, vec, from: plainFrom, to: i, outcome: &outcome, drop: drop)
            if !sendSegmented(fd: fd, vec, from: i, to: end, outcome: &outcome, drop: drop) {
                sendPlain(fd: fd, vec, from: i, to: end, outcome: &outcome, drop: drop)
            }
            i = end
            plainFrom = end
        }
        sendPlain(fd: fd, vec, from: plainFrom, to: count, outcome: &outcome, drop: drop)
        return outcome
    }

    /// The end of the segmentable run starting at `start`: datagrams of the first one's size
    /// and destination, then at most one shorter one; bounded by `maxSegments`, `maxPayload`
    /// and `maxSegment`.
    @inline(__always)
    private func runEnd(_ vec: UnsafeMutablePointer<cur_mmsghdr>, from start: Int, count: Int, oneDestination: Bool) -> Int {
        let segment = vec[start].msg_hdr.msg_iov.pointee.iov_len
        guard segment > 0, segment <= maxSegment else { return start + 1 }
        var end = start + 1
        var total = segment
        while end < count && end - start < DatagramSender.maxSegments {
            let size = vec[end].msg_hdr.msg_iov.pointee.iov_len
            guard size <= segment, total + size <= DatagramSender.maxPayload,
                oneDestination || Self.sameDestination(vec[start].msg_hdr, vec[end].msg_hdr)
            else { break }
            total += size
            end += 1
            if size < segment { break }  // a shorter datagram ends the run
        }
        return end
    }

    /// Whether two messages go to the same address with the same control data.
    @inline(__always)
    private static func sameDestination(_ a: msghdr, _ b: msghdr) -> Bool {
        guard a.msg_namelen == b.msg_namelen, a.msg_controllen == b.msg_controllen else { return false }
        if a.msg_namelen > 0 {
            guard let x = a.msg_name, let y = b.msg_name, memcmp(x, y, Int(a.msg_namelen)) == 0 else { return false }
        }
        if a.msg_controllen > 0 {
            guard let x = a.msg_control, let y = b.msg_control, memcmp(x, y, a.msg_controllen) == 0 else { return false }
        }
        return true
    }

    /// One segmented send of `vec[start..<end]`. False when the kernel refused segmentation
    /// (nothing was sent; the caller sends the run without it).
    @inline(__always)
    private mutating func sendSegmented(
        fd: Int32, _ vec: UnsafeMutablePointer<cur_mmsghdr>, from start: Int, to end: Int,
        outcome: inout Outcome, drop: (Int32, Int) -> Void
    ) -> Bool {
        let n = end - start
        var bytes = 0
        for k in 0..<n {
            iov[k] = vec[start + k].msg_hdr.msg_iov.pointee
            bytes += iov[k].iov_len
        }
        let segment = iov[0].iov_len
        let h = vec[start].msg_hdr
        do {
            switch try Syscall.sendSegmented(fd, header: h, iov, count: n, segment: segment) {
            case .done:
                outcome.sent += n
                outcome.segmented += n
                outcome.bytes &+= UInt64(bytes)
            case .wouldBlock:
                drop(EAGAIN, n)
            }
        } catch {
            switch error.errno {
            case ENOPROTOOPT, EOPNOTSUPP, EIO:
                maxSegment = 0  // no segmentation on this kernel or path (IPsec): never again
                refusals += 1
                return false
            case EINVAL, EMSGSIZE:
                // Segments this large do not fit the path; repeated refusals of smaller ones
                // mean the socket or kernel cannot segment at all.
                refusals += 1
                maxSegment = refusals >= DatagramSender.maxRefusals ? 0 : segment - 1
                return false
            default:
                drop(error.errno, n)
            }
        }
        return true
    }

    /// `sendmmsg` of `vec[start..<end]`; a datagram that fails is reported and skipped.
    @inline(__always)
    private func sendPlain(
        fd: Int32, _ vec: UnsafeMutablePointer<cur_mmsghdr>, from start: Int, to end: Int,
        outcome: inout Outcome, drop: (Int32, Int) -> Void
    ) {
        var i = start
        while i < end {
            do {
                switch try Syscall.sendmmsg(fd, vec + i, count: end - i) {
                case .done(let n):
                    for k in i..<(i + Int(n)) { outcome.bytes &+= UInt64(vec[k].msg_len) }
                    outcome.sent += Int(n)
                    i += Int(n)
                case .wouldBlock:
                    drop(EAGAIN, end - i)
                    i = end
                }
            } catch {
                drop(error.errno, 1)
                i += 1
            }
        }
    }
}
