/// Where one worker of a listener stands among the sockets that share its address: "worker 2
/// of 2". Derived once, from the listener's groups (one per `listen` address, `workers` sockets
/// each), and used by everything that numbers workers: the liveness probe's messages, and
/// through `WorkerSnapshot` the status page and `/metrics`. (A worker's row of upstream
/// counters and its queue label use its position in `Listener.workers`, the groups one after
/// the other.)
public struct WorkerPlace: Sendable, Equatable {
    /// 1-based among the sockets sharing its address.
    public let number: Int
    /// How many sockets share its address.
    public let of: Int

    public init(number: Int, of: Int) {
        self.number = number
        self.of = of
    }

    /// " (worker 2 of 2)" when several sockets share the address, "" when it has it alone.
    public var suffix: String { of > 1 ? " (worker \(number) of \(of))" : "" }

    /// The places of the workers of groups of these sizes laid end to end.
    public static func places(groupSizes: [Int]) -> [WorkerPlace] {
        groupSizes.flatMap { n in (0..<n).map { WorkerPlace(number: $0 + 1, of: n) } }
    }
}

extension Listener {
    /// Each worker's place, in the order of `workers`.
    public var workerPlaces: [WorkerPlace] { WorkerPlace.places(groupSizes: groups.map(\.count)) }
}
