// The mesh as loomd routes it: services (virtual IPs and ports), their endpoints, routes
// and policy, validated into one immutable snapshot. Relay loops read a snapshot when a
// connection starts; a reload publishes a new one and never touches connections in
// flight.
import LoomSystem

/// What a service port speaks; decides whether Loom peeks at the first bytes.
public enum AppProtocol: String, Sendable, CaseIterable {
    /// Opaque bytes: routed by destination only, never peeked.
    case tcp
    /// HTTP/1: routes may match Host, path prefix and headers of the first request.
    case http
    /// TLS: routes may match the SNI of the ClientHello (passthrough, never decrypted).
    case tls
}

/// How a service spreads connections over its endpoints.
public enum LoadBalancing: String, Sendable, CaseIterable {
    /// Smooth weighted round robin (plain round robin when weights are equal).
    case roundRobin = "round-robin"
    /// The endpoint with the fewest active connections (this loop's count), weighted.
    case leastConnections = "least-connections"
    /// Two random endpoints (by weight), the one with fewer active connections.
    case powerOfTwo = "power-of-two"
    /// A consistent hash ring on the client address: one client, one endpoint.
    case ringHash = "ring-hash"
}

/// A backend: a pod's address and port.
public struct Endpoint: Sendable, Equatable {
    /// IP and port connections go to.
    public var address: SocketAddress
    /// Relative share of connections (> 0).
    public var weight: UInt32
    /// The pod's workload identity (`spiffe://...` or `ns/sa`), if known.
    public var identity: String?

    public init(address: SocketAddress, weight: UInt32 = 1, identity: String? = nil) {
        self.address = address
        self.weight = weight
        self.identity = identity
    }
}

/// Passive outlier detection: eject an endpoint after consecutive connect failures.
public struct OutlierPolicy: Sendable, Equatable {
    /// Consecutive connect failures that eject an endpoint.
    public var consecutiveFailures: Int
    /// First ejection lasts this long; each repeat doubles it (capped at `maxEjectionMs`).
    public var baseEjectionMs: Int64
    public var maxEjectionMs: Int64
    /// At most this share of a service's endpoints is ejected at once (never all).
    public var maxEjectionPercent: Int

    public init(
        consecutiveFailures: Int = 3,
        baseEjectionMs: Int64 = 5_000,
        maxEjectionMs: Int64 = 300_000,
        maxEjectionPercent: Int = 50
    ) {
        self.consecutiveFailures = consecutiveFailures
        self.baseEjectionMs = baseEjectionMs
        self.maxEjectionMs = maxEjectionMs
        self.maxEjectionPercent = maxEjectionPercent
    }
}

/// What happens to a connection whose peeked first bytes claim HTTP or TLS but break
/// the rules (or exceed the 16 KiB peek).
public enum MalformedPolicy: String, Sendable, CaseIterable {
    /// Route it as if nothing had been peeked (the service's own endpoints).
    case passthrough
    /// Refuse it (reset).
    case refuse
}

/// Per-service knobs.
public struct ServicePolicy: Sendable, Equatable {
    public var loadBalancing: LoadBalancing
    /// Upstream connect timeout for this service (milliseconds).
    public var connectTimeoutMs: Int64
    /// Other endpoints tried after a failed connect (the client's bytes are still unread,
    /// so a retry is invisible to it).
    public var retries: Int
    /// Circuit breaker: active connections allowed (nil: no limit). Beyond it new
    /// connections are refused and counted.
    public var maxConnections: Int?
    public var outlier: OutlierPolicy
    /// Malformed or oversized first bytes on a peeked port.
    public var malformed: MalformedPolicy = .passthrough
    /// True: endpoints that carry an `identity` are reached through the node-to-node mTLS
    /// tunnel when the node has a CA (the others in plaintext). False: always plaintext.
    public var mtls: Bool

    public init(
        loadBalancing: LoadBalancing = .roundRobin,
        connectTimeoutMs: Int64 = 5_000,
        retries: Int = 2,
        maxConnections: Int? = nil,
        outlier: OutlierPolicy = OutlierPolicy(),
        mtls: Bool = true
    ) {
        self.loadBalancing = loadBalancing
        self.connectTimeoutMs = connectTimeoutMs
        self.retries = retries
        self.maxConnections = maxConnections
        self.outlier = outlier
        self.mtls = mtls
    }
}

/// What a route looks at. All given fields must match; an empty match matches anything.
public struct RouteMatch: Sendable, Equatable {
    /// TLS server name, exact or `*.suffix` (lowercase).
    public var sni: String?
    /// HTTP Host without port, exact or `*.suffix` (lowercase).
    public var host: String?
    public var pathPrefix: String?
    /// Header name (lowercase) and exact value.
    public var headers: [HeaderMatch]

    public init(sni: String? = nil, host: String? = nil, pathPrefix: String? = nil, headers: [HeaderMatch] = []) {
        self.sni = sni
        self.host = host
        self.pathPrefix = pathPrefix
        self.headers = headers
    }

    /// True when the route needs the first bytes of the connection.
    public var needsPeek: Bool { sni != nil || host != nil || pathPrefix != nil || !headers.isEmpty }
}

public struct HeaderMatch: Sendable, Equatable {
    public var name: String
    public var value: String
    public init(name: String, value: String) {
        self.name = name
        self.value = value
    }
}

/// Where a route sends a share of its connections: another service (by index into
/// `MeshSnapshot.services`) on one of its ports.
public struct WeightedDestination: Sendable, Equatable {
    public var service: Int
    /// Port number on that service (its endpoints' port comes from that service port).
    public var port: UInt16
    public var weight: UInt32

    public init(service: Int, port: UInt16, weight: UInt32) {
        self.service = service
        self.port = port
        self.weight = weight
    }
}

public struct Route: Sendable, Equatable {
    public var name: String
    public var match: RouteMatch
    public var destinations: [WeightedDestination]

    public init(name: String, match: RouteMatch, destinations: [WeightedDestination]) {
        self.name = name
        self.match = match
        self.destinations = destinations
    }
}

public struct ServicePort: Sendable, Equatable {
    /// The port clients connect to on the virtual IP.
    public var port: UInt16
    public var appProtocol: AppProtocol
    /// The port on the endpoints (defaults to `port`); an endpoint's own port wins.
    public var targetPort: UInt16
    /// Tried in order; the first match decides. No match: the service's own endpoints.
    public var routes: [Route]

    public init(port: UInt16, appProtocol: AppProtocol = .tcp, targetPort: UInt16? = nil, routes: [Route] = []) {
        self.port = port
        self.appProtocol = appProtocol
        self.targetPort = targetPort ?? port
        self.routes = routes
    }
}

public struct Service: Sendable, Equatable {
    public var name: String
    public var namespace: String
    /// Virtual IPs (port 0). A service without one is reachable only through routes.
    public var vips: [SocketAddress]
    public var ports: [ServicePort]
    /// Endpoints; an endpoint whose port is 0 uses the service port's `targetPort`.
    public var endpoints: [Endpoint]
    public var policy: ServicePolicy

    public init(
        name: String,
        namespace: String,
        vips: [SocketAddress],
        ports: [ServicePort],
        endpoints: [Endpoint],
        policy: ServicePolicy = ServicePolicy()
    ) {
        self.name = name
        self.namespace = namespace
        self.vips = vips
        self.ports = ports
        self.endpoints = endpoints
        self.policy = policy
    }

    /// `namespace/name`.
    public var qualifiedName: String { "\(namespace)/\(name)" }

    /// Whether a connection to `endpoint` goes through the node-to-node mTLS tunnel: the
    /// policy allows it, the endpoint carries an identity and the node has a CA.
    public func usesMTLS(to endpoint: Endpoint, nodeHasCA: Bool) -> Bool {
        policy.mtls && nodeHasCA && endpoint.identity != nil
    }
}

/// Whether a namespace's pods accept plaintext inbound connections (`namespaces.NAME.mtls`).
public enum MTLSMode: String, Sendable, CaseIterable {
    /// Plaintext inbound connections are accepted next to mTLS ones (for migration; the default).
    case permissive
    /// Plaintext inbound connections to the namespace's pods are refused.
    case strict

    /// True when a plaintext inbound connection is accepted.
    public var acceptsPlaintext: Bool { self == .permissive }
}

/// What happens to a connection whose destination is no service.
public enum UnmatchedPolicy: String, Sendable, CaseIterable {
    /// Relay it to its original destination (the default: Loom is transparent).
    case passthrough
    /// Refuse it (reset).
    case refuse
}
