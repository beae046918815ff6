import Testing

@testable import LoomMesh

@Suite struct OutlierDetectorTests {
    static let policy = OutlierPolicy(
        consecutiveFailures: 3,
        baseEjectionMs: 5_000,
        maxEjectionMs: 30_000,
        maxEjectionPercent: 50
    )

    static func fail(_ detector: inout OutlierDetector, _ endpoint: Int, now: Int64) -> Bool {
        detector.failed(endpoint, now: now)
    }

    /// Fails `endpoint` until it is ejected (at most `limit` times); the failures it took.
    static func eject(_ detector: inout OutlierDetector, _ endpoint: Int, now: Int64, limit: Int = 10) -> Int? {
        for n in 1...limit where detector.failed(endpoint, now: now) { return n }
        return nil
    }

    @Test func consecutiveFailuresEjectForTheBaseTime() {
        var detector = OutlierDetector(count: 4, policy: Self.policy)
        #expect(!Self.fail(&detector, 1, now: 1_000))
        #expect(!Self.fail(&detector, 1, now: 1_100))
        #expect(!detector.isEjected(1, now: 1_100))
        #expect(Self.fail(&detector, 1, now: 1_200))
        #expect(detector.isEjected(1, now: 1_200))
        #expect(detector.isEjected(1, now: 6_199))
        #expect(detector.ejectionEnds(1, now: 6_199) == 6_200)
        #expect(!detector.isEjected(1, now: 6_200))
        #expect(detector.ejectionEnds(1, now: 6_200) == nil)
        #expect(!detector.isEjected(0, now: 1_200))
        #expect(detector.ejectedCount(now: 1_200) == 1)
        #expect(detector.ejectedCount(now: 6_200) == 0)
    }

    @Test func aSuccessResetsTheCount() {
        var detector = OutlierDetector(count: 4, policy: Self.policy)
        #expect(!Self.fail(&detector, 2, now: 0))
        #expect(!Self.fail(&detector, 2, now: 0))
        detector.succeeded(2)
        #expect(!Self.fail(&detector, 2, now: 0))
        #expect(!Self.fail(&detector, 2, now: 0))
        #expect(Self.fail(&detector, 2, now: 0))
    }

    @Test func failuresWhileEjectedAreIgnored() {
        var detector = OutlierDetector(count: 4, policy: Self.policy)
        #expect(Self.eject(&detector, 0, now: 0) == 3)
        for _ in 0..<10 { #expect(!Self.fail(&detector, 0, now: 100)) }
        #expect(detector.ejectionEnds(0, now: 100) == 5_000)
    }

    @Test func repeatedEjectionsDoubleUpToTheCapThenAreForgotten() {
        var detector = OutlierDetector(count: 4, policy: Self.policy)
        var now: Int64 = 0
        #expect(Self.eject(&detector, 0, now: now) == 3)
        var lengths: [Int64] = []
        for _ in 0..<5 {
            let end = detector.ejectionEnds(0, now: now)!
            lengths.append(end - now)
            now = end
            // On probation: one failure ejects it again.
            #expect(Self.eject(&detector, 0, now: now) == 1)
        }
        lengths.append(detector.ejectionEnds(0, now: now)! - now)
        #expect(lengths == [5_000, 10_000, 20_000, 30_000, 30_000, 30_000])

        // A success ends probation: the full count again.
        now = detector.ejectionEnds(0, now: now)!
        detector.succeeded(0)
        #expect(Self.eject(&detector, 0, now: now) == 3)
        #expect(detector.ejectionEnds(0, now: now)! - now == 30_000)

        // Back in service as long as the ejection that made a doubling lasted: that doubling
        // is forgotten, and so on down. 30 s back: 20 s and 10 s, two of the three.
        now = detector.ejectionEnds(0, now: now)! + 30_000
        detector.succeeded(0)
        #expect(Self.eject(&detector, 0, now: now) == 3)
        #expect(detector.ejectionEnds(0, now: now)! - now == 10_000)
        // That made two again; 10 s + 5 s back forgets both.
        now = detector.ejectionEnds(0, now: now)! + 15_000
        detector.succeeded(0)
        #expect(Self.eject(&detector, 0, now: now) == 3)
        #expect(detector.ejectionEnds(0, now: now)! - now == 5_000)
    }

    @Test func neverMoreThanThePercentNorAll() {
        var detector = OutlierDetector(count: 10, policy: Self.policy)
        #expect(detector.maxEjected == 5)
        for e in 0..<5 { #expect(Self.eject(&detector, e, now: 0) == 3) }
        #expect(Self.eject(&detector, 5, now: 0) == nil)
        #expect(detector.ejectedCount(now: 0) == 5)
        // Endpoint 5 stays at the threshold: once there is room, one more failure does it.
        #expect(Self.fail(&detector, 5, now: 5_000))
        #expect(detector.ejectedCount(now: 5_000) == 1)

        for percent in [100, 200] {
            var all = OutlierDetector(count: 3, policy: OutlierPolicy(maxEjectionPercent: percent))
            for e in 0..<3 { _ = Self.eject(&all, e, now: 0) }
            #expect(all.ejectedCount(now: 0) == 2)
            #expect(!all.isEjected(2, now: 0))
        }
        var single = OutlierDetector(count: 1, policy: OutlierPolicy(maxEjectionPercent: 100))
        #expect(Self.eject(&single, 0, now: 0) == nil)
        #expect(!single.isEjected(0, now: 0))
        var small = OutlierDetector(count: 3, policy: OutlierPolicy(maxEjectionPercent: 10))
        #expect(Self.eject(&small, 0, now: 0) == nil)  // 10 % of 3 rounds down to none
    }

    @Test func disabledAndOutOfRange() {
        var off = OutlierDetector(count: 3, policy: OutlierPolicy(consecutiveFailures: 0))
        #expect(Self.eject(&off, 0, now: 0) == nil)
        var detector = OutlierDetector(count: 3, policy: Self.policy)
        #expect(!Self.fail(&detector, 3, now: 0) && !Self.fail(&detector, -1, now: 0))
        detector.succeeded(7)
        #expect(!detector.isEjected(9, now: 0))
        var empty = OutlierDetector(count: 0, policy: Self.policy)
        #expect(!Self.fail(&empty, 0, now: 0) && empty.ejectedCount(now: 0) == 0)
    }

    @Test func withABalancerEjectedEndpointsGetNoPicks() {
        var detector = OutlierDetector(count: 4, policy: Self.policy)
        var balancer = Balancer(policy: .roundRobin, weights: [1, 1, 1, 1], seed: 1)
        _ = Self.eject(&detector, 2, now: 0)
        let during = balancer.sequence(8) { !detector.isEjected($0, now: 1_000) }
        #expect(during == [0, 1, 3, 0, 1, 3, 0, 1])
        let after = balancer.sequence(4) { !detector.isEjected($0, now: 5_000) }
        #expect(after == [2, 3, 0, 1])
    }
}
