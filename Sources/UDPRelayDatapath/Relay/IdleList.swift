/// Sessions in least-recently-used order with their last activity time: a doubly linked list
/// over slot numbers held in flat arrays. Touching, inserting and removing are O(1); the
/// oldest session is the tail, so idle expiry pops from the tail until it finds one still
/// fresh (O(1) amortised per datagram) and `max_sessions` evicts the tail.
///
/// Pure and clock-free: callers pass `now` (nanoseconds), so tests drive it with a fake clock.
struct IdleList {
    private var prev: [Int32] = []
    private var next: [Int32] = []
    private var stamps: [UInt64] = []
    private var linked: [Bool] = []
    /// Most recently used.
    private(set) var head: Int32 = -1
    /// Least recently used.
    private(set) var tail: Int32 = -1
    private(set) var count = 0

    init() {}

    /// Adds `slot` as the most recent. Slots are small non-negative integers.
    mutating func insert(_ slot: Int32, now: UInt64) {
        let i = Int(slot)
        if i >= prev.count {
            let grow = i + 1 - prev.count
            prev.append(contentsOf: repeatElement(-1, count: grow))
            next.append(contentsOf: repeatElement(-1, count: grow))
            stamps.append(contentsOf: repeatElement(0, count: grow))
            linked.append(contentsOf: repeatElement(false, count: grow))
        }
        precondition(!linked[i], "slot \(slot) inserted twice")
        linked[i] = true
        stamps[i] = now
        pushFront(slot)
        count += 1
    }

    /// Marks `slot` as used now: it becomes the most recent.
    @inline(__always)
    mutating func touch(_ slot: Int32, now: UInt64) {
        let i = Int(slot)
        stamps[i] = now
        if head == slot { return }
        unlink(slot)
        pushFront(slot)
    }

    mutating func remove(_ slot: Int32) {
        let i = Int(slot)
        guard i < linked.count, linked[i] else { return }
        unlink(slot)
        linked[i] = false
        count -= 1
    }

    func lastUsed(_ slot: Int32) -> UInt64 { stamps[Int(slot)] }

    func contains(_ slot: Int32) -> Bool { Int(slot) < linked.count && linked[Int(slot)] }

    /// The least recently used slot if it has been idle for at least `timeout` at `now`.
    func expired(now: UInt64, timeout: UInt64) -> Int32? {
        guard tail >= 0 else { return nil }
        let stamp = stamps[Int(tail)]
        return now >= stamp && now - stamp >= timeout ? tail : nil
    }

    /// At most `limit` slots from the most recent, each with its last use: a bounded walk
    /// (for `/sessions`, which must not hold the worker's queue for a whole large table).
    func mostRecent(_ limit: Int) -> [(slot: Int32, lastUsed: UInt64)] {
        var out: [(slot: Int32, lastUsed: UInt64)] = []
        out.reserveCapacity(min(limit, count))
        var s = head
        while s >= 0, out.count < limit {
            out.append((s, stamps[Int(s)]))
            s = next[Int(s)]
        }
        return out
    }

    /// Slots from most to least recent (for tests and shutdown).
    var slots: [Int32] {
        var out: [Int32] = []
        var s = head
        while s >= 0 {
            out.append(s)
            s = next[Int(s)]
        }
        return out
    }

    @inline(__always)
    private mutating func unlink(_ slot: Int32) {
        let i = Int(slot)
        let p = prev[i], n = next[i]
        if p >= 0 { next[Int(p)] = n } else { head = n }
        if n >= 0 { prev[Int(n)] = p } else { tail = p }
        prev[i] = -1
        next[i] = -1
    }

    @inline(__always)
    private mutating func pushFront(_ slot: Int32) {
        let i = Int(slot)
        prev[i] = -1
        next[i] = head
        if head >= 0 { prev[Int(head)] = slot }
        head = slot
        if tail < 0 { tail = slot }
    }
}
