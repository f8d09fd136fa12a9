import Dispatch
import NIOConcurrencyHelpers
import UDPRelayConfig

@testable import UDPRelayDatapath

/// `start`, `stop` and `apply` for the synchronous tests (and `defer` blocks): they wait on the
/// test's thread for what the async calls await. `applyBlocking` runs `apply` in a task, so call
/// it only from synchronous tests (a blocked cooperative thread could starve that task).
extension Datapath {
    func startBlocking() { beginStart().wait() }

    /// Without `reloading`: for tests that run no reload meanwhile.
    func stopBlocking() { beginStop().wait() }

    @discardableResult
    func applyBlocking(_ configuration: Configuration) throws(BindError) -> ListenerChanges {
        try blocking { () async -> Result<ListenerChanges, BindError> in
            do throws(BindError) {
                return .success(try await self.apply(configuration))
            } catch {
                return .failure(error)
            }
        }.get()
    }

    /// Runs `body` in a task and waits for its result on this thread.
    private func blocking<T: Sendable>(_ body: @escaping @Sendable () async -> T) -> T {
        let result = NIOLockedValueBox<T?>(nil)
        let done = DispatchSemaphore(value: 0)
        Task {
            let value = await body()
            result.withLockedValue { $0 = value }
            done.signal()
        }
        done.wait()
        return result.withLockedValue { $0 }!
    }
}
