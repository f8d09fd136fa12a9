import CUDPRelay
import Dispatch
import Logging
import UDPRelayConfig

/// A failure to open a listener's socket, naming the listener and the address.
public struct BindError: Error, Sendable, CustomStringConvertible {
    public let listener: String
    public let address: SocketAddress
    public let underlying: SyscallError

    public var description: String {
        "listener '\(listener)': cannot bind \(address): \(underlying)"
    }
}

/// One configured listener: a socket (and worker) per listen address.
public final class Listener: Sendable {
    public let configuration: ListenerConfiguration
    /// Workers in the order of `configuration.listen`.
    public let workers: [SocketWorker]

    /// The addresses actually bound (ports learned after binding port 0).
    public var boundAddresses: [SocketAddress] { workers.map(\.localAddress) }

    public var name: String { configuration.name }

    /// Relay modes: the upstreams shared by the workers (nil for echo).
    let upstreams: UpstreamTable?

    /// Opens every socket of the listener: by default one bound per `listen` address; `sockets`
    /// replaces them (sockets passed in by systemd, or kept across a reload). On failure closes
    /// what it opened, adopted descriptors included. Relay listeners resolve upstream hostnames
    /// here (a failure is logged, not fatal: the upstream takes no traffic until it resolves).
    public init(_ configuration: ListenerConfiguration, tuning: DatapathTuning = DatapathTuning(),
                sockets: [SocketSource]? = nil, logger: Logger = Logger(label: "udprelayd")) throws(BindError) {
        self.configuration = configuration
        var workers: [SocketWorker] = []
        let sources = sockets ?? configuration.listen.map { .bind($0) }
        let upstreams = configuration.mode.isRelay
            ? UpstreamTable(configuration: configuration, workers: sources.count, logger: logger) : nil
        self.upstreams = upstreams
        if configuration.mode.hasSessions {
            FileLimit.ensure(UInt64(configuration.sessions.maxSessions) * UInt64(sources.count) + 1024,
                             listener: configuration.name, logger: logger)
        }
        for (index, source) in sources.enumerated() {
            let address = source.address
            do throws(SyscallError) {
                let fd = try source.open()
                UDPSocket.setBuffers(fd, receive: configuration.receiveBuffer, send: configuration.sendBuffer)
                let local: SocketAddress
                do {
                    local = try UDPSocket.localAddress(fd)
                } catch {
                    close(fd)
                    throw error
                }
                let label = "udprelayd.listener.\(configuration.name).\(workers.count)"
                switch configuration.mode {
                case .echo:
                    workers.append(EchoWorker(fd: fd, localAddress: local, label: label, maxDatagram: configuration.maxDatagram,
                                              busyPoll: configuration.busyPoll, tuning: tuning))
                case .forward, .balance:
                    workers.append(RelayWorker(fd: fd, localAddress: local, label: label, configuration: configuration,
                                               upstreams: upstreams!, workerIndex: workers.count, tuning: tuning, logger: logger))
                case .mirror:
                    workers.append(MirrorWorker(fd: fd, localAddress: local, label: label, configuration: configuration,
                                                upstreams: upstreams!, workerIndex: workers.count, tuning: tuning))
                }
            } catch {
                for w in workers { close(w.fd) }
                for s in sources[(index + 1)...] { s.discard() }
                throw BindError(listener: configuration.name, address: address, underlying: error)
            }
        }
        for w in workers { w.filter = IngressFilter(configuration.protection) }
        self.workers = workers
    }

    /// Counters of all workers, summed now.
    public func counters() -> CounterSnapshot {
        workers.reduce(CounterSnapshot()) { $0 + $1.counters.snapshot() }
    }

    /// Relay modes: each upstream's address, health and counters, summed now (empty for echo).
    public func upstreamSnapshots() -> [UpstreamSnapshot] {
        upstreams?.snapshot() ?? []
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

#if canImport(Glibc)
import Glibc
#endif

/// Where one socket of a listener comes from.
public enum SocketSource: Sendable {
    /// A new socket bound to the address.
    case bind(SocketAddress)
    /// A datagram socket that is already bound (passed in by systemd, or kept across a reload);
    /// the listener takes ownership of `fd` and closes it when it stops.
    case adopt(fd: Int32, address: SocketAddress)

    /// The configured address (`bind`) or the address the socket is bound to (`adopt`).
    public var address: SocketAddress {
        switch self {
        case .bind(let a): a
        case .adopt(_, let a): a
        }
    }

    /// Takes over a duplicate of `fd` (close-on-exec), which stays open for the caller.
    public static func adopting(duplicateOf fd: Int32) throws(SyscallError) -> SocketSource {
        let copy = try syscallNoWait("fcntl(F_DUPFD_CLOEXEC)") { fcntl(fd, F_DUPFD_CLOEXEC, 0) }
        do {
            return .adopt(fd: copy, address: try UDPSocket.localAddress(copy))
        } catch {
            close(copy)
            throw error
        }
    }

    /// Binds or prepares the socket: non-blocking, packet info on wildcard addresses. On failure
    /// an adopted descriptor is closed.
    func open() throws(SyscallError) -> Int32 {
        switch self {
        case .bind(let address):
            return try UDPSocket.bound(to: address)
        case .adopt(let fd, let address):
            do {
                let flags = try syscallNoWait("fcntl(F_GETFL)") { fcntl(fd, F_GETFL) }
                try syscallNoWait("fcntl(F_SETFL)") { fcntl(fd, F_SETFL, flags | O_NONBLOCK) }
                if address.ip.isWildcard {
                    try syscallNoWait("setsockopt(PKTINFO)") { cur_enable_pktinfo(fd, address.family) }
                }
            } catch {
                close(fd)
                throw error
            }
            return fd
        }
    }

    /// Closes an adopted descriptor that will not be used after all.
    func discard() {
        if case .adopt(let fd, _) = self { close(fd) }
    }
}
