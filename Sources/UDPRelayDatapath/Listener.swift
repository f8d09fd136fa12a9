import CUDPRelay
import Dispatch
import Logging
import UDPRelayConfig

#if canImport(Glibc)
import Glibc
#endif

/// A failure to open a listener's socket, naming the listener and the address.
public struct BindError: Error, Sendable, CustomStringConvertible {
    public let listener: String
    public let address: SocketAddress
    public let underlying: SyscallError

    public var description: String {
        "listener '\(listener)': cannot bind \(address): \(underlying)"
    }
}

/// One configured listener: per listen address (or per socket passed in) a group of sockets,
/// each served by its own worker. A group has `workers` sockets sharing the address with
/// SO_REUSEPORT (one without it when `workers = 1`).
public final class Listener: Sendable {
    public let configuration: ListenerConfiguration
    /// The workers of each address; the first of a group holds the socket bound (or adopted) first.
    public let groups: [[SocketWorker]]
    /// Every worker: the groups one after the other, in the order of `configuration.listen`.
    public var workers: [SocketWorker] { groups.flatMap { $0 } }

    /// The addresses actually bound (ports learned after binding port 0), one per group.
    public var boundAddresses: [SocketAddress] { groups.map { $0[0].localAddress } }

    public var name: String { configuration.name }

    /// Relay modes: the upstreams shared by the workers (nil for echo).
    let upstreams: UpstreamTable?

    /// Opens every socket of the listener: by default one group bound per `listen` address;
    /// `sockets` replaces them (sockets passed in by systemd, or kept across a reload).
    /// `workersPerSocket` (default: the configured `workers`, resolved) is the size of each
    /// group: the first socket binds the address (port 0 included), the others bind the address
    /// it got, all with SO_REUSEPORT. On failure closes what it opened, adopted descriptors
    /// included. Relay listeners start looking up upstream hostnames here; their workers wait
    /// for the answers at most `UpstreamTable.resolveWait` when they start (a failure is logged,
    /// not fatal: the upstream takes no traffic until it resolves).
    public convenience init(
        _ configuration: ListenerConfiguration, tuning: DatapathTuning = DatapathTuning(),
        sockets: [SocketSource]? = nil, workersPerSocket: Int? = nil,
        logger: Logger
    ) throws(BindError) {
        try self.init(configuration, tuning: tuning, sockets: sockets, workersPerSocket: workersPerSocket, logger: logger, resolver: nil)
    }

    /// `resolver`: how upstream hostnames are looked up (getaddrinfo when nil; tests inject one).
    init(
        _ configuration: ListenerConfiguration, tuning: DatapathTuning = DatapathTuning(),
        sockets: [SocketSource]? = nil, workersPerSocket: Int? = nil,
        logger: Logger, resolver: UpstreamTable.Resolver?
    ) throws(BindError) {
        self.configuration = configuration
        let perSocket = max(1, workersPerSocket ?? configuration.workers.resolved())
        let sources = sockets ?? configuration.listen.map { .bind($0) }
        let total = sources.count * perSocket
        let upstreams =
            configuration.mode.isRelay
            ? UpstreamTable(configuration: configuration, workers: total, logger: logger, resolver: resolver) : nil
        self.upstreams = upstreams
        if configuration.mode.hasSessions {
            let held = SessionTable.heldCapacity(maxSessions: configuration.sessions.maxSessions)
            FileLimit.ensure(
                UInt64(configuration.sessions.maxSessions + held) * UInt64(total) + 1024,
                listener: configuration.name, logger: logger)
        }
        var workers: [SocketWorker] = []
        var groups: [[SocketWorker]] = []
        /// A worker for `socket`, which it owns from then on; on failure `socket` closes itself.
        func serve(_ socket: consuming SocketDescriptor, at address: SocketAddress) throws(SyscallError) -> SocketWorker {
            UDPSocket.setBuffers(socket.rawValue, receive: configuration.receiveBuffer, send: configuration.sendBuffer)
            UDPSocket.enableDropCount(socket.rawValue)
            let worker = try Self.makeWorker(
                configuration, fd: socket.rawValue, localAddress: address, index: workers.count,
                upstreams: upstreams, tuning: tuning, logger: logger)
            _ = socket.take()
            return worker
        }
        for (index, source) in sources.enumerated() {
            var address = source.address
            var group: [SocketWorker] = []
            // Adopted members of the group not yet serving (closed here on failure).
            var members = source.members[...]
            do throws(SyscallError) {
                let socket = try source.open(reusePort: perSocket > 1 || !members.isEmpty)
                let first = try UDPSocket.localAddress(socket.rawValue)
                address = first
                group.append(try serve(socket, at: first))
                workers.append(group[0])
                while group.count < perSocket {
                    let next: SocketDescriptor
                    if let member = members.popFirst() {
                        next = try SocketSource.adopt(fd: member, address: first).open(reusePort: true)
                    } else {
                        next = try UDPSocket.boundSocket(to: first, reusePort: true)
                    }
                    let worker = try serve(next, at: first)
                    group.append(worker)
                    workers.append(worker)
                }
                // More adopted sockets than `workers` asks for: they leave the group.
                while let member = members.popFirst() { Syscall.close(member) }
                groups.append(group)
            } catch {
                // The socket being set up closed itself; the workers built own theirs.
                for m in members { Syscall.close(m) }
                for w in workers { w.discard() }
                for s in sources[(index + 1)...] { s.discard() }
                throw BindError(listener: configuration.name, address: address, underlying: error)
            }
        }
        var log = logger
        log[metadataKey: "listener.name"] = "\(configuration.name)"
        for w in workers {
            w.filter = IngressFilter(configuration.protection, mode: configuration.mode)
            w.dropLogger = log
        }
        self.groups = groups
    }

    /// The worker of the listener's mode for one socket; `index` is its place among all the
    /// listener's workers (its row of upstream counters).
    static func makeWorker(
        _ configuration: ListenerConfiguration, fd: Int32, localAddress: SocketAddress, index: Int,
        upstreams: UpstreamTable?, tuning: DatapathTuning, logger: Logger
    ) throws(SyscallError) -> SocketWorker {
        let label = "udprelayd.listener.\(configuration.name).\(index)"
        switch configuration.mode {
        case .echo:
            return try EchoWorker(
                fd: fd, localAddress: localAddress, label: label, maxDatagram: configuration.maxDatagram,
                busyPoll: configuration.busyPoll, segmentation: configuration.segmentation, tuning: tuning)
        case .forward, .balance:
            return try RelayWorker(
                fd: fd, localAddress: localAddress, label: label, configuration: configuration,
                upstreams: upstreams!, workerIndex: index, tuning: tuning, logger: logger)
        case .mirror:
            return try MirrorWorker(
                fd: fd, localAddress: localAddress, label: label, configuration: configuration,
                upstreams: upstreams!, workerIndex: index, tuning: tuning)
        }
    }

    /// Counters of all workers, summed now.
    public func counters() -> CounterSnapshot {
        workers.reduce(CounterSnapshot()) { $0 + $1.counters.snapshot() }
    }

    /// Relay modes: each upstream's address, health and counters, summed now (empty for echo).
    public func upstreamSnapshots() -> [UpstreamSnapshot] {
        upstreams?.snapshot() ?? []
    }

    /// Closes the sockets of a listener that never started (see `SocketWorker.discard`).
    func discard() {
        for w in workers { w.discard() }
    }

    func start(registered: DispatchGroup) {
        for w in workers { w.start(registered: registered) }
        upstreams?.start()
    }

    func stop(done: DispatchGroup) {
        upstreams?.stop(done: done)
        for w in workers { w.stop(done: done) }
    }
}

/// Where one socket of a listener comes from.
public enum SocketSource: Sendable {
    /// A new socket bound to the address.
    case bind(SocketAddress)
    /// A datagram socket that is already bound (passed in by systemd, kept across a reload, or
    /// from systemd's file descriptor store after a restart); the listener takes ownership of
    /// `fd` and closes it when it stops. `members` are more sockets bound to the same address
    /// with SO_REUSEPORT (the rest of a worker group): they serve as the group's next workers
    /// before any new socket is bound, so the datagrams queued on them are read, not lost.
    case adopt(fd: Int32, address: SocketAddress, members: [Int32] = [])

    /// The configured address (`bind`) or the address the socket is bound to (`adopt`).
    public var address: SocketAddress {
        switch self {
        case .bind(let a): a
        case .adopt(_, let a, _): a
        }
    }

    /// The adopted sockets beyond the first (see `adopt`).
    var members: [Int32] {
        if case .adopt(_, _, let members) = self { members } else { [] }
    }

    /// Takes over a duplicate of `fd` (close-on-exec), which stays open for the caller.
    public static func adopting(duplicateOf fd: Int32) throws(SyscallError) -> SocketSource {
        try adopting(duplicatesOf: [fd])
    }

    /// Takes over duplicates of `fds`, sockets bound to one address (a worker group), which stay
    /// open for the caller. On failure nothing stays open of the duplicates.
    public static func adopting(duplicatesOf fds: [Int32]) throws(SyscallError) -> SocketSource {
        precondition(!fds.isEmpty)
        var copies: [Int32] = []
        do throws(SyscallError) {
            for fd in fds { copies.append(try Syscall.duplicate(fd)) }
            let address = try UDPSocket.localAddress(copies[0])
            return .adopt(fd: copies[0], address: address, members: Array(copies.dropFirst()))
        } catch {
            for fd in copies { Syscall.close(fd) }
            throw error
        }
    }

    /// Binds or prepares the socket: non-blocking, packet info on wildcard addresses, and
    /// SO_REUSEPORT when `reusePort` (so more sockets can join the address; on an adopted socket
    /// that is already bound, Linux applies it to the binds that follow). On failure an adopted
    /// descriptor is closed.
    func open(reusePort: Bool = false) throws(SyscallError) -> SocketDescriptor {
        switch self {
        case .bind(let address):
            return try UDPSocket.boundSocket(to: address, reusePort: reusePort)
        case .adopt(let fd, let address, _):
            let socket = SocketDescriptor(fd)
            try Syscall.setNonBlocking(fd)
            if reusePort {
                try Syscall.setIntOption(fd, SOL_SOCKET, CUR_SO_REUSEPORT, 1, call: "setsockopt(SO_REUSEPORT)")
            }
            if address.ip.isWildcard {
                try Syscall.enablePacketInfo(fd, family: address.family)
            }
            return socket
        }
    }

    /// Closes adopted descriptors that will not be used after all.
    func discard() {
        if case .adopt(let fd, _, let members) = self {
            Syscall.close(fd)
            for m in members { Syscall.close(m) }
        }
    }
}

extension WorkerCount {
    /// Sockets per address: `auto` is the number of online CPUs now (sysconf), within `range`.
    public func resolved() -> Int {
        switch self {
        case .count(let n):
            return min(max(n, Self.range.lowerBound), Self.range.upperBound)
        case .auto:
            let cpus = Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))
            return min(max(cpus, Self.range.lowerBound), Self.range.upperBound)
        }
    }
}
