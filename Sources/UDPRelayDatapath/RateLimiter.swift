import UDPRelayConfig

/// A token bucket: `rate` tokens per second up to `burst`; each datagram takes one.
/// Time is passed in (monotonic nanoseconds) so tests drive it with a fake clock.
public struct TokenBucket: Sendable {
    public let rate: Double
    public let burst: Double
    private var tokens: Double
    private var last: UInt64

    /// A bucket holding `tokens` (default: full).
    public init(rate: Double, burst: Double, now: UInt64, tokens: Double? = nil) {
        self.rate = rate
        self.burst = burst
        self.tokens = min(burst, tokens ?? burst)
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

/// Per-source-address token buckets (see `KeyedRateLimiter`).
public typealias SourceRateLimiter = KeyedRateLimiter<IPAddress>

/// Token buckets per key (a source address; a source address and port for the loop breaker)
/// in a bounded table. Storage is allocated once at `capacity`; admitting a datagram allocates
/// nothing.
///
/// A table that is full is under pressure: the least recently seen key is forgotten (counted in
/// `evictions`) and the newcomer's bucket starts **empty**, its first datagram taking a token
/// from one `overflow` bucket (the same rate and burst) shared by every newcomer. Otherwise a
/// sender rotating through more addresses than the table holds would get a full burst with each
/// new address and never be limited: now all its addresses together get one
/// source's rate. A table that is not full gives a new key a full bucket, as before.
///
/// Not thread-safe: owned by one worker and used only on its queue.
public final class KeyedRateLimiter<Key: Hashable> {
    public let capacity: Int
    private let rate: Double
    private let burst: Double
    private var index: [Key: Int32]
    private var keys: [Key]
    private var buckets: [TokenBucket]
    /// Per key: the fingerprints its datagrams are compared with (`admit(_:fingerprint:always:now:)`).
    private var recent: [RecentFingerprints]
    private var newer: [Int32]
    private var older: [Int32]
    private var newest: Int32 = -1
    private var oldest: Int32 = -1
    /// Shared by keys that arrive while the table is full.
    private var overflow: TokenBucket
    /// Keys forgotten because the table was full.
    public private(set) var evictions: UInt64 = 0

    public init(rate: Rate, burst: Int, capacity: Int, now: UInt64 = 0) {
        precondition(capacity > 0)
        self.capacity = capacity
        self.rate = rate.perSecond
        self.burst = Double(burst)
        overflow = TokenBucket(rate: rate.perSecond, burst: Double(burst), now: now)
        index = [:]
        index.reserveCapacity(capacity)
        keys = []
        keys.reserveCapacity(capacity)
        buckets = []
        buckets.reserveCapacity(capacity)
        recent = []
        recent.reserveCapacity(capacity)
        newer = []
        newer.reserveCapacity(capacity)
        older = []
        older.reserveCapacity(capacity)
    }

    public var count: Int { keys.count }

    /// Whether a datagram from `key` at time `now` is within its rate.
    public func admit(_ key: Key, now: UInt64) -> Bool {
        let (slot, fresh) = find(key, now: now)
        return take(slot, fresh: fresh, now: now)
    }

    /// The loop breaker's admission: charges the datagram to `key`'s bucket only if `always` or
    /// if its `fingerprint` (of the payload, never 0) repeats one of `key`'s recent datagrams
    /// (`RecentFingerprints`), then records it. Uncharged datagrams are admitted. Returns whether
    /// the datagram is admitted and whether it was a repeat.
    public func admit(_ key: Key, fingerprint: UInt64, always: Bool, now: UInt64) -> (admitted: Bool, repeated: Bool) {
        let (slot, fresh) = find(key, now: now)
        let repeated = recent[Int(slot)].record(fingerprint)
        guard always || repeated else { return (true, false) }
        return (take(slot, fresh: fresh, now: now), repeated)
    }

    /// `key`'s slot, made (or taken from the least recently seen key when the table is full)
    /// if there is none; `fresh` when it was taken while the table was full.
    private func find(_ key: Key, now: UInt64) -> (slot: Int32, fresh: Bool) {
        if let slot = index[key] {
            touch(slot)
            return (slot, false)
        }
        if keys.count < capacity {
            let slot = Int32(keys.count)
            keys.append(key)
            buckets.append(TokenBucket(rate: rate, burst: burst, now: now))
            recent.append(RecentFingerprints())
            newer.append(-1)
            older.append(-1)
            index[key] = slot
            pushNewest(slot)
            return (slot, false)
        }
        // Full: forget the least recently seen key; the newcomer starts empty and is served
        // from the shared overflow bucket.
        let slot = oldest
        evictions &+= 1
        unlink(slot)
        index.removeValue(forKey: keys[Int(slot)])
        keys[Int(slot)] = key
        buckets[Int(slot)] = TokenBucket(rate: rate, burst: burst, now: now, tokens: 0)
        recent[Int(slot)] = RecentFingerprints()
        index[key] = slot
        pushNewest(slot)
        return (slot, true)
    }

    /// Takes a token for a datagram in `slot`: from the shared overflow bucket when the slot
    /// was just taken from another key while the table was full.
    @inline(__always)
    private func take(_ slot: Int32, fresh: Bool, now: UInt64) -> Bool {
        fresh ? overflow.take(now: now) : buckets[Int(slot)].take(now: now)
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

/// What a loop breaker flow remembers of its payloads: the last fingerprint, and an anchor (the
/// fingerprint of one datagram, taken afresh every `anchorInterval` datagrams). A datagram
/// repeats if it matches either: a ping-pong of one datagram matches the last; several
/// datagrams looping at once through the same flow (with different payloads, each returned
/// unchanged) cycle with a period of their number, and while that is at most `anchorInterval`
/// the anchor comes round again before it is replaced.
struct RecentFingerprints {
    static let anchorInterval: UInt16 = 64
    private var last: UInt64 = 0
    private var anchor: UInt64 = 0
    private var untilAnchor: UInt16 = 0

    /// Whether `fingerprint` (never 0) repeats the last one or the anchor; then records it.
    @inline(__always)
    mutating func record(_ fingerprint: UInt64) -> Bool {
        let repeated = fingerprint == last || fingerprint == anchor
        last = fingerprint
        if untilAnchor == 0 {
            anchor = fingerprint
            untilAnchor = Self.anchorInterval
        }
        untilAnchor -= 1
        return repeated
    }
}
