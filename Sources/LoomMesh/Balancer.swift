// Per-loop endpoint choice. Each relay loop owns its own Balancer per service (no locks);
// a pick costs O(1) or O(log n) and allocates nothing once the Balancer is built (the hash
// ring is built at the first ringHash pick). Pure: randomness comes from the seed, and no
// clock is read. Helpers: BalancerHeap.swift (round robin with weights, least connections),
// BalancerRing.swift (ring hash), BalancerHash.swift (client hash, random numbers);
// outlier detection is in Outlier.swift.

/// One loop's state for choosing among a service's endpoints (or a route's weighted
/// destinations).
///
/// Weights: an endpoint of weight 0 is never picked, unless every weight is 0, when all
/// count as 1. `isAvailable` excludes endpoints for one pick (ejected, or already tried by
/// this connection); with none left, `pick` returns nil.
///
/// - `roundRobin`: smooth weighted round robin. Equal weights: 0, 1, 2, ... (a cursor,
///   O(1)). Otherwise deadline scheduling (BalancerHeap, O(log n)) with nginx's guarantees:
///   over every cycle of sum(weights) / gcd picks each endpoint gets exactly weight / gcd,
///   spread through the cycle (90/10 gives 9 + 1 in every 10, 90 + 10 in every 100). The
///   order within a cycle can differ from nginx's O(n) scan. An unavailable endpoint's turn
///   passes to the next in line (round robin: the next endpoint).
/// - `leastConnections`: the fewest active (opened - closed) relative to weight
///   (active / weight, exact), ties to the least recently picked, so equals take turns.
/// - `powerOfTwo`: two distinct endpoints drawn at random in proportion to weight (up to
///   8 draws each to find available ones), the one with fewer active relative to weight,
///   the first drawn on a tie. If 8 draws find nothing available, a scan does.
/// - `ringHash`: a consistent hash ring on `clientHash` (BalancerRing), independent of the
///   seed, so all loops agree.
public struct Balancer: Sendable {
    public let policy: LoadBalancing
    /// Endpoints (indexes 0..<count).
    public let count: Int
    private let weights: [UInt32]
    private var active: [Int]
    private var random: BalancerRandom
    // .roundRobin with equal weights
    private let plain: Bool
    private var cursor = 0
    // .roundRobin with unequal weights, .leastConnections
    private var heap = BalancerHeap()
    // .powerOfTwo: running sums of the weights
    private var cumulative: [UInt64] = []
    // .ringHash: built at the first pick
    private var ring = BalancerRing()
    private let ringKeys: [UInt64]
    private let weighted: Int  // endpoints with a positive weight

    public init(policy: LoadBalancing, weights: [UInt32], seed: UInt64) {
        self.init(policy: policy, weights: weights, seed: seed, endpointKeys: [])
    }

    /// `endpointKeys` (one per endpoint, e.g. `Balancer.endpointKey(address)`) place
    /// endpoints on the hash ring so that they keep their clients when the endpoint list
    /// changes around them; without them (empty) an endpoint is placed by its index.
    public init(policy: LoadBalancing, weights: [UInt32], seed: UInt64, endpointKeys: [UInt64]) {
        self.policy = policy
        count = weights.count
        let weights = weights.allSatisfy { $0 == 0 } ? weights.map { _ in 1 } : weights
        self.weights = weights
        weighted = weights.lazy.filter { $0 > 0 }.count
        active = [Int](repeating: 0, count: weights.count)
        random = BalancerRandom(seed: seed)
        plain = policy == .roundRobin && weights.allSatisfy { $0 == weights.first }
        ringKeys = endpointKeys
        switch policy {
        case .roundRobin where !plain:
            heap = BalancerHeap(mode: .deadline, weights: weights)
        case .leastConnections:
            heap = BalancerHeap(mode: .leastLoaded, weights: weights)
        case .powerOfTwo:
            var sum: UInt64 = 0
            cumulative = weights.map {
                sum += UInt64($0)
                return sum
            }
        default:
            break
        }
    }

    /// An endpoint index among those `isAvailable` accepts, or nil if none is.
    public mutating func pick(clientHash: UInt64, isAvailable: (Int) -> Bool) -> Int? {
        guard count > 0 else { return nil }
        switch policy {
        case .roundRobin where plain:
            for _ in 0..<count {
                let e = cursor
                cursor = cursor + 1 == count ? 0 : cursor + 1
                if isAvailable(e) { return e }
            }
            return nil
        case .roundRobin, .leastConnections:
            return heap.pick(isAvailable)
        case .powerOfTwo:
            return pickPowerOfTwo(isAvailable)
        case .ringHash:
            if ring.isEmpty { ring = BalancerRing(weights: weights, keys: ringKeys) }
            return ring.lookup(BalancerRandom.mix(clientHash ^ 0x636C_6965_6E74), isAvailable)
        }
    }

    /// A connection to `endpoint` started (counts for leastConnections and powerOfTwo).
    public mutating func opened(_ endpoint: Int) {
        guard endpoint >= 0 && endpoint < count else { return }
        active[endpoint] += 1
        if policy == .leastConnections { heap.setNumerator(endpoint, UInt64(active[endpoint])) }
    }

    /// A connection to `endpoint` ended (one per `opened`; extra ones are ignored).
    public mutating func closed(_ endpoint: Int) {
        guard endpoint >= 0 && endpoint < count && active[endpoint] > 0 else { return }
        active[endpoint] -= 1
        if policy == .leastConnections { heap.setNumerator(endpoint, UInt64(active[endpoint])) }
    }

    /// Connections opened and not yet closed on `endpoint`.
    public func activeConnections(_ endpoint: Int) -> Int {
        endpoint >= 0 && endpoint < count ? active[endpoint] : 0
    }

    private mutating func pickPowerOfTwo(_ isAvailable: (Int) -> Bool) -> Int? {
        guard let first = draw(isAvailable, excluding: -1) else {
            // Unlucky or (nearly) nothing available: look at every endpoint once.
            let start = Int(random.next(below: UInt64(count)))
            for step in 0..<count {
                let e = (start + step) % count
                if weights[e] > 0 && isAvailable(e) { return e }
            }
            return nil
        }
        guard weighted > 1, let second = draw(isAvailable, excluding: first) else { return first }
        let a = UInt64(active[first]).multipliedFullWidth(by: UInt64(weights[second]))
        let b = UInt64(active[second]).multipliedFullWidth(by: UInt64(weights[first]))
        return b < a ? second : first
    }

    /// An available endpoint other than `excluded`, drawn in proportion to weight.
    private mutating func draw(_ isAvailable: (Int) -> Bool, excluding excluded: Int) -> Int? {
        let total = cumulative[count - 1]
        for _ in 0..<8 {
            let r = random.next(below: total)
            // The first endpoint whose running sum exceeds r.
            var low = 0
            var high = count - 1
            while low < high {
                let mid = (low + high) / 2
                if cumulative[mid] > r { high = mid } else { low = mid + 1 }
            }
            if low != excluded && isAvailable(low) { return low }
        }
        return nil
    }
}
