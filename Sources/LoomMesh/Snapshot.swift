// An immutable, validated mesh with a lookup index from virtual IP:port to service port.
// `MeshConfig.parse`/`MeshSource.load` build one from a configuration (validation lives
// there); loops read one per connection and a reload replaces it whole.
import LoomSystem

public final class MeshSnapshot: Sendable {
    public let services: [Service]
    /// Per namespace: what happens to destinations that are no service.
    public let unmatched: [String: UnmatchedPolicy]
    /// Per namespace: whether plaintext inbound connections are accepted (absent: permissive).
    public let mtls: [String: MTLSMode]
    /// Authorization policies in file order (evaluated by `authorize`).
    public let policies: [AuthorizationPolicy]
    /// Where it came from (the file path, or the `MeshSource` name), for status and logs.
    public let source: String
    /// Every VIP with every port of its service. O(1) lookups; built in one pass with
    /// the capacity reserved up front (10,000 services index in milliseconds).
    private let index: [SocketAddress: ServiceRef]
    /// `namespace/name` to index in `services`.
    private let names: [String: Int]
    /// `policies` compiled: per namespace, and the endpoints of the services they name.
    let authorization: AuthorizationIndex

    /// Indexes `services` as given. Validation is the configuration's job; should two
    /// services claim one VIP:port anyway, the first in `services` keeps it. A policy's
    /// service that is not in `services` matches nothing.
    public init(
        services: [Service],
        unmatched: [String: UnmatchedPolicy] = [:],
        mtls: [String: MTLSMode] = [:],
        policies: [AuthorizationPolicy] = [],
        source: String = "(empty)"
    ) {
        self.services = services
        self.unmatched = unmatched
        self.mtls = mtls
        self.policies = policies
        self.source = source
        var index: [SocketAddress: ServiceRef] = [:]
        index.reserveCapacity(services.reduce(0) { $0 + $1.vips.count * $1.ports.count })
        var names: [String: Int] = [:]
        names.reserveCapacity(services.count)
        for (s, service) in services.enumerated() {
            if names[service.qualifiedName] == nil { names[service.qualifiedName] = s }
            for (p, port) in service.ports.enumerated() {
                for vip in service.vips where index[vip.with(port: port.port)] == nil {
                    index[vip.with(port: port.port)] = ServiceRef(service: s, port: p)
                }
            }
        }
        self.index = index
        self.names = names
        authorization = AuthorizationIndex(policies: policies, services: services, names: names)
    }

    /// The empty mesh: every destination is unmatched (pass-through by default).
    public static let empty = MeshSnapshot(services: [])

    /// The service port a destination (virtual IP and port) belongs to.
    @inline(__always)
    public func lookup(_ destination: SocketAddress) -> ServiceRef? { index[destination] }

    public func unmatchedPolicy(namespace: String) -> UnmatchedPolicy { unmatched[namespace] ?? .passthrough }

    /// Whether the namespace's pods accept plaintext inbound connections.
    public func mtlsMode(namespace: String) -> MTLSMode { mtls[namespace] ?? .permissive }

    /// The index in `services` of `namespace/name`.
    public func serviceIndex(namespace: String, name: String) -> Int? { names["\(namespace)/\(name)"] }

    /// VIP:port pairs in the index.
    public var indexedDestinations: Int { index.count }

    /// One line for logs and status: `loom.yaml: 3 services, 5 ports, 12 endpoints, 2 routes`.
    public var summary: String {
        let ports = services.reduce(0) { $0 + $1.ports.count }
        let endpoints = services.reduce(0) { $0 + $1.endpoints.count }
        let routes = services.reduce(0) { total, service in service.ports.reduce(total) { $0 + $1.routes.count } }
        return "\(source): \(services.count) services, \(ports) ports, \(endpoints) endpoints, \(routes) routes"
    }

    /// Everything in the snapshot, one service per paragraph, for `loomctl` and debugging;
    /// then namespaces whose mTLS mode is not the default, and the policies, a line each.
    public func describe() -> String {
        var lines = [summary]
        for service in services {
            let vips = service.vips.map(\.host).joined(separator: ", ")
            lines.append(
                "\(service.qualifiedName) vips [\(vips)] \(service.policy.loadBalancing.rawValue)"
                    + (service.policy.mtls ? "" : " mtls off")
            )
            for port in service.ports {
                lines.append("  port \(port.port) \(port.appProtocol.rawValue) -> \(port.targetPort)")
                for route in port.routes {
                    let to = route.destinations.map { "\(services[$0.service].qualifiedName):\($0.port)*\($0.weight)" }
                    lines.append("    route \(route.name) \(route.match.summary) -> \(to.joined(separator: ", "))")
                }
            }
            for endpoint in service.endpoints {
                let shown = endpoint.address.port == 0 ? endpoint.address.host : endpoint.address.description
                lines.append(
                    "  endpoint \(shown) weight \(endpoint.weight)" + (endpoint.identity.map { " \($0)" } ?? "")
                )
            }
        }
        for (namespace, mode) in mtls.sorted(by: { $0.key < $1.key }) where mode != .permissive {
            lines.append("namespace \(namespace) mtls \(mode.rawValue)")
        }
        lines += policies.map { "policy \($0.summary)" }
        return lines.joined(separator: "\n")
    }
}

extension RouteMatch {
    /// `sni=a.example host=shop.example path=/v2 x-beta=1`, or `*` for an empty match.
    public var summary: String {
        var parts: [String] = []
        if let sni { parts.append("sni=\(sni)") }
        if let host { parts.append("host=\(host)") }
        if let pathPrefix { parts.append("path=\(pathPrefix)") }
        parts += headers.map { "\($0.name)=\($0.value)" }
        return parts.isEmpty ? "*" : parts.joined(separator: " ")
    }
}

/// A service and one of its ports, as indexes into `MeshSnapshot.services`.
public struct ServiceRef: Sendable, Equatable, Hashable {
    public var service: Int
    public var port: Int
    public init(service: Int, port: Int) {
        self.service = service
        self.port = port
    }
}
