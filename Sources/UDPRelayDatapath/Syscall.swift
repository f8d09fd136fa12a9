#if canImport(Glibc)
import Glibc
#endif

/// A failed system call: which call and which errno. The one error type the datapath throws
/// for kernel failures.
public struct SyscallError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The name of the call (`bind`, `recvmmsg`, ...).
    public let call: String
    public let errno: Int32

    public init(call: String, errno: Int32) {
        self.call = call
        self.errno = errno
    }

    public var description: String {
        "\(call) failed: \(String(cString: strerror(errno))) (errno \(errno))"
    }
}

/// The outcome of a system call on a non-blocking descriptor.
public enum IOResult<T: Sendable>: Sendable {
    case done(T)
    /// EAGAIN/EWOULDBLOCK: nothing to read or no room to write right now.
    case wouldBlock
}

/// The single way the datapath calls the kernel: retries EINTR, maps EAGAIN to `.wouldBlock`,
/// reads errno at once and throws a `SyscallError` naming the call. EBADF and EFAULT are
/// programmer errors (a descriptor used after close, a bad pointer) and trap.
@inline(__always)
func syscall<T: FixedWidthInteger & Sendable>(_ call: StaticString, _ body: () -> T) throws(SyscallError) -> IOResult<T> {
    while true {
        let result = body()
        if result >= 0 { return .done(result) }
        let err = Glibc.errno
        switch err {
        case EINTR:
            continue
        case EAGAIN, EWOULDBLOCK:
            return .wouldBlock
        case EBADF, EFAULT:
            preconditionFailure("\(call): \(String(cString: strerror(err))): programmer error")
        default:
            throw SyscallError(call: "\(call)", errno: err)
        }
    }
}

/// For calls that never legitimately block (socket, bind, setsockopt): `.wouldBlock` is an error too.
@inline(__always)
@discardableResult
func syscallNoWait<T: FixedWidthInteger & Sendable>(_ call: StaticString, _ body: () -> T) throws(SyscallError) -> T {
    switch try syscall(call, body) {
    case .done(let v): return v
    case .wouldBlock: throw SyscallError(call: "\(call)", errno: EAGAIN)
    }
}
