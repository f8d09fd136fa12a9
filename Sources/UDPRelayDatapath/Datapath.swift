import Dispatch
import Logging
import UDPRelayConfig

/// All listeners of a running daemon. Binding happens in `init` so a start that cannot bind
/// fails before anything is announced; `start()` arms the read sources; `stop()` cancels them
/// and waits until every socket is closed.
public final class Datapath: Sendable {
    public let listeners: [Listener]
    private let logger: Logger

    /// Binds every listener of `configuration`; on failure closes everything already bound.
    public init(configuration: Configuration, logger: Logger, tuning: DatapathTuning = DatapathTuning()) throws(BindError) {
        var listeners: [Listener] = []
        for lc in configuration.listeners {
            do {
                listeners.append(try Listener(lc, tuning: tuning))
            } catch {
                for l in listeners { for w in l.workers { close(w.fd) } }
                throw error
            }
        }
        self.listeners = listeners
        self.logger = logger
    }

    /// Arms every read source and returns once all are registered with the kernel.
    public func start() {
        let registered = DispatchGroup()
        for l in listeners {
            l.start(registered: registered)
            var log = logger
            log[metadataKey: "listener.name"] = "\(l.name)"
            log[metadataKey: "listener.mode"] = "\(l.configuration.mode.rawValue)"
            for address in l.boundAddresses {
                log.info("listening", metadata: ["listener.address": "\(address)"])
            }
        }
        registered.wait()
    }

    /// Stops reading, closes every socket and returns when all are closed.
    public func stop() {
        let done = DispatchGroup()
        for l in listeners { l.stop(done: done) }
        done.wait()
    }

    public func listener(named name: String) -> Listener? {
        listeners.first { $0.name == name }
    }
}

#if canImport(Glibc)
import Glibc
#endif
