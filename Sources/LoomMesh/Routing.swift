// Routing decisions that do not depend on a loop's state: does a service port need the
// first bytes, which route a connection takes, and where an endpoint lives. The relay
// loops and `loomctl explain` share these, so what explain says is what a loop does.
import LoomSystem

/// Which way a connection goes from a service port, before an endpoint is chosen.
public enum RouteSelection: Sendable, Equatable {
    /// The n-th route of the port matched.
    case route(Int)
    /// No route matched (or the port has none): the service's own endpoints.
    case serviceEndpoints
}

extension MeshSnapshot {
    /// True when a connection to this service port must be peeked before routing.
    public func needsPeek(_ ref: ServiceRef) -> Bool {
        let port = services[ref.service].ports[ref.port]
        guard port.appProtocol != .tcp else { return false }
        return port.routes.contains { $0.match.needsPeek }
    }

    /// The first route whose match accepts what the first bytes said (`nil`: nothing was
    /// peeked, so only routes that need no bytes can match).
    public func selectRoute(_ ref: ServiceRef, _ outcome: SniffOutcome?) -> RouteSelection {
        let routes = services[ref.service].ports[ref.port].routes
        for (index, route) in routes.enumerated() {
            if let outcome {
                if route.match.matches(outcome) { return .route(index) }
            } else if !route.match.needsPeek {
                return .route(index)
            }
        }
        return .serviceEndpoints
    }

    /// The port a destination service serves `port` on (its index), falling back to the
    /// first port when it has no port of that number.
    public func portIndex(service: Int, port: UInt16) -> Int? {
        let ports = services[service].ports
        return ports.firstIndex { $0.port == port } ?? (ports.isEmpty ? nil : 0)
    }

    /// Where to connect for an endpoint of a service port.
    @inline(__always)
    public func address(service: Int, port: Int, endpoint: Int) -> SocketAddress {
        let e = services[service].endpoints[endpoint].address
        return e.port != 0 ? e : e.with(port: services[service].ports[port].targetPort)
    }
}

/// Why a connection would go where it goes: `loomctl explain`.
public struct Explanation: Sendable, Equatable, Codable {
    public var destination: String
    /// `namespace/name` and port, or nil when no service has this destination.
    public var service: String?
    public var servicePort: UInt16?
    public var appProtocol: String?
    public var peeks: Bool
    public var route: String?
    /// (service, weight) the route splits over.
    public var destinations: [String]
    /// Endpoints of the chosen service (address, weight).
    public var endpoints: [String]
    public var loadBalancing: String?
    public var verdict: String
    public var why: [String]
}

extension MeshSnapshot {
    /// Explains the routing of a connection to `destination` from a pod in `namespace`,
    /// given what its first bytes would say.
    public func explain(destination: SocketAddress, namespace: String, outcome: SniffOutcome?) -> Explanation {
        var e = Explanation(
            destination: destination.description,
            peeks: false,
            destinations: [],
            endpoints: [],
            verdict: "",
            why: []
        )
        guard let ref = lookup(destination) else {
            let policy = unmatchedPolicy(namespace: namespace)
            e.verdict = policy == .passthrough ? "pass through to \(destination)" : "refused"
            e.why.append("no service has virtual IP and port \(destination)")
            e.why.append("namespace '\(namespace)' handles unmatched destinations with '\(policy.rawValue)'")
            return e
        }
        let service = services[ref.service]
        let port = service.ports[ref.port]
        e.service = service.qualifiedName
        e.servicePort = port.port
        e.appProtocol = port.appProtocol.rawValue
        e.peeks = needsPeek(ref)
        e.why.append(
            "\(destination) is service \(service.qualifiedName) port \(port.port) (\(port.appProtocol.rawValue))"
        )
        if e.peeks {
            e.why.append("its routes look at the first bytes, so Loom peeks before choosing")
        } else if !port.routes.isEmpty {
            e.why.append("its routes need no bytes, so Loom does not peek")
        }
        var target = ref.service
        var targetPort = ref.port
        switch selectRoute(ref, e.peeks ? outcome : nil) {
        case .route(let index):
            let route = port.routes[index]
            e.route = route.name
            e.why.append("route '\(route.name)' matched (the first of \(port.routes.count) in order)")
            e.destinations = route.destinations.map {
                "\(services[$0.service].qualifiedName):\($0.port) weight \($0.weight)"
            }
            if let first = route.destinations.max(by: { $0.weight < $1.weight }) {
                target = first.service
                targetPort = portIndex(service: first.service, port: first.port) ?? 0
                if route.destinations.count > 1 {
                    e.why.append("traffic is split by weight; endpoints shown for the largest share")
                }
            }
        case .serviceEndpoints:
            if !port.routes.isEmpty { e.why.append("no route matched; the service's own endpoints serve it") }
        }
        let chosen = services[target]
        e.loadBalancing = chosen.policy.loadBalancing.rawValue
        e.endpoints = chosen.endpoints.indices.map {
            "\(address(service: target, port: targetPort, endpoint: $0)) weight \(chosen.endpoints[$0].weight)"
        }
        if chosen.endpoints.isEmpty {
            e.verdict = "refused: \(chosen.qualifiedName) has no endpoints"
        } else {
            e.verdict =
                "\(chosen.qualifiedName): one of \(chosen.endpoints.count) endpoint(s) by \(chosen.policy.loadBalancing.rawValue)"
        }
        return e
    }
}
