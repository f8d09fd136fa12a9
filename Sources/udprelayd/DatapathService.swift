import Logging
import ServiceLifecycle
import UDPRelayDatapath

/// Runs the bound datapath until graceful shutdown, then stops reading and closes every socket.
struct DatapathService: Service {
    let datapath: Datapath
    let logger: Logger
    /// Called once every listener is serving (sends READY=1 to systemd).
    var onReady: @Sendable () -> Void = {}
    /// Called when shutdown begins (sends STOPPING=1).
    var onStopping: @Sendable () -> Void = {}
    /// When set, the live relay sessions are not closed at stop but handed here, sockets open
    /// (for the next process: `Continuity.storeSessions`).
    var handOverSessions: (@Sendable ([HandedOverSession]) -> Void)?

    func run() async throws {
        await datapath.start()
        logger.info("ready", metadata: ["listeners": "\(datapath.listeners.count)"])
        onReady()
        try? await gracefulShutdown()
        onStopping()
        logger.info("stopping")
        if let handOverSessions {
            handOverSessions(await datapath.stopHandingOverSessions())
        } else {
            await datapath.stop()
        }
        for listener in datapath.listeners {
            let c = listener.counters()
            var metadata: Logger.Metadata = [
                "listener.name": "\(listener.name)",
                "received": "\(c[.receivedPackets])",
                "sent": "\(c[.sentPackets])",
            ]
            for d in Counter.dropCounters { metadata["drop.\(d.name)"] = "\(c[d])" }
            if listener.configuration.mode.isRelay {
                for (name, counter) in Counter.relayCounters { metadata[name] = "\(c[counter])" }
            }
            logger.info("totals", metadata: metadata)
            for u in listener.upstreamSnapshots() {
                var upstream: Logger.Metadata = [
                    "listener.name": "\(listener.name)", "upstream": "\(u.endpoint)", "state": "\(u.state)",
                ]
                for k in UpstreamCounter.allCases { upstream[k.name] = "\(u.counters[k])" }
                logger.info("upstream totals", metadata: upstream)
            }
        }
        logger.info("stopped")
    }
}
