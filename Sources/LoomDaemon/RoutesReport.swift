// `loomctl routes`: the effective routing table of the running snapshot, with each
// service's counters (active connections, circuit-breaker refusals, connect failures,
// ejections).
import Foundation
import LoomMesh
import LoomRelay

public struct RoutesReport: Codable, Sendable {
    public struct RouteRow: Codable, Sendable {
        public var name: String
        public var match: String
        public var to: [String]
    }
    public struct PortRow: Codable, Sendable {
        public var port: UInt16
        public var targetPort: UInt16
        public var `protocol`: String
        public var routes: [RouteRow]
    }
    public struct ServiceRow: Codable, Sendable {
        public var name: String
        public var namespace: String
        public var vips: [String]
        public var ports: [PortRow]
        public var endpoints: [String]
        public var loadBalancing: String
        public var maxConnections: Int?
        public var active: Int
        public var total: Int
        public var rejected: Int
        public var connectFailures: Int
        public var ejections: Int
    }

    public var version: Int
    public var source: String
    public var services: [ServiceRow]

    public init(_ runtime: MeshRuntime) {
        let snapshot = runtime.snapshot
        version = runtime.version
        source = snapshot.source
        services = zip(snapshot.services, runtime.counters).map { service, counters in
            ServiceRow(
                name: service.name,
                namespace: service.namespace,
                vips: service.vips.map(\.host),
                ports: service.ports.map { port in
                    PortRow(
                        port: port.port,
                        targetPort: port.targetPort,
                        protocol: port.appProtocol.rawValue,
                        routes: port.routes.map { route in
                            RouteRow(
                                name: route.name,
                                match: Self.describe(route.match),
                                to: route.destinations.map {
                                    "\(snapshot.services[$0.service].qualifiedName):\($0.port) weight \($0.weight)"
                                }
                            )
                        }
                    )
                },
                endpoints: service.endpoints.map {
                    ($0.address.port == 0 ? $0.address.host : $0.address.description) + " weight \($0.weight)"
                },
                loadBalancing: service.policy.loadBalancing.rawValue,
                maxConnections: service.policy.maxConnections,
                active: counters.active.load(ordering: .relaxed),
                total: counters.total.load(ordering: .relaxed),
                rejected: counters.rejected.load(ordering: .relaxed),
                connectFailures: counters.connectFailures.load(ordering: .relaxed),
                ejections: counters.ejections.load(ordering: .relaxed)
            )
        }
    }

    static func describe(_ match: RouteMatch) -> String {
        var parts: [String] = []
        if let sni = match.sni { parts.append("sni \(sni)") }
        if let host = match.host { parts.append("host \(host)") }
        if let path = match.pathPrefix { parts.append("path \(path)*") }
        for header in match.headers { parts.append("header \(header.name)=\(header.value)") }
        return parts.isEmpty ? "any" : parts.joined(separator: ", ")
    }

    public func json() -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return String(decoding: (try? encoder.encode(self)) ?? Data(), as: UTF8.self)
    }
}
