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

    /// Opens and binds every socket of the listener; on failure closes what it opened.
    public init(_ configuration: ListenerConfiguration, tuning: DatapathTuning = DatapathTuning()) throws(BindError) {
        self.configuration = configuration
        var workers: [SocketWorker] = []
        for address in configuration.listen {
            do throws(SyscallError) {
                let fd = try UDPSocket.bound(to: address)
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
                    workers.append(EchoWorker(fd: fd, localAddress: local, label: label,
                                              maxDatagram: configuration.maxDatagram, tuning: tuning))
                case .forward, .balance, .mirror:
                    // The relay datapath lands in the next increment (issue 3).
                    close(fd)
                    throw SyscallError(call: "mode \(configuration.mode.rawValue)", errno: ENOSYS)
                }
            } catch {
                for w in workers { close(w.fd) }
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

    func start(registered: DispatchGroup) {
        for w in workers { w.start(registered: registered) }
    }

    func stop(done: DispatchGroup) {
        for w in workers { w.stop(done: done) }
    }
}

#if canImport(Glibc)
import Glibc
#endif
