// What the relay tells the trace hub and the metrics about connections. The loops write;
// loomd's trace hub and metrics endpoint read. Nothing here is touched per event on the
// hot path when nobody traces: a loop checks the pod's `traced` count (one relaxed load)
// when a connection opens or closes, and builds an event only when it is non-zero.
import LoomMesh
import LoomSystem
import Synchronization

/// How a connection ended, as a short stable label (metrics, trace, access log).
public enum EndCode: Int, CaseIterable, Sendable, Codable {
    case fin, clientReset, upstreamReset, upstreamRefused, upstreamUnreachable, connectTimeout, idleTimeout
    case shutdown, podGone, deniedUnmatched, circuitOpen, noEndpoint, malformed, error
    /// Refused at accept: no original destination (not redirected by nf_tables).
    case refusedNoDestination
    /// Refused at accept: aimed at Loom's own listener.
    case refusedLoop
    /// mTLS: the handshake failed, timed out, or the server was another workload.
    case tlsHandshakeFailed, tlsHandshakeTimeout, tlsIdentityMismatch
    /// The authorization policy denied the source.
    case deniedPolicy
    /// Plaintext inbound to a STRICT namespace.
    case deniedPlaintext
    /// The tunnel header was malformed or named another pod.
    case tunnelHeaderInvalid
    /// No workload certificate to speak mTLS with.
    case tlsUnavailable

    public var label: String {
        switch self {
        case .fin: return "fin"
        case .clientReset: return "client_reset"
        case .upstreamReset: return "upstream_reset"
        case .upstreamRefused: return "upstream_refused"
        case .upstreamUnreachable: return "upstream_unreachable"
        case .connectTimeout: return "connect_timeout"
        case .idleTimeout: return "idle_timeout"
        case .shutdown: return "shutdown"
        case .podGone: return "pod_gone"
        case .deniedUnmatched: return "denied_unmatched"
        case .circuitOpen: return "circuit_open"
        case .noEndpoint: return "no_endpoint"
        case .malformed: return "malformed_request"
        case .error: return "error"
        case .refusedNoDestination: return "refused_not_redirected"
        case .refusedLoop: return "refused_loop"
        case .tlsHandshakeFailed: return "tls_handshake_failed"
        case .tlsHandshakeTimeout: return "tls_handshake_timeout"
        case .tlsIdentityMismatch: return "tls_identity_mismatch"
        case .deniedPolicy: return "denied_policy"
        case .deniedPlaintext: return "denied_plaintext"
        case .tunnelHeaderInvalid: return "tunnel_header_invalid"
        case .tlsUnavailable: return "tls_unavailable"
        }
    }

    /// Ends that are the mesh's policy refusing a connection (not a failure of a peer).
    public var isDenial: Bool {
        switch self {
        case .deniedUnmatched, .circuitOpen, .malformed, .refusedLoop, .deniedPolicy, .deniedPlaintext,
            .tlsIdentityMismatch:
            return true
        default:
            return false
        }
    }
}

extension CloseReason {
    public var code: EndCode {
        switch self {
        case .finished: return .fin
        case .clientReset: return .clientReset
        case .upstreamReset: return .upstreamReset
        case .upstreamRefused: return .upstreamRefused
        case .upstreamUnreachable: return .upstreamUnreachable
        case .connectTimeout: return .connectTimeout
        case .idleTimeout: return .idleTimeout
        case .shutdown: return .shutdown
        case .podGone: return .podGone
        case .unmatchedRefused: return .deniedUnmatched
        case .circuitOpen: return .circuitOpen
        case .noEndpoint: return .noEndpoint
        case .malformedRequest: return .malformed
        case .error: return .error
        case .handshakeFailed: return .tlsHandshakeFailed
        case .handshakeTimeout: return .tlsHandshakeTimeout
        case .identityMismatch: return .tlsIdentityMismatch
        case .denied: return .deniedPolicy
        case .plaintextRefused: return .deniedPlaintext
        case .badTunnelHeader: return .tunnelHeaderInvalid
        case .noCertificate: return .tlsUnavailable
        }
    }
}

/// A counter one thread (or a few, with relaxed atomics) adds to and anyone reads.
public final class Counter: Sendable {
    private let storage = Atomic<Int>(0)
    public init() {}
    @inline(__always)
    public func add(_ n: Int = 1) { storage.add(n, ordering: .relaxed) }
    public var value: Int { storage.load(ordering: .relaxed) }
}

/// A fixed-bucket histogram of microseconds (Prometheus `le` buckets in seconds).
public final class LatencyHistogram: Sendable {
    /// Upper bounds, microseconds.
    public static let boundsMicros: [Int64] = [
        100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
        5_000_000,
    ]
    /// One per bound, plus +Inf; not cumulative.
    public let buckets: [Counter] = (0...LatencyHistogram.boundsMicros.count).map { _ in Counter() }
    public let sumMicros = Counter()

    public init() {}

    public func observe(micros: Int64) {
        var index = Self.boundsMicros.count
        for (i, bound) in Self.boundsMicros.enumerated() where micros <= bound {
            index = i
            break
        }
        buckets[index].add()
        sumMicros.add(Int(max(0, micros)))
    }

    /// Cumulative counts per bound, then the total (+Inf).
    public func cumulative() -> [Int] {
        var total = 0
        return buckets.map {
            total += $0.value
            return total
        }
    }
}

/// What the mesh decided for new connections (node totals).
public enum RoutingDecision: Int, CaseIterable, Sendable {
    /// Routed to a service's endpoint.
    case service
    /// Not a service: passed through to the original destination.
    case passthrough
    /// Not a service, and the namespace refuses unmatched destinations.
    case refusedUnmatched
    case circuitOpen
    case noEndpoint
    case malformed
    /// Reached through the node-to-node mTLS tunnel (outbound).
    case tunnel
    /// Refused by the authorization policy, or plaintext to a STRICT namespace (inbound).
    case deniedPolicy

    public var label: String {
        switch self {
        case .service: return "service"
        case .passthrough: return "passthrough"
        case .refusedUnmatched: return "refused_unmatched"
        case .circuitOpen: return "circuit_open"
        case .noEndpoint: return "no_endpoint"
        case .malformed: return "malformed_request"
        case .tunnel: return "tunnel"
        case .deniedPolicy: return "denied_policy"
        }
    }
}

/// A loop's metrics beyond its counters: connect latency, routing decisions, mTLS
/// handshakes.
public final class RelayMetrics: Sendable {
    public let connectLatency = LatencyHistogram()
    /// Completed mTLS handshakes as client (outbound tunnel) and as server (port 15008),
    /// and how long they took.
    public let handshakesClient = Counter()
    public let handshakesServer = Counter()
    /// Of those, handshakes that resumed an earlier session (either role).
    public let handshakesResumed = Counter()
    public let handshakeLatency = LatencyHistogram()
    public let decisions: [Counter] = RoutingDecision.allCases.map { _ in Counter() }
    public init() {}
    @inline(__always)
    func decided(_ decision: RoutingDecision) { decisions[decision.rawValue].add() }
}

/// One connection event for the trace hub and the access log.
public struct RelayEvent: Sendable {
    public enum Kind: Sendable {
        /// The upstream connect completed; bytes may flow.
        case opened
        /// The connection ended (`reason`), or was refused at accept (`refusal`).
        case closed
    }
    public var kind: Kind
    public var pod: PodContext
    public var capture: CaptureKind
    public var client: SocketAddress
    /// The original destination (before the kernel's redirect).
    public var destination: SocketAddress
    /// Where Loom connected (an endpoint, or the original destination); nil if never.
    public var upstream: SocketAddress?
    /// The snapshot the connection was routed with, and indexes into it (-1: none).
    public var runtime: MeshRuntime?
    public var serviceRef = -1
    public var portRef = -1
    public var route = -1
    public var service = -1
    public var endpoint = -1
    /// Client -> upstream and upstream -> client bytes that reached their sink.
    public var bytesOut: UInt64 = 0
    public var bytesIn: UInt64 = 0
    /// Monotonic milliseconds.
    public var openedAtMs: Int64
    public var atMs: Int64
    /// The upstream connect took this long (microseconds); -1: no connect completed.
    public var connectMicros: Int64 = -1
    public var end: EndCode?
    /// A human explanation of the end (the close reason's text).
    public var endDetail: String?
    /// mTLS details; nil for plaintext.
    public var tls: TLSSummary?

    public init(
        kind: Kind,
        pod: PodContext,
        capture: CaptureKind,
        client: SocketAddress,
        destination: SocketAddress,
        openedAtMs: Int64,
        atMs: Int64
    ) {
        self.kind = kind
        self.pod = pod
        self.capture = capture
        self.client = client
        self.destination = destination
        self.openedAtMs = openedAtMs
        self.atMs = atMs
    }
}

/// What a trace shows of a connection's mTLS side.
public struct TLSSummary: Sendable, Equatable {
    /// `client` (this Loom opened the tunnel) or `server` (it accepted it on 15008).
    public var role: String
    public var localIdentity: String
    /// The peer's SPIFFE ID once verified (nil before, or if the handshake failed).
    public var peerIdentity: String?
    public var version: String?
    public var cipher: String?
    /// Serial of the local workload certificate used (changes at rotation).
    public var localSerial: String
    /// `kernel` when kTLS carries the records, `user` when Loom copies through buffers.
    public var dataPath: String
    /// Client role: the far node's tunnel address (the endpoint pod's tunnel port).
    public var tunnel: String?
    /// The handshake resumed an earlier session (no certificate exchange).
    public var resumed = false

    public init(
        role: String,
        localIdentity: String,
        peerIdentity: String? = nil,
        version: String? = nil,
        cipher: String? = nil,
        localSerial: String,
        dataPath: String = "user"
    ) {
        self.role = role
        self.localIdentity = localIdentity
        self.peerIdentity = peerIdentity
        self.version = version
        self.cipher = cipher
        self.localSerial = localSerial
        self.dataPath = dataPath
    }
}

/// A loop's outgoing events: bounded; when the reader falls behind, events are dropped
/// and counted, never waited for.
public final class RelayEventQueue: Sendable {
    private let buffer = Mutex<[RelayEvent]>([])
    private let capacity: Int
    public let dropped = Counter()

    public init(capacity: Int = 8192) { self.capacity = capacity }

    func push(_ event: RelayEvent) {
        let accepted = buffer.withLock { events -> Bool in
            guard events.count < capacity else { return false }
            events.append(event)
            return true
        }
        if !accepted { dropped.add() }
    }

    /// Moves every queued event into `into` (the reader's buffer).
    public func drain(into: inout [RelayEvent]) {
        buffer.withLock { events in
            into.append(contentsOf: events)
            events.removeAll(keepingCapacity: true)
        }
    }
}
