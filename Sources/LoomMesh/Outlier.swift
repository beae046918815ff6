// Passive outlier detection, one per loop per service: consecutive connect failures eject
// an endpoint for a while. Pure: time comes in as `now` (milliseconds, any monotonic
// origin); nothing allocates after init; every call is O(1) except an ejection, which
// counts the ejected endpoints (O(n)), and `ejectedCount`.
//
// Semantics (OutlierPolicy):
// - `consecutiveFailures` failures with no success between eject an endpoint (0 or less:
//   never). Failures reported while it is ejected (connects begun before) are ignored.
// - The n-th ejection not yet forgotten lasts `baseEjectionMs * 2^(n-1)`, capped at
//   `maxEjectionMs`.
// - Forgetting: once back, an endpoint that stays un-ejected as long as the ejection that
//   made its last doubling lasted loses that doubling, and so on down (after ejections of
//   5, 10 and 20 s, 20 s back make the next one 20 s again, 20 + 10 + 5 s back forget them
//   all). Counted lazily at the next ejection. Ejections at the cap add no doubling.
// - Probation: after an ejection ends the endpoint takes connections again, but until its
//   first success one failure ejects it again (for twice as long); a success makes it
//   need the full `consecutiveFailures` again. A dead endpoint costs one failed connect
//   per ejection, not `consecutiveFailures`.
// - At most `maxEjectionPercent` of the endpoints (rounded down) are ejected at once, and
//   never all: one endpoint of one, or 100 % of three, leaves at least one. An endpoint
//   that reaches the threshold while the cap is full stays at the threshold, so its next
//   failure ejects it if room has been made.

/// One loop's passive outlier detection over a service's endpoints.
public struct OutlierDetector: Sendable {
    public let policy: OutlierPolicy
    public let count: Int
    /// Most endpoints ejected at once.
    public let maxEjected: Int
    private var failures: [Int]
    /// When the last ejection ends or ended (`Int64.min`: never ejected).
    private var ejectedUntil: [Int64]
    /// Ejections not yet forgotten: the next lasts base * 2^this.
    private var level: [UInt8]

    public init(count: Int, policy: OutlierPolicy) {
        let count = max(count, 0)
        self.policy = policy
        self.count = count
        let percent = min(max(policy.maxEjectionPercent, 0), 100)
        maxEjected = max(0, min(count - 1, count * percent / 100))
        failures = [Int](repeating: 0, count: count)
        ejectedUntil = [Int64](repeating: .min, count: count)
        level = [UInt8](repeating: 0, count: count)
    }

    /// Records a failed connect; true if this ejected the endpoint.
    public mutating func failed(_ endpoint: Int, now: Int64) -> Bool {
        let threshold = policy.consecutiveFailures
        guard endpoint >= 0 && endpoint < count && threshold > 0 && !isEjected(endpoint, now: now) else {
            return false
        }
        failures[endpoint] = min(failures[endpoint] + 1, threshold)
        guard failures[endpoint] >= threshold, ejectedCount(now: now) < maxEjected else { return false }
        var level = Int(self.level[endpoint])
        if ejectedUntil[endpoint] != .min {
            var back = now &- ejectedUntil[endpoint]
            while level > 0 && back >= duration(level - 1) {
                back -= duration(level - 1)
                level -= 1
            }
        }
        let length = duration(level)
        ejectedUntil[endpoint] = now.addingReportingOverflow(length).overflow ? .max : now + length
        // No more levels once the cap is reached: they would only slow the forgetting.
        self.level[endpoint] = UInt8(length < policy.maxEjectionMs ? level + 1 : level)
        failures[endpoint] = threshold - 1  // probation
        return true
    }

    /// Records a successful connect: the consecutive failures start again from zero.
    public mutating func succeeded(_ endpoint: Int) {
        guard endpoint >= 0 && endpoint < count else { return }
        failures[endpoint] = 0
    }

    public func isEjected(_ endpoint: Int, now: Int64) -> Bool {
        endpoint >= 0 && endpoint < count && now < ejectedUntil[endpoint]
    }

    /// When the endpoint's ejection ends, if it is ejected at `now`.
    public func ejectionEnds(_ endpoint: Int, now: Int64) -> Int64? {
        isEjected(endpoint, now: now) ? ejectedUntil[endpoint] : nil
    }

    /// Endpoints ejected at `now` (for status; O(n)).
    public func ejectedCount(now: Int64) -> Int {
        var ejected = 0
        for until in ejectedUntil where now < until { ejected += 1 }
        return ejected
    }

    /// The ejection length after `level` remembered ejections.
    private func duration(_ level: Int) -> Int64 {
        let base = max(policy.baseEjectionMs, 0)
        let cap = max(policy.maxEjectionMs, 0)
        guard level < 62, base <= cap >> Int64(level) else { return cap }
        return base << Int64(level)
    }
}
