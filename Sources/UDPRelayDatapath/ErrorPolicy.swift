#if canImport(Glibc)
import Glibc
#endif

/// The UDP error policy, written down in one place.
///
/// - Per-datagram errors are counted and the socket keeps serving: a refused port (an ICMP
///   port unreachable from an earlier send), an unreachable host or network, a datagram too
///   big for the path, a full send buffer, a firewall refusal.
/// - EBADF/EFAULT trap in `syscall` (programmer errors).
/// - Relay modes: a failed send to an upstream, or an ICMP error reported on a session socket
///   (ECONNREFUSED after an earlier datagram hit a closed port), is counted as a drop and as a
///   failure of that upstream (`isUpstreamFailure`), which feeds passive health; a full buffer
///   or an oversized datagram is not the upstream's fault.
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

    /// Whether a failed send to (or ICMP error from) an upstream counts against its passive
    /// health: refused, unreachable, or any send error other than a full buffer. A full send
    /// buffer is our own congestion, not the upstream's fault.
    static func isUpstreamFailure(errno err: Int32) -> Bool {
        switch err {
        case EAGAIN, EWOULDBLOCK, ENOBUFS, ENOMEM, EMSGSIZE: false
        default: true
        }
    }
}
