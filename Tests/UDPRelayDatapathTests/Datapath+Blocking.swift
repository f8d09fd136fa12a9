import Dispatch
@testable import UDPRelayDatapath

/// `start` and `stop` for the synchronous tests (and `defer` blocks): they wait on the test's
/// thread for the queues to finish, as `start()` and `stop()` await the same groups.
extension Datapath {
    func startBlocking() { beginStart().wait() }
    func stopBlocking() { beginStop().wait() }
}
