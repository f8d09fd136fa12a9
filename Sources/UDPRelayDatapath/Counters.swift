import Atomics

/// The counters every worker keeps. Names are the ones `/status` and `/metrics` show.
public enum Counter: Int, CaseIterable, Sendable {
    case receivedPackets
    case receivedBytes
    case sentPackets
    case sentBytes
    /// Datagrams larger than `max_datagram` (seen with MSG_TRUNC): dropped, never echoed cut short.
    case dropTooLarge
    /// The send buffer was full (EAGAIN/ENOBUFS): dropped rather than spin.
    case dropSendBufferFull
    /// ICMP port unreachable reported back (ECONNREFUSED).
    case dropRefused
    /// Any other per-datagram send failure (EHOSTUNREACH, ENETUNREACH, EMSGSIZE, EPERM, ...).
    case dropSendError
    /// Source port is a known reflector (`deny_source_ports`).
    case dropSourcePort
    /// Source is one of this daemon's own listener addresses (`loop_guard`).
    case dropLoop
    /// Denied by the listener's `allow`/`deny` rules.
    case dropDenied
    /// The source address is over `rate_limit`.
    case dropRateLimited
    /// The listener as a whole is over `rate_limit_total`.
    case dropRateLimitedTotal
    /// Receive calls that failed with an error other than "would block".
    case receiveErrors
    /// Sources forgotten by the per-source rate limiter because its table was full.
    case rateLimitEvictions

    /// The drop reason label for `drop…` counters, nil for the others.
    public var dropReason: String? {
        switch self {
        case .dropTooLarge: "too_large"
        case .dropSendBufferFull: "send_buffer_full"
        case .dropRefused: "refused"
        case .dropSendError: "send_error"
        case .dropSourcePort: "source_port"
        case .dropLoop: "loop"
        case .dropDenied: "denied"
        case .dropRateLimited: "rate_limited"
        case .dropRateLimitedTotal: "rate_limited_total"
        default: nil
        }
    }

    public static let dropCounters: [Counter] = allCases.filter { $0.dropReason != nil }
}

/// One worker's counters. Each has a single writer (the worker's queue), which adds with a
/// relaxed load and store (no locked instruction on the hot path); readers on other threads
/// take relaxed loads and sum workers on demand. 64-bit and monotonic.
public final class CounterSet: @unchecked Sendable {
    // @unchecked: the storage is only accessed through atomic operations.
    private let storage: UnsafeMutablePointer<UnsafeAtomic<UInt64>.Storage>

    public init() {
        storage = .allocate(capacity: Counter.allCases.count)
        storage.initialize(repeating: UnsafeAtomic<UInt64>.Storage(0), count: Counter.allCases.count)
    }

    deinit {
        storage.deinitialize(count: Counter.allCases.count)
        storage.deallocate()
    }

    /// Adds `n` to a counter. Call only from the owning worker's queue (single writer).
    @inline(__always)
    public func add(_ counter: Counter, _ n: UInt64 = 1) {
        let a = UnsafeAtomic<UInt64>(at: storage + counter.rawValue)
        a.store(a.load(ordering: .relaxed) &+ n, ordering: .relaxed)
    }

    public func value(_ counter: Counter) -> UInt64 {
        UnsafeAtomic<UInt64>(at: storage + counter.rawValue).load(ordering: .relaxed)
    }

    public func snapshot() -> CounterSnapshot {
        var s = CounterSnapshot()
        for c in Counter.allCases { s.values[c.rawValue] = value(c) }
        return s
    }
}

/// A plain copy of counter values, summable across workers.
public struct CounterSnapshot: Sendable, Equatable {
    public var values = [UInt64](repeating: 0, count: Counter.allCases.count)

    public init() {}

    public subscript(_ c: Counter) -> UInt64 {
        get { values[c.rawValue] }
        set { values[c.rawValue] = newValue }
    }

    public static func + (a: CounterSnapshot, b: CounterSnapshot) -> CounterSnapshot {
        var s = a
        for i in s.values.indices { s.values[i] &+= b.values[i] }
        return s
    }

    /// Sum of all drop counters.
    public var dropped: UInt64 { Counter.dropCounters.reduce(0) { $0 + self[$1] } }
}
