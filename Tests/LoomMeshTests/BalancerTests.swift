import LoomSystem
import Testing

@testable import LoomMesh

extension Balancer {
    /// `count` picks with everything available; how many each endpoint got.
    mutating func tally(_ picks: Int, clientHash: UInt64 = 0) -> [Int] {
        var counts = [Int](repeating: 0, count: count)
        for _ in 0..<picks { counts[pick(clientHash: clientHash) { _ in true }!] += 1 }
        return counts
    }

    mutating func sequence(_ picks: Int, isAvailable: (Int) -> Bool = { _ in true }) -> [Int?] {
        (0..<picks).map { _ in pick(clientHash: 0, isAvailable: isAvailable) }
    }
}

@Suite struct RoundRobinTests {
    @Test func equalWeightsTakeTurns() {
        var balancer = Balancer(policy: .roundRobin, weights: [1, 1, 1], seed: 1)
        #expect(balancer.sequence(7) == [0, 1, 2, 0, 1, 2, 0])
        var even = Balancer(policy: .roundRobin, weights: [5, 5, 5], seed: 9)
        #expect(even.tally(3000) == [1000, 1000, 1000])
    }

    @Test func ninetyTenIsExactInEveryCycle() {
        var split = Balancer(policy: .roundRobin, weights: [90, 10], seed: 3)
        for _ in 0..<20 {
            let cycle = split.sequence(100).map { $0! }
            #expect(cycle.filter { $0 == 0 }.count == 90)
            // Spread out: 9 + 1 in every run of 10.
            for start in stride(from: 0, to: 100, by: 10) {
                #expect(cycle[start..<start + 10].filter { $0 == 1 }.count == 1)
            }
        }
    }

    @Test func unevenWeightsAreExactPerCycleAndSmooth() {
        let weights: [UInt32] = [5, 1, 1]
        var balancer = Balancer(policy: .roundRobin, weights: weights, seed: 3)
        var previous: Int?
        var run = 0
        for _ in 0..<50 {
            let cycle = balancer.sequence(7).map { $0! }
            #expect(cycle.filter { $0 == 0 }.count == 5 && cycle.filter { $0 == 1 }.count == 1)
            for e in cycle {
                run = e == previous ? run + 1 : 1
                previous = e
                #expect(run <= 5)
            }
        }
        var many = Balancer(policy: .roundRobin, weights: [3, 7, 11, 2, 1000], seed: 3)
        #expect(many.tally(1023 * 4) == [12, 28, 44, 8, 4000])
    }

    @Test func unavailableEndpointsAreSkipped() {
        var balancer = Balancer(policy: .roundRobin, weights: [1, 1, 1], seed: 1)
        #expect(balancer.sequence(4) { $0 != 1 } == [0, 2, 0, 2])
        #expect(balancer.sequence(2) { _ in false } == [nil, nil])
        var weighted = Balancer(policy: .roundRobin, weights: [2, 1, 1], seed: 1)
        #expect(weighted.sequence(3) { $0 == 2 } == [2, 2, 2])
        #expect(weighted.sequence(1) { _ in false } == [nil])
    }

    @Test func aReturningEndpointGetsNoBurst() {
        var balancer = Balancer(policy: .roundRobin, weights: [2, 1, 1], seed: 1)
        let without = balancer.sequence(400) { $0 != 0 }.map { $0! }
        #expect(without.filter { $0 == 1 }.count == 200)
        let back = balancer.sequence(8).map { $0! }
        #expect(back.filter { $0 == 0 }.count == 4, "\(back)")
    }

    @Test func zeroWeights() {
        var balancer = Balancer(policy: .roundRobin, weights: [0, 2, 0, 1], seed: 1)
        #expect(balancer.tally(300) == [0, 200, 0, 100])
        var zeros = Balancer(policy: .roundRobin, weights: [0, 0], seed: 1)
        #expect(zeros.tally(4) == [2, 2])
        var none = Balancer(policy: .roundRobin, weights: [], seed: 1)
        #expect(none.pick(clientHash: 0) { _ in true } == nil)
        for policy in LoadBalancing.allCases {
            var only = Balancer(policy: policy, weights: [0, 3, 0], seed: 5)
            #expect(only.tally(10) == [0, 10, 0], "\(policy)")
            var empty = Balancer(policy: policy, weights: [], seed: 5)
            #expect(empty.pick(clientHash: 1) { _ in true } == nil)
        }
    }
}

@Suite struct LeastConnectionsTests {
    @Test func followsOpenedAndClosed() {
        var balancer = Balancer(policy: .leastConnections, weights: [1, 1, 1], seed: 1)
        #expect(balancer.sequence(6) == [0, 1, 2, 0, 1, 2])  // all idle: take turns
        balancer.opened(0)
        balancer.opened(0)
        balancer.opened(1)
        #expect(balancer.pick(clientHash: 0) { _ in true } == 2)
        balancer.opened(2)
        #expect(balancer.pick(clientHash: 0) { _ in true } == 1)  // 1 and 2 tie; 2 was picked last
        balancer.opened(1)
        #expect(balancer.pick(clientHash: 0) { _ in true } == 2)  // 2, 2, 1
        balancer.closed(0)
        balancer.closed(0)
        balancer.closed(0)  // one too many: ignored
        #expect(balancer.activeConnections(0) == 0)
        #expect(balancer.sequence(2) == [0, 0])
        #expect(balancer.pick(clientHash: 0) { $0 != 0 } == 2)
    }

    @Test func relativeToWeight() {
        var balancer = Balancer(policy: .leastConnections, weights: [3, 1], seed: 1)
        for _ in 0..<400 { balancer.opened(balancer.pick(clientHash: 0) { _ in true }!) }
        #expect(balancer.activeConnections(0) == 300 && balancer.activeConnections(1) == 100)
        for _ in 0..<50 { balancer.closed(1) }
        #expect(balancer.sequence(3) == [1, 1, 1])
    }
}

@Suite struct BalancerHeapTests {
    /// The heap against a plain scan: random weights (zeros too), availability and loads.
    /// Deadline mode: the chosen endpoint and every unavailable one due before it take a turn.
    @Test func matchesAScanUnderRandomAvailabilityAndLoad() {
        var random = BalancerRandom(seed: 5)
        for mode in [BalancerHeap.Mode.deadline, .leastLoaded] {
            for _ in 0..<40 {
                let n = 1 + Int(random.next(below: 40))
                let weights = (0..<n).map { _ in UInt32(random.next(below: 5)) }
                var heap = BalancerHeap(mode: mode, weights: weights)
                var numerator = [UInt64](repeating: mode == .deadline ? 1 : 0, count: n)
                var tie = (0..<n).map(UInt64.init)
                var sequence = UInt64(n)
                let candidates = (0..<n).filter { weights[$0] > 0 }
                for _ in 0..<300 {
                    if mode == .leastLoaded {
                        let e = Int(random.next(below: UInt64(n)))
                        numerator[e] = random.next(below: 6)
                        heap.setNumerator(e, numerator[e])
                    }
                    let threshold = random.next(below: 100)
                    let unavailable = (0..<n).map { _ in random.next(below: 100) < threshold }
                    func precedes(_ a: Int, _ b: Int) -> Bool {
                        let (x, y) = (numerator[a] * UInt64(weights[b]), numerator[b] * UInt64(weights[a]))
                        return x != y ? x < y : tie[a] < tie[b]
                    }
                    let expected = candidates.filter { !unavailable[$0] }.min(by: precedes)
                    let got = heap.pick { !unavailable[$0] }
                    #expect(got == expected)
                    switch (mode, expected) {
                    case (.deadline, _):
                        let passed = candidates.filter { e in
                            unavailable[e] && (expected.map { precedes(e, $0) } ?? true)
                        }
                        for e in passed { numerator[e] += 2 }
                        if let x = expected { numerator[x] += 2 }
                    case (.leastLoaded, let x?):
                        tie[x] = sequence
                        sequence += 1
                    case (.leastLoaded, nil):
                        break
                    }
                }
            }
        }
    }
}

@Suite struct PowerOfTwoTests {
    @Test func prefersIdleEndpoints() {
        var pair = Balancer(policy: .powerOfTwo, weights: [1, 1], seed: 7)
        for _ in 0..<10 { pair.opened(0) }
        #expect(pair.tally(100) == [0, 100])

        var balancer = Balancer(policy: .powerOfTwo, weights: [UInt32](repeating: 1, count: 10), seed: 7)
        for e in 0..<10 where e != 7 { for _ in 0..<5 { balancer.opened(e) } }
        let counts = balancer.tally(10_000)
        // Picked whenever it is one of the two: 1 - (9/10 * 8/9) = 20 %.
        #expect((1800...2200).contains(counts[7]), "\(counts)")
    }

    @Test func staysWeightProportional() {
        let weights: [UInt32] = [1, 2, 3, 4]
        // Idle (every connection closes at once): the draws alone.
        var idle = Balancer(policy: .powerOfTwo, weights: weights, seed: 11)
        let counts = idle.tally(100_000)
        for (e, w) in weights.enumerated() {
            #expect(abs(counts[e] - 10_000 * Int(w)) < 1000, "\(counts)")
        }
        // Loaded: 1000 connections open at a time, the oldest closes for each new one.
        var loaded = Balancer(policy: .powerOfTwo, weights: weights, seed: 12)
        var open: [Int] = []
        var picks = [0, 0, 0, 0]
        for step in 0..<100_000 {
            let e = loaded.pick(clientHash: 0) { _ in true }!
            loaded.opened(e)
            open.append(e)
            if open.count > 1000 { loaded.closed(open[step - 1000]) }
            picks[e] += 1
        }
        let active = (0..<4).map(loaded.activeConnections)
        for (e, w) in weights.enumerated() {
            #expect(abs(active[e] - 100 * Int(w)) < 40, "\(active)")
            #expect(abs(picks[e] - 10_000 * Int(w)) < 1500, "\(picks)")
        }
    }

    @Test func skipsUnavailable() {
        var balancer = Balancer(policy: .powerOfTwo, weights: [1, 1, 1, 1], seed: 2)
        #expect(Set(balancer.sequence(200) { $0 == 3 }) == [3])
        #expect(Set(balancer.sequence(200) { $0 >= 2 }) == [2, 3])
        #expect(balancer.sequence(3) { _ in false } == [nil, nil, nil])
        var heavy = Balancer(policy: .powerOfTwo, weights: [1_000_000, 1], seed: 2)
        #expect(Set(heavy.sequence(50) { $0 == 1 }) == [1])  // found by the scan
    }
}

@Suite struct RingHashTests {
    static func clients(_ n: Int) -> [UInt64] {
        (0..<n).map { Balancer.clientHash(.v4(address: 0x0A00_0000 | UInt32($0), port: UInt16($0 % 60_000))) }
    }

    static func assignments(_ balancer: inout Balancer, _ clients: [UInt64], _ isAvailable: (Int) -> Bool) -> [Int] {
        clients.map { balancer.pick(clientHash: $0, isAvailable: isAvailable)! }
    }

    @Test func clientHashUsesTheAddressOnly() {
        let a = Balancer.clientHash(.v4(address: 0x0A01_0203, port: 1000))
        #expect(a == Balancer.clientHash(.v4(address: 0x0A01_0203, port: 2000)))
        #expect(a == Balancer.clientHash(.v6(hi: 0, lo: 0xFFFF_0A01_0203, port: 3)))
        #expect(a != Balancer.clientHash(.v4(address: 0x0A01_0204, port: 1000)))
        #expect(a != Balancer.clientHash(.v6(hi: 1, lo: 0xFFFF_0A01_0203, port: 3)))
        #expect(a == 0xE4CA_8E7B_FB2B_B408)  // fixed: the same on every node and run
    }

    @Test func stableBalancedAndTheSameOnEveryLoop() {
        let clients = Self.clients(10_000)
        var one = Balancer(policy: .ringHash, weights: [UInt32](repeating: 1, count: 10), seed: 1)
        var other = Balancer(policy: .ringHash, weights: [UInt32](repeating: 1, count: 10), seed: 99)
        let first = Self.assignments(&one, clients) { _ in true }
        #expect(Self.assignments(&one, clients) { _ in true } == first)
        #expect(Self.assignments(&other, clients) { _ in true } == first)
        let shares = (0..<10).map { e in first.filter { $0 == e }.count }
        print("ring hash shares of 10,000 clients over 10 endpoints: \(shares)")
        for share in shares { #expect((600...1400).contains(share), "\(shares)") }
    }

    @Test func anUnavailableEndpointMovesOnlyItsShare() {
        let clients = Self.clients(10_000)
        var balancer = Balancer(policy: .ringHash, weights: [UInt32](repeating: 1, count: 10), seed: 1)
        let before = Self.assignments(&balancer, clients) { _ in true }
        let during = Self.assignments(&balancer, clients) { $0 != 3 }
        let moved = zip(before, during).filter { $0 != $1 }.count
        let owned = before.filter { $0 == 3 }.count
        print("ring hash: endpoint 3 of 10 unavailable moved \(moved) of 10,000 clients (it had \(owned))")
        #expect(moved == owned)
        #expect(!during.contains(3))
        // Its clients spread over the others rather than all landing on one.
        let receivers = Set(zip(before, during).filter { $0.0 == 3 }.map(\.1))
        #expect(receivers.count >= 5)
        #expect(Self.assignments(&balancer, clients) { _ in true } == before)
        // Retries: the next choice of a client is stable too.
        #expect(Self.assignments(&balancer, clients) { $0 != 3 } == during)
        #expect(balancer.pick(clientHash: clients[0]) { _ in false } == nil)
    }

    @Test func endpointKeysKeepPlacesWhenTheListChanges() {
        let clients = Self.clients(5_000)
        let addresses = (0..<8).map { SocketAddress.v4(address: 0x0A09_0000 | UInt32($0), port: 8080) }
        var full = Balancer(
            policy: .ringHash,
            weights: [UInt32](repeating: 1, count: 8),
            seed: 1,
            endpointKeys: addresses.map(Balancer.endpointKey)
        )
        var shrunk = Balancer(
            policy: .ringHash,
            weights: [UInt32](repeating: 1, count: 7),
            seed: 2,
            endpointKeys: addresses.dropFirst(1).map(Balancer.endpointKey)
        )
        let before = Self.assignments(&full, clients) { _ in true }.map { addresses[$0] }
        let after = Self.assignments(&shrunk, clients) { _ in true }.map { addresses[$0 + 1] }
        for (b, a) in zip(before, after) where b != addresses[0] { #expect(a == b) }
    }

    @Test func weightsGiveProportionalShares() {
        let clients = Self.clients(20_000)
        var balancer = Balancer(policy: .ringHash, weights: [1, 3], seed: 1)
        let share = Double(Self.assignments(&balancer, clients) { _ in true }.filter { $0 == 1 }.count) / 20_000
        #expect((0.68...0.82).contains(share), "\(share)")
        let ring = BalancerRing(weights: [UInt32](repeating: 7, count: 1000), keys: (0..<1000).map(UInt64.init))
        #expect(!ring.isEmpty)
    }
}

@Suite struct BalancerBenchmarkTests {
    /// Prints ns per pick over 100 endpoints for each policy (no assertion: a debug build
    /// says little; `swift test -c release -Xswiftc -enable-testing` for real numbers).
    /// "pick": everything available, nothing opened. "churn": pick, opened, and the
    /// connection of 500 picks ago closed, with endpoint 17 unavailable (ejected).
    @Test func nanosecondsPerPick() {
        let picks = 200_000
        let clock = ContinuousClock()
        func nanoseconds(_ duration: Duration) -> Int {
            let (seconds, attoseconds) = duration.components
            return Int((Double(seconds) * 1e9 + Double(attoseconds) / 1e9) / Double(picks))
        }
        var lines: [String] = []
        for policy in LoadBalancing.allCases {
            for weighted in [false, true] {
                let weights = (0..<100).map { weighted ? UInt32(1 + $0 % 4) : 1 }
                var balancer = Balancer(policy: policy, weights: weights, seed: 1)
                var hash: UInt64 = 1
                var sink = 0
                let pickOnly = clock.measure {
                    for _ in 0..<picks {
                        hash = hash &* 6_364_136_223_846_793_005 &+ 1
                        sink &+= balancer.pick(clientHash: hash) { _ in true }!
                    }
                }
                var open = [Int](repeating: 0, count: 500)
                let churn = clock.measure {
                    for i in 0..<picks {
                        hash = hash &* 6_364_136_223_846_793_005 &+ 1
                        let e = balancer.pick(clientHash: hash) { $0 != 17 }!
                        balancer.opened(e)
                        if i >= 500 { balancer.closed(open[i % 500]) }
                        open[i % 500] = e
                    }
                }
                let label = "\(policy.rawValue) \(weighted ? "weighted 1-4" : "equal")"
                lines.append("\(label): pick \(nanoseconds(pickOnly)) ns, churn \(nanoseconds(churn)) ns (\(sink % 2))")
            }
        }
        print("balancer ns/pick, 100 endpoints:\n  " + lines.joined(separator: "\n  "))
    }
}
