import UDPRelayConfig

/// A token bucket: `rate` tokens per second up to `burst`; each datagram takes one.
/// Time is passed in (monotonic nanoseconds) so tests drive it with a fake clock.
public struct TokenBucket: Sendable {
    public let rate: Double
    public let burst: Double
    private var tokens: Double
    private var last: UInt64

    public init(rate: Double, burst: Double, now: UInt64) {
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.last = now
    }

    /// Takes one token if there is one.
    @inline(__always)
    public mutating func take(now: UInt64) -> Bool {
        if now > last {
            tokens = min(burst, tokens + Double(now - last) * 1e-9 * rate)
            last = now
        }
        if tokens >= 1 {
            tokens -= 1
            return true
        }
        return false
    }
}

/// Per-source-address token buckets in a bounded table: when full, the least recently seen
/// source is forgotten (counted in `evictions`). Storage is allocated once at `capacity`;
/// admitting a datagram allocates nothing.
///
/// Not thread-safe: owned by one worker and used only on its queue.
public final class SourceRateLimiter {
    public let capacity: Int
    private let rate: Double
    private let burst: Double
    private var index: [IPAddress: Int32]
    private var keys: [IPAddress]
    private var buckets: [TokenBucket]
    private var newer: [Int32]
    private var older: [Int32]
    private var newest: Int32 = -1
    private var oldest: Int32 = -1
    /// Sources forgotten because the table was full.
    public private(set) var evictions: UInt64 = 0

    public init(rate: Rate, burst: Int, capacity: Int) {
        precondition(capacity > 0)
        self.capacity = capacity
        self.rate = rate.perSecond
        self.burst = Double(burst)
        index = [:]
        index.reserveCapacity(capacity)
        keys = []
        keys.reserveCapacity(capacity)
        buckets = []
        buckets.reserveCapacity(capacity)
        newer = []
        newer.reserveCapacity(capacity)
        older = []
        older.reserveCapacity(capacity)
    }

    public var count: Int { keys.count }

    /// Whether a datagram from `source` at time `now` is within its rate.
    public func admit(_ source: IPAddress, now: UInt64) -> Bool {
        if let slot = index[source] {
            touch(slot)
            return buckets[Int(slot)].take(now: now)
        }
        let slot: Int32
        if keys.count < capacity {
            slot = Int32(keys.count)
            keys.append(source)
            buckets.append(TokenBucket(rate: rate, burst: burst, now: now))
            newer.append(-1)
            older.append(-1)
        } else {
            slot = oldest
            evictions &+= 1
            unlink(slot)
            index.removeValue(forKey: keys[Int(slot)])
            keys[Int(slot)] = source
            buckets[Int(slot)] = TokenBucket(rate: rate, burst: burst, now: now)
        }
        index[source] = slot
        pushNewest(slot)
        return buckets[Int(slot)].take(now: now)
    }

    private func touch(_ slot: Int32) {
        guard slot != newest else { return }
        unlink(slot)
        pushNewest(slot)
    }

    private func unlink(_ slot: Int32) {
        let s = Int(slot)
        let n = newer[s], o = older[s]
        if n >= 0 { older[Int(n)] = o } else { newest = o }
        if o >= 0 { newer[Int(o)] = n } else { oldest = n }
        newer[s] = -1
        older[s] = -1
    }

    private func pushNewest(_ slot: Int32) {
        let s = Int(slot)
        older[s] = newest
        newer[s] = -1
        if newest >= 0 { newer[Int(newest)] = slot }
        newest = slot
        if oldest < 0 { oldest = slot }
    }
}
