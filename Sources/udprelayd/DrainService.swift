import Logging
import ServiceLifecycle
import UnixSignals

/// The drain switch for the whole instance: SIGUSR1 starts draining, SIGUSR2 ends it. While
/// draining, `/healthz` answers 503 so the load balancer in front (IPVS, a Kubernetes Service,
/// a routing daemon) stops sending new flows here; the daemon itself changes nothing: every
/// listener and session keeps being served. Two signals rather than a toggle, so a maintenance
/// script that sends one twice gets what it asked for.
struct DrainService: Service {
    let state: DaemonState
    /// SIGUSR1 and SIGUSR2, registered before the service group starts: their default action
    /// would end the process.
    let signals: UnixSignalsSequence
    let logger: Logger

    func run() async throws {
        for await signal in signals.cancelOnGracefulShutdown() {
            apply(draining: signal == .sigusr1)
        }
    }

    /// Logged once per change; a repeated signal is only a debug line.
    func apply(draining: Bool) {
        guard state.setDraining(draining) else {
            logger.debug(draining ? "already draining" : "not draining")
            return
        }
        if draining {
            logger.notice("draining: /healthz answers 503 until SIGUSR2; all traffic is still served")
        } else {
            logger.notice("drain ended: /healthz reports health again")
        }
    }
}
