import Dispatch
import Logging
import UDPRelayConfig

#if canImport(Glibc)
import Glibc
#endif

/// A non-blocking UDP socket connected to one upstream address, with what reads it: the one
/// way the mirror's upstream sockets and the upstream table's health probes are opened,
/// pointed at a new address and closed.
///
/// `connect(to:)` points an open socket at a new address in place; when that fails (another
/// family: EAFNOSUPPORT) or none is open, it opens a new one, connects it, applies the buffers
/// and hands it to its `ReadWatch`. What goes wrong is reported to the owner, which logs it
/// (`log`, rate-limited); a socket that cannot be opened stays closed (`fd` -1) until the next
/// call. A value confined to its owner's queue.
struct ConnectedSocket {
    /// How the owner reads the socket.
    enum ReadWatch {
        /// A member of a worker's wait set, reported with `tag` (the mirror's upstreams).
        /// Closing the descriptor takes it out of the set.
        case waitSet(WaitSet, tag: UInt64)
        /// A read source of its own on `queue`, calling `onReadable` with the descriptor (health
        /// probes). The descriptor is closed in the source's cancel handler, which then leaves
        /// `closed`.
        case source(DispatchQueue, closed: DispatchGroup, onReadable: @Sendable (Int32) -> Void)
    }

    /// What went wrong in `connect(to:)`.
    enum Problem: Sendable {
        /// The open socket could not be pointed at the new address (another family): a new
        /// socket replaces it.
        case reopened(SyscallError)
        /// No socket could be opened or connected: there is none until the next `connect`.
        case cannotOpen(SyscallError)
        /// Opened and connected, but not watched (no memory for the wait set entry): datagrams
        /// are sent, replies are not read.
        case unwatched(SyscallError)
    }

    let watch: ReadWatch
    /// SO_RCVBUF and SO_SNDBUF for a new socket; nil keeps the kernel's defaults.
    let buffers: (receive: Int, send: Int)?
    /// The descriptor, -1 while there is none.
    private(set) var fd: Int32 = -1
    private var source: DispatchSourceRead?

    init(watch: ReadWatch, buffers: (receive: Int, send: Int)? = nil) {
        self.watch = watch
        self.buffers = buffers
    }

    /// Points the socket at `address`, reconnecting the open one or opening a new one; calls
    /// `report` for each problem on the way.
    mutating func connect(to address: SocketAddress, report: (Problem) -> Void) {
        if fd >= 0 {
            do throws(SyscallError) {
                try UDPSocket.connect(fd, to: address)
                return
            } catch {
                report(.reopened(error))
            }
            close()
        }
        let new: Int32
        do throws(SyscallError) {
            new = try UDPSocket.connectedSocket(to: address).take()
        } catch {
            report(.cannotOpen(error))
            return
        }
        if let buffers { UDPSocket.setBuffers(new, receive: buffers.receive, send: buffers.send) }
        fd = new
        switch watch {
        case .waitSet(let set, let tag):
            do throws(SyscallError) {
                try set.add(new, tag: tag)
            } catch {
                report(.unwatched(error))
            }
        case .source(let queue, let closed, let onReadable):
            let s = DispatchSource.makeReadSource(fileDescriptor: new, queue: queue)
            s.setEventHandler { onReadable(new) }
            closed.enter()
            s.setCancelHandler {
                Syscall.close(new)
                closed.leave()
            }
            source = s
            s.activate()
        }
    }

    /// Closes the socket, if open: at once (a wait set member), or in its source's cancel
    /// handler.
    mutating func close() {
        guard fd >= 0 else { return }
        if let source {
            source.cancel()
        } else {
            Syscall.close(fd)
        }
        source = nil
        fd = -1
    }

    /// Logs `problem` of the socket towards `upstream`, unless `limiter` leaves it out; the line
    /// says how many were left out since the last. `what` names the socket ("health probe",
    /// "mirror").
    static func log(
        _ problem: Problem, what: String, upstream: UpstreamEndpoint, logger: Logger,
        limiter: inout LogLimiter, now: UInt64
    ) {
        let (level, message, error): (Logger.Level, Logger.Message, SyscallError) =
            switch problem {
            case .reopened(let e): (.debug, "\(what) socket reopened", e)
            case .cannotOpen(let e): (.warning, "cannot open \(what) socket", e)
            case .unwatched(let e): (.warning, "\(what) socket not watched; its replies are not read", e)
            }
        log(level, message, error: error, upstream: upstream, logger: logger, limiter: &limiter, now: now)
    }

    /// Logs an error of a socket towards `upstream` at `level`, unless `limiter` leaves it out.
    static func log(
        _ level: Logger.Level, _ message: Logger.Message, error: any Error, upstream: UpstreamEndpoint,
        logger: Logger, limiter: inout LogLimiter, now: UInt64
    ) {
        guard logger.logLevel <= level, let skipped = limiter.admit(now: now) else { return }
        logger.log(
            level: level, message,
            metadata: [
                "upstream": "\(upstream)", "error": "\(error)", "log.suppressed": "\(skipped)",
            ])
    }
}
