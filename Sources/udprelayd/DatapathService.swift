import Logging
import ServiceLifecycle
import UDPRelayDatapath

/// Runs the bound datapath until graceful shutdown, then stops reading and closes every socket.
struct DatapathService: Service {
    let datapath: Datapath
    let logger: Logger

    func run() async throws {
        datapath.start()
        logger.info("ready", metadata: ["listeners": "\(datapath.listeners.count)"])
        try? await gracefulShutdown()
        logger.info("stopping")
        datapath.stop()
        for listener in datapath.listeners {
            let c = listener.counters()
            var metadata: Logger.Metadata = [
                "listener.name": "\(listener.name)",
                "received": "\(c[.receivedPackets])",
                "sent": "\(c[.sentPackets])",
            ]
            for d in Counter.dropCounters { metadata["drop.\(d.dropReason!)"] = "\(c[d])" }
            logger.info("totals", metadata: metadata)
        }
        logger.info("stopped")
    }
}
