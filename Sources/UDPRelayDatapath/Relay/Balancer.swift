import UDPRelayConfig

/// Picks the upstream of a new session. Pure: health comes in as a predicate and randomness as
/// a generator, so tests control both. Called once per session, never per datagram.
struct Balancer {
    let algorithm: BalanceAlgorithm
    /// One per upstream, from its configured text: rendezvous weights depend on the upstream's
    /// identity, not its position, so removing one leaves the others' weights unchanged.
    let seeds: [UInt64]
    private var nextIndex = 0

    init(algorithm: BalanceAlgorithm, upstreams: [String]) {
        self.algorithm = algorithm
        self.seeds = upstreams.map { Mix.fnv1a($0) }
    }

    var count: Int { seeds.count }

    /// The upstream for a client whose key hashes to `clientHash`, skipping those `isUp` says
    /// are down. When all are down it picks as if all were up and reports `failOpen`.
    mutating func pick<G: RandomNumberGenerator>(clientHash: UInt64, isUp: (Int) -> Bool, random: inout G) -> (index: Int, failOpen: Bool) {
        precondition(!seeds.isEmpty)
        if let i = choose(clientHash: clientHash, isUp: isUp, random: &random) { return (i, false) }
        return (choose(clientHash: clientHash, isUp: { _ in true }, random: &random) ?? 0, true)
    }

    private mutating func choose<G: RandomNumberGenerator>(clientHash: UInt64, isUp: (Int) -> Bool, random: inout G) -> Int? {
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
            var k = Int.random(in: 0..<upCount, using: &random)
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
