import UDPRelayConfig

/// Picks the upstream of a new session. Pure: health comes in as a predicate and randomness from
/// a seedable generator, so tests control both. Called once per session, never per datagram.
struct Balancer {
    let algorithm: BalanceAlgorithm
    /// One per upstream, from its configured text: rendezvous weights depend on the upstream's
    /// identity, not its position, so removing one leaves the others' weights unchanged.
    let seeds: [UInt64]
    private var nextIndex = 0
    /// State of a splitmix64 generator for `random`. (An `inout` generic generator crashed
    /// ThreadSanitizer builds when it was the empty SystemRandomNumberGenerator.)
    private var randomState: UInt64

    init(algorithm: BalanceAlgorithm, upstreams: [String], seed: UInt64 = UInt64.random(in: .min ... .max)) {
        self.algorithm = algorithm
        self.seeds = upstreams.map { Mix.fnv1a($0) }
        self.randomState = seed
    }

    var count: Int { seeds.count }

    /// The upstream for a client whose key hashes to `clientHash`, skipping those `isUp` says
    /// are down. When all are down it picks as if all were up and reports `failOpen`.
    mutating func pick(clientHash: UInt64, isUp: (Int) -> Bool) -> (index: Int, failOpen: Bool) {
        precondition(!seeds.isEmpty)
        if let i = choose(clientHash: clientHash, isUp: isUp) { return (i, false) }
        return (choose(clientHash: clientHash, isUp: { _ in true }) ?? 0, true)
    }

    /// splitmix64: fast, good enough to spread sessions, not for secrets.
    private mutating func nextRandom() -> UInt64 {
        randomState &+= 0x9E37_79B9_7F4A_7C15
        var z = randomState
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    private mutating func choose(clientHash: UInt64, isUp: (Int) -> Bool) -> Int? {
        let n = seeds.count
        switch algorithm {
        case .first:
            return (0..<n).first(where: isUp)
        case .roundRobin:
            for step in 0..<n {
                let i = (nextIndex + step) % n
                if isUp(i) {
                    nextIndex = (i + 1) % n
                    return i
                }
            }
            return nil
        case .random:
            var upCount = 0
            for i in 0..<n where isUp(i) { upCount += 1 }
            guard upCount > 0 else { return nil }
            var k = Int(nextRandom() % UInt64(upCount))
            for i in 0..<n where isUp(i) {
                if k == 0 { return i }
                k -= 1
            }
            return nil
        case .hash:
            var best: Int?
            var bestWeight: UInt64 = 0
            for i in 0..<n where isUp(i) {
                let w = Self.weight(clientHash: clientHash, seed: seeds[i])
                if best == nil || w > bestWeight {
                    best = i
                    bestWeight = w
                }
            }
            return best
        }
    }

    /// Rendezvous weight of one upstream for one client.
    @inline(__always)
    static func weight(clientHash: UInt64, seed: UInt64) -> UInt64 {
        Mix.hash(clientHash ^ Mix.hash(seed))
    }
}
