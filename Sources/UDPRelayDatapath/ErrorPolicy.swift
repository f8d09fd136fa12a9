#if canImport(Glibc)
import Glibc
#endif

/// The UDP error policy, written down in one place.
///
/// - Per-datagram errors are counted and the socket keeps serving: a refused port (an ICMP
///   port unreachable from an earlier send), an unreachable host or network, a datagram too
///   big for the path, a full send buffer, a firewall refusal.
/// - EBADF/EFAULT trap in `syscall` (programmer errors).
/// - Everything else on receive is counted as a receive error; the read source fires again
///   only if the socket is still readable, so a persistent error cannot spin.
enum ErrorPolicy {
    /// The drop counter for a failed send of one datagram.
    static func sendDrop(errno err: Int32) -> Counter {
        switch err {
        case EAGAIN, EWOULDBLOCK, ENOBUFS, ENOMEM: .dropSendBufferFull
        case ECONNREFUSED: .dropRefused
        default: .dropSendError
        }
    }
}
