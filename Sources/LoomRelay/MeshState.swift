// How a mesh snapshot reaches the loops, and what each loop keeps per snapshot.
//
// The control plane publishes a `MeshRuntime` (snapshot + per-service counters) under a
// lock and bumps an atomic generation. A loop compares the generation (one relaxed load)
// when a connection starts and takes the lock only when it changed, so a reload costs
// each loop one lock acquisition and a connection start costs none. Connections keep the
// runtime they started with: a reload never touches a connection in flight.
import LoomMesh
import LoomSystem
import Synchronization

/// Counters of one service, shared by every loop (updated at connection start and end).
public final class ServiceCounters: Sendable {
    /// Connections open now (the circuit breaker's count).
    public let active = Atomic<Int>(0)
    public let total = Atomic<Int>(0)
    /// Refused by the circuit breaker.
    public let rejected = Atomic<Int>(0)
    /// Upstream connects that failed (each retry counts).
    public let connectFailures = Atomic<Int>(0)
    /// Times an endpoint was ejected (any loop).
    public let ejections = Atomic<Int>(0)
    /// Connections that ended in a reset or failure after being routed here.
    public let failed = Atomic<Int>(0)
    /// Bytes relayed for connections to this service: client -> endpoint, endpoint -> client.
    public let bytesOut = Atomic<UInt64>(0)
    public let bytesIn = Atomic<UInt64>(0)

    public init() {}
}

/// A published snapshot with the counters of its services.
public final class MeshRuntime: Sendable {
    public let snapshot: MeshSnapshot
    /// Same order as `snapshot.services`.
    public let counters: [ServiceCounters]
    /// 1 for the first snapshot, then one more per reload.
    public let version: Int
    /// Milliseconds (monotonic) when it was published.
    public let publishedAt: Int64

    init(snapshot: MeshSnapshot, counters: [ServiceCounters], version: Int) {
        self.snapshot = snapshot
        self.counters = counters
        self.version = version
        self.publishedAt = SystemProcess.nowMilliseconds()
    }
}

/// Where the control plane publishes snapshots and loops pick them up.
public final class MeshPublisher: Sendable {
    private let current: Mutex<MeshRuntime>
    private let generation = Atomic<Int>(1)

    public init(_ snapshot: MeshSnapshot = .empty) {
        current = Mutex(
            MeshRuntime(snapshot: snapshot, counters: snapshot.services.map { _ in ServiceCounters() }, version: 1)
        )
    }

    /// Publishes a new snapshot. A service that keeps its `namespace/name` keeps its
    /// counters, so the circuit breaker counts connections across reloads.
    @discardableResult
    public func publish(_ snapshot: MeshSnapshot) -> MeshRuntime {
        current.withLock { runtime in
            var old: [String: ServiceCounters] = [:]
            for (service, counters) in zip(runtime.snapshot.services, runtime.counters) {
                old[service.qualifiedName] = counters
            }
            let counters = snapshot.services.map { old[$0.qualifiedName] ?? ServiceCounters() }
            runtime = MeshRuntime(snapshot: snapshot, counters: counters, version: runtime.version + 1)
            generation.store(runtime.version, ordering: .releasing)
            return runtime
        }
    }

    /// The current runtime.
    public var runtime: MeshRuntime { current.withLock { $0 } }

    /// The version loops compare against (cheap).
    @inline(__always)
    var version: Int { generation.load(ordering: .acquiring) }
}

/// One loop's routing state for the runtime it last picked up: balancers and outlier
/// detectors per service, splitters per route. Built lazily, replaced on reload.
struct LoopRouting {
    var runtime: MeshRuntime
    private var balancers: [Balancer?]
    private var outliers: [OutlierDetector?]
    /// Weighted splits of routes, keyed by service << 32 | port << 16 | route.
    private var splitters: [Int: Balancer] = [:]
    private var seed: UInt64

    init(runtime: MeshRuntime, seed: UInt64) {
        self.runtime = runtime
        self.seed = seed
        balancers = Array(repeating: nil, count: runtime.snapshot.services.count)
        outliers = Array(repeating: nil, count: runtime.snapshot.services.count)
    }

    var snapshot: MeshSnapshot { runtime.snapshot }

    /// Where a routed connection goes: the destination service and port, after the
    /// route and its weighted split.
    mutating func target(_ ref: ServiceRef, _ selection: RouteSelection) -> (service: Int, port: Int, route: Int?) {
        guard case .route(let index) = selection else { return (ref.service, ref.port, nil) }
        let route = snapshot.services[ref.service].ports[ref.port].routes[index]
        var chosen = 0
        if route.destinations.count > 1 {
            let key = ref.service << 32 | ref.port << 16 | index
            if splitters[key] == nil {
                seed &+= 0x9E37_79B9_7F4A_7C15
                splitters[key] = Balancer(policy: .roundRobin, weights: route.destinations.map(\.weight), seed: seed)
            }
            chosen = splitters[key]!.pick(clientHash: 0) { _ in true } ?? 0
        }
        let destination = route.destinations[chosen]
        return (
            destination.service, snapshot.portIndex(service: destination.service, port: destination.port) ?? 0, index
        )
    }

    /// An endpoint of `service` not yet tried for this connection and not ejected (or,
    /// if every untried one is ejected, any untried one).
    mutating func pickEndpoint(service: Int, clientHash: UInt64, tried: TriedEndpoints, now: Int64) -> Int? {
        let endpoints = snapshot.services[service].endpoints
        guard !endpoints.isEmpty else { return nil }
        if balancers[service] == nil {
            seed &+= 0x9E37_79B9_7F4A_7C15
            let policy = snapshot.services[service].policy
            balancers[service] = Balancer(
                policy: policy.loadBalancing,
                weights: endpoints.map(\.weight),
                seed: seed,
                endpointKeys: endpoints.map { Balancer.endpointKey($0.address) }
            )
            outliers[service] = OutlierDetector(count: endpoints.count, policy: policy.outlier)
        }
        let outlier = outliers[service]!
        if let healthy = balancers[service]!.pick(
            clientHash: clientHash,
            isAvailable: { !tried.contains($0) && !outlier.isEjected($0, now: now) }
        ) {
            return healthy
        }
        return balancers[service]!.pick(clientHash: clientHash, isAvailable: { !tried.contains($0) })
    }

    mutating func opened(service: Int, endpoint: Int) {
        balancers[service]?.opened(endpoint)
        outliers[service]?.succeeded(endpoint)
    }

    mutating func closed(service: Int, endpoint: Int) { balancers[service]?.closed(endpoint) }

    /// Records a failed connect; true if it ejected the endpoint.
    mutating func failed(service: Int, endpoint: Int, now: Int64) -> Bool {
        outliers[service]?.failed(endpoint, now: now) ?? false
    }
}

/// Endpoints a connection already tried (retries go elsewhere). Fixed size: no allocation.
struct TriedEndpoints {
    private var items: (Int, Int, Int, Int, Int, Int, Int, Int) = (-1, -1, -1, -1, -1, -1, -1, -1)
    private(set) var count = 0
    static let capacity = 8

    @inline(__always)
    func contains(_ endpoint: Int) -> Bool {
        var copy = items
        return withUnsafeBytes(of: &copy) { raw in
            raw.bindMemory(to: Int.self).prefix(count).contains(endpoint)
        }
    }

    mutating func insert(_ endpoint: Int) {
        guard count < Self.capacity else { return }
        withUnsafeMutableBytes(of: &items) { raw in raw.bindMemory(to: Int.self)[count] = endpoint }
        count += 1
    }

    mutating func removeAll() {
        count = 0
    }
}
