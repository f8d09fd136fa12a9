/// Tunables of the batched datapath.
public struct DatapathTuning: Sendable {
    /// Datagrams per `recvmmsg`/`sendmmsg`.
    public var batchSize = 64
    /// `recvmmsg` calls on the listener in a row before the worker's other sockets get their turn.
    public var maxBatchesPerWakeup = 16
    /// A worker's turn on its thread (see `WaitSet`) ends when nothing arrived for this long
    /// (nanoseconds)...
    public var idleHold: UInt64 = 5_000_000
    /// ...or after this long in all, so that work on the worker's queue that does not ring the
    /// wait set's doorbell (the refusal log's flush) waits at most about this long.
    public var turnLimit: UInt64 = 250_000_000
    /// How long a closed relay session keeps its socket (nanoseconds), so that a reply still on
    /// its way is dropped and counted instead of reaching a newer session that the kernel gave
    /// the same ephemeral port. See `RelayWorker`.
    public var closedSessionHold: UInt64 = 2_000_000_000
    /// Refused datagrams are logged once per reason and worker, then at most once per this long
    /// (nanoseconds) with the number refused in between. See `SocketWorker.noteDrop`.
    public var refusalLogInterval: UInt64 = 60_000_000_000

    public init() {}
}
