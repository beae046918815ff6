// STUB (to be completed by the config work): an immutable, validated mesh with a lookup
// index from virtual IP:port to service port.
import LoomSystem

public final class MeshSnapshot: Sendable {
    public let services: [Service]
    /// Per namespace: what happens to destinations that are no service.
    public let unmatched: [String: UnmatchedPolicy]
    /// Where it came from (file path) and when it was loaded, for status and logs.
    public let source: String
    private let index: [SocketAddress: ServiceRef]

    public init(services: [Service], unmatched: [String: UnmatchedPolicy] = [:], source: String = "(empty)") {
        self.services = services
        self.unmatched = unmatched
        self.source = source
        var index: [SocketAddress: ServiceRef] = [:]
        for (s, service) in services.enumerated() {
            for (p, port) in service.ports.enumerated() {
                for vip in service.vips { index[vip.with(port: port.port)] = ServiceRef(service: s, port: p) }
            }
        }
        self.index = index
    }

    /// The empty mesh: every destination is unmatched (pass-through by default).
    public static let empty = MeshSnapshot(services: [])

    /// The service port a destination (virtual IP and port) belongs to.
    @inline(__always)
    public func lookup(_ destination: SocketAddress) -> ServiceRef? { index[destination] }

    public func unmatchedPolicy(namespace: String) -> UnmatchedPolicy { unmatched[namespace] ?? .passthrough }
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
