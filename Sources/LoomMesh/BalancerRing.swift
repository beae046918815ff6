// The consistent hash ring behind `ringHash` (Karger et al.; as Envoy's ring_hash): each
// endpoint owns points on a 64-bit circle, a client hash goes to the first point at or
// after it. An unavailable endpoint's clients fall through to the next point of another
// endpoint, so only its share moves, and they come back when it does.

struct BalancerRing: Sendable {
    /// Points per unit of weight (weights divided by their gcd)...
    static let pointsPerWeight = 100
    /// ...capped at this many in all (12 bytes each); past it, points are given in
    /// proportion to weight, at least one each.
    static let maxPoints = 8_192

    private var points: [UInt64] = []
    private var owners: [Int32] = []

    init() {}

    /// Endpoint `e` is placed by `keys[e]` (by its index when `keys` is not one per
    /// endpoint); the ring depends on nothing else, so every loop (whatever its seed) and
    /// every node sends a client to the same endpoint.
    init(weights: [UInt32], keys: [UInt64]) {
        let keys =
            keys.count == weights.count
            ? keys : (0..<weights.count).map { BalancerRandom.mix(UInt64($0) ^ 0x7269_6E67_6B65_79) }
        var divisor: UInt64 = 0
        for w in weights where w > 0 { divisor = Self.gcd(divisor, UInt64(w)) }
        guard divisor > 0 else { return }
        let units = weights.map { UInt64($0) / divisor }
        let total = units.reduce(0, +)
        let counts: [Int]
        if total <= UInt64(Self.maxPoints / Self.pointsPerWeight) {
            counts = units.map { Int($0) * Self.pointsPerWeight }
        } else {
            counts = units.map { $0 == 0 ? 0 : max(1, Int($0 * UInt64(Self.maxPoints) / total)) }
        }
        var ring: [(point: UInt64, owner: Int32)] = []
        ring.reserveCapacity(counts.reduce(0, +))
        for (e, count) in counts.enumerated() {
            for replica in 0..<count {
                ring.append(
                    (BalancerRandom.mix(keys[e] ^ BalancerRandom.mix(UInt64(replica) &+ 0x7269_6E67)), Int32(e))
                )
            }
        }
        ring.sort { ($0.point, $0.owner) < ($1.point, $1.owner) }
        points = ring.map(\.point)
        owners = ring.map(\.owner)
    }

    var isEmpty: Bool { points.isEmpty }

    /// The owner of the first point at or after `hash` (wrapping) that `isAvailable`
    /// accepts: O(log points) plus the points of unavailable endpoints walked past.
    func lookup(_ hash: UInt64, _ isAvailable: (Int) -> Bool) -> Int? {
        var low = 0
        var high = points.count
        while low < high {
            let mid = (low + high) / 2
            if points[mid] < hash { low = mid + 1 } else { high = mid }
        }
        var refused = -1
        for step in 0..<points.count {
            var slot = low + step
            if slot >= points.count { slot -= points.count }
            let owner = Int(owners[slot])
            if owner == refused { continue }
            if isAvailable(owner) { return owner }
            refused = owner
        }
        return nil
    }

    static func gcd(_ a: UInt64, _ b: UInt64) -> UInt64 {
        var (a, b) = (a, b)
        while b != 0 { (a, b) = (b, a % b) }
        return a
    }
}
