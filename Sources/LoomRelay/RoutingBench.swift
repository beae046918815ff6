// What one routing decision costs on a relay loop: lookup of the original destination,
// route selection, weighted split, endpoint pick. Used by `loomctl config validate
// --bench` (a measurement, not a test).
import LoomMesh
import LoomSystem

public enum RoutingBench {
    /// Runs `decisions` routing decisions over every service port of the snapshot, in a
    /// shuffled order, and describes the per-decision median (batches of 1,000 timed
    /// together; the clock is too coarse for one).
    public static func run(_ snapshot: MeshSnapshot, decisions: Int) -> String {
        var destinations: [SocketAddress] = []
        for service in snapshot.services {
            for vip in service.vips { for port in service.ports { destinations.append(vip.with(port: port.port)) } }
        }
        guard !destinations.isEmpty else { return "no service has a virtual IP: nothing to route" }
        var state: UInt64 = 0x1234_5678_9ABC_DEF0
        func next() -> UInt64 {
            state ^= state << 13
            state ^= state >> 7
            state ^= state << 17
            return state
        }
        for i in stride(from: destinations.count - 1, to: 0, by: -1) {
            destinations.swapAt(i, Int(next() % UInt64(i + 1)))
        }
        var routing = LoopRouting(runtime: MeshPublisher(snapshot).runtime, seed: 1)
        let batch = 1000
        var perDecisionNs: [Double] = []
        var picked = 0
        var cursor = 0
        let now = SystemProcess.nowMilliseconds()
        for _ in 0..<max(1, decisions / batch) {
            let start = SystemProcess.nowMicroseconds()
            for _ in 0..<batch {
                let destination = destinations[cursor]
                cursor = cursor + 1 == destinations.count ? 0 : cursor + 1
                guard let ref = snapshot.lookup(destination) else { continue }
                let target = routing.target(ref, snapshot.selectRoute(ref, nil))
                let hash = UInt64(truncatingIfNeeded: cursor) &* 0x9E37_79B9_7F4A_7C15
                if routing.pickEndpoint(service: target.service, clientHash: hash, tried: TriedEndpoints(), now: now)
                    != nil
                {
                    picked += 1
                }
            }
            perDecisionNs.append(Double(SystemProcess.nowMicroseconds() - start) * 1000 / Double(batch))
        }
        perDecisionNs.sort()
        let median = perDecisionNs[perDecisionNs.count / 2]
        let p99 = perDecisionNs[min(perDecisionNs.count - 1, perDecisionNs.count * 99 / 100)]
        return "routing decision: median \(Int(median)) ns, p99 \(Int(p99)) ns per decision "
            + "(\(perDecisionNs.count * batch) decisions over \(destinations.count) service ports; \(picked) found an endpoint)"
    }
}
