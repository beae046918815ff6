// STUB (to be completed by the load-balancing work): per-loop endpoint choice.

/// One loop's state for choosing among a service's endpoints.
public struct Balancer: Sendable {
    public let policy: LoadBalancing
    private var next = 0
    private let weights: [UInt32]

    public init(policy: LoadBalancing, weights: [UInt32], seed: UInt64) {
        self.policy = policy
        self.weights = weights
    }

    /// An endpoint index among those `isAvailable` accepts, or nil if none is.
    public mutating func pick(clientHash: UInt64, isAvailable: (Int) -> Bool) -> Int? {
        for _ in 0..<weights.count {
            let i = next % weights.count
            next += 1
            if isAvailable(i) { return i }
        }
        return nil
    }

    public mutating func opened(_ endpoint: Int) {}
    public mutating func closed(_ endpoint: Int) {}
}

/// One loop's passive outlier detection over a service's endpoints.
public struct OutlierDetector: Sendable {
    public init(count: Int, policy: OutlierPolicy) {}
    /// Records a failed connect; true if this ejected the endpoint.
    public mutating func failed(_ endpoint: Int, now: Int64) -> Bool { false }
    public mutating func succeeded(_ endpoint: Int) {}
    public func isEjected(_ endpoint: Int, now: Int64) -> Bool { false }
}
