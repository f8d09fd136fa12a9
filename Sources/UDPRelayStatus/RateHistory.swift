import NIOConcurrencyHelpers

/// Per-second rates of one listener, over the last few seconds.
public struct ListenerRates: Sendable, Equatable {
    public var receivedPackets: Double
    public var receivedBytes: Double
    public var sentPackets: Double
    public var sentBytes: Double
    public var drops: Double
    /// The span the rates were measured over, in seconds.
    public var window: Double
}

/// A small ring of recent counter samples (one a second, from the status server's timer) so the
/// page can show packets/s and bytes/s over the last seconds without any cost on the datapath.
/// Pure logic: the caller passes the time, so tests need no clock.
public final class RateHistory: Sendable {
    struct Sample {
        /// Monotonic seconds.
        var at: Double
        var listeners: [String: (Traffic, Traffic, UInt64)]
    }

    /// How far back rates look.
    public let window: Double
    private let capacity: Int
    private let samples: NIOLockedValueBox<[Sample]>

    /// Keeps enough samples for `window` seconds at one sample a second.
    public init(window: Double = 10) {
        self.window = window
        self.capacity = Int(window) + 2
        self.samples = NIOLockedValueBox([])
    }

    /// Records the counters of `listeners` at monotonic time `at` (seconds).
    public func record(_ listeners: [ListenerStatus], at: Double) {
        var map: [String: (Traffic, Traffic, UInt64)] = [:]
        for l in listeners { map[l.name] = (l.received, l.sent, l.dropped) }
        samples.withLockedValue {
            $0.append(Sample(at: at, listeners: map))
            if $0.count > capacity { $0.removeFirst($0.count - capacity) }
        }
    }

    /// Rates of `listener` between the oldest sample within the window and `current` at `now`;
    /// nil until a sample at least half a second old exists.
    public func rates(of listener: ListenerStatus, now: Double) -> ListenerRates? {
        let base: (Double, (Traffic, Traffic, UInt64))? = samples.withLockedValue { s in
            for sample in s where now - sample.at <= window + 0.5 && now - sample.at >= 0.5 {
                if let v = sample.listeners[listener.name] { return (sample.at, v) }
            }
            return nil
        }
        guard let (at, (received, sent, dropped)) = base else { return nil }
        let dt = now - at
        func rate(_ now: UInt64, _ then: UInt64) -> Double { now >= then ? Double(now - then) / dt : 0 }
        return ListenerRates(
            receivedPackets: rate(listener.received.packets, received.packets),
            receivedBytes: rate(listener.received.bytes, received.bytes),
            sentPackets: rate(listener.sent.packets, sent.packets),
            sentBytes: rate(listener.sent.bytes, sent.bytes),
            drops: rate(listener.dropped, dropped),
            window: dt
        )
    }

    public var count: Int { samples.withLockedValue { $0.count } }
}
