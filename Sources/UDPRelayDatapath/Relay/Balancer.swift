import UDPRelayConfig

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Picks the upstream of a new session. Pure: health comes in as a predicate and randomness from
/// a seedable generator, so tests control both. Called once per session, never per datagram,
/// and allocates nothing per pick.
///
/// It picks among slots (`UpstreamTable`): each address of a hostname is one, seeded with its
/// address, so `hash` moves only the clients of an address that comes or goes.
///
/// Upstream options: a draining upstream never takes a new session; a backup takes one only
/// when no primary (neither backup nor draining) is up; every algorithm that spreads honours
/// `weight`. With equal weights each algorithm makes exactly the choices it made before
/// weights existed.
struct Balancer {
    let algorithm: BalanceAlgorithm
    /// What a client's hash covers (`hash_key`): see `clientHash(_:)`.
    let hashKey: HashKey
    /// One per upstream, from its configured text (for a hostname's address, the address):
    /// rendezvous weights depend on the upstream's identity, not its position, so removing one
    /// leaves the others' weights unchanged.
    private(set) var seeds: [UInt64]
    /// The order `first` ranks upstreams in (file order), and round-robin walks.
    let order: [Int]
    /// The table generation the seeds were taken at (`UpstreamTable.pick`).
    private(set) var seedGeneration: UInt64 = .max
    /// `weight=N` per upstream (1 when not given).
    let weights: [Int]
    /// `backup` and `drain` per upstream.
    let backup: [Bool]
    let drain: [Bool]
    /// All weights equal: the unweighted algorithms run, choice for choice as before weights.
    let uniform: Bool
    private var nextIndex = 0
    /// Smooth weighted round robin (as nginx): each upstream's running score.
    private var current: [Int]
    /// State of a splitmix64 generator for `random`. (An `inout` generic generator crashed
    /// ThreadSanitizer builds when it was the empty SystemRandomNumberGenerator.)
    private var randomState: UInt64

    /// Which upstreams a choice may consider.
    private enum Tier { case primary, backup }

    /// Upstreams with options (`weight`, `drain`, `backup`) as configured.
    init(
        algorithm: BalanceAlgorithm, upstreams: [UpstreamEndpoint], hashKey: HashKey = Defaults.hashKey,
        order: [Int]? = nil, seed: UInt64 = UInt64.random(in: .min ... .max)
    ) {
        self.algorithm = algorithm
        self.hashKey = hashKey
        self.seeds = upstreams.map(Self.seed(of:))
        self.order = order ?? Array(upstreams.indices)
        self.weights = upstreams.map(\.weight)
        self.backup = upstreams.map(\.backup)
        self.drain = upstreams.map(\.drain)
        self.uniform = Set(weights).count <= 1
        self.current = Array(repeating: 0, count: upstreams.count)
        self.randomState = seed
    }

    /// Upstreams by their configured text only: equal weights, every one a primary.
    init(algorithm: BalanceAlgorithm, upstreams: [String], seed: UInt64 = UInt64.random(in: .min ... .max)) {
        self.algorithm = algorithm
        self.hashKey = Defaults.hashKey
        self.seeds = upstreams.map { Mix.fnv1a($0) }
        self.order = Array(upstreams.indices)
        self.weights = Array(repeating: 1, count: upstreams.count)
        self.backup = Array(repeating: false, count: upstreams.count)
        self.drain = Array(repeating: false, count: upstreams.count)
        self.uniform = true
        self.current = Array(repeating: 0, count: upstreams.count)
        self.randomState = seed
    }

    var count: Int { seeds.count }

    /// The rendezvous seed of an upstream as configured: of its text (as before hostnames
    /// had several addresses; a hostname's own slot keeps it until it resolves).
    static func seed(of upstream: UpstreamEndpoint) -> UInt64 { Mix.fnv1a(upstream.description) }

    /// The rendezvous seed of one address of a hostname: of the address, so the same address
    /// scores the same for a client whatever slot or name holds it, and as a literal would.
    static func seed(of address: SocketAddress) -> UInt64 { Mix.fnv1a(address.description) }

    /// Takes the seeds of a changed upstream set (`seed(i)` per slot); a slot whose seed
    /// changed holds another address now and starts its round-robin score afresh.
    mutating func reseed(generation: UInt64, seed: (Int) -> UInt64) {
        for i in seeds.indices {
            let s = seed(i)
            guard s != 0, s != seeds[i] else { continue }
            seeds[i] = s
            current[i] = 0
        }
        seedGeneration = generation
    }

    /// The `clientHash` that `pick` takes for `client`: of its address and port, or of its
    /// address only (`hash_key = address`). Process-independent, so every instance with the
    /// same upstream list picks the same upstream for a client.
    @inline(__always)
    func clientHash(_ client: ClientKey) -> UInt64 {
        client.stableHash(hashKey)
    }

    /// The upstream for a client whose key hashes to `clientHash`, skipping those `isUp` says
    /// are down: a primary that is up, else a backup that is up. When none is up it picks as if
    /// every primary were up (every backup, if all primaries drain) and reports `failOpen`.
    /// Draining upstreams are never picked. `isActive` says which may be picked at all, up or
    /// down (not a free slot, nor an address that left its hostname's answer).
    mutating func pick(clientHash: UInt64, isUp: (Int) -> Bool, isActive: (Int) -> Bool = { _ in true }) -> (index: Int, failOpen: Bool) {
        precondition(!seeds.isEmpty)
        if let i = choose(clientHash: clientHash, tier: .primary, isUp: isUp) { return (i, false) }
        if let i = choose(clientHash: clientHash, tier: .backup, isUp: isUp) { return (i, false) }
        let open =
            choose(clientHash: clientHash, tier: .primary, isUp: isActive)
            ?? choose(clientHash: clientHash, tier: .backup, isUp: isActive)
        return (open ?? 0, true)
    }

    /// splitmix64: fast, good enough to spread sessions, not for secrets.
    private mutating func nextRandom() -> UInt64 {
        randomState &+= 0x9E37_79B9_7F4A_7C15
        var z = randomState
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    private mutating func choose(clientHash: UInt64, tier: Tier, isUp: (Int) -> Bool) -> Int? {
        let n = seeds.count
        let wantBackup = tier == .backup
        func candidate(_ i: Int) -> Bool { backup[i] == wantBackup && !drain[i] && isUp(i) }
        switch algorithm {
        case .first:
            return order.first(where: candidate)
        case .roundRobin where uniform:
            for step in 0..<n {
                let k = (nextIndex + step) % n
                if candidate(order[k]) {
                    nextIndex = (k + 1) % n
                    return order[k]
                }
            }
            return nil
        case .roundRobin:
            // Smooth weighted round robin: every candidate gains its weight, the highest score
            // wins and pays the candidates' total, so over a cycle of sum(weights) picks each
            // upstream is chosen `weight` times, interleaved rather than in runs.
            var best: Int?
            var total = 0
            for i in 0..<n where candidate(i) {
                current[i] += weights[i]
                total += weights[i]
                if best == nil || current[i] > current[best!] { best = i }
            }
            if let best { current[best] -= total }
            return best
        case .random where uniform:
            var upCount = 0
            for i in 0..<n where candidate(i) { upCount += 1 }
            guard upCount > 0 else { return nil }
            var k = Int(nextRandom() % UInt64(upCount))
            for i in 0..<n where candidate(i) {
                if k == 0 { return i }
                k -= 1
            }
            return nil
        case .random:
            var total = 0
            for i in 0..<n where candidate(i) { total += weights[i] }
            guard total > 0 else { return nil }
            var k = Int(nextRandom() % UInt64(total))
            for i in 0..<n where candidate(i) {
                if k < weights[i] { return i }
                k -= weights[i]
            }
            return nil
        case .hash where uniform:
            var best: Int?
            var bestWeight: UInt64 = 0
            for i in 0..<n where candidate(i) {
                let w = Self.weight(clientHash: clientHash, seed: seeds[i])
                if best == nil || w > bestWeight {
                    best = i
                    bestWeight = w
                }
            }
            return best
        case .hash:
            // Weighted rendezvous hashing: the score weight / -ln(u), u uniform in (0, 1) from
            // the same per-(client, upstream) hash, wins with probability weight / sum. Each
            // score depends only on its own upstream, so removing one moves only its clients.
            var best: Int?
            var bestScore = 0.0
            for i in 0..<n where candidate(i) {
                let h = Self.weight(clientHash: clientHash, seed: seeds[i])
                let u = (Double(h >> 11) + 0.5) * 0x1p-53
                let score = Double(weights[i]) / -log(u)
                if best == nil || score > bestScore {
                    best = i
                    bestScore = score
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
