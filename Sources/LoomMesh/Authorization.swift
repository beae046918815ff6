// Authorization policies (`policies:` of the mesh configuration; Istio's
// AuthorizationPolicy, simplified) and their evaluation for one inbound connection.
// A policy protects the pods of one namespace: any matching deny policy refuses the
// connection; otherwise, if the namespace has allow policies, one of them must match;
// a namespace without policies accepts everything (default allow inside the mesh).
// The snapshot compiles the policies once (per namespace, with the endpoints of the
// services they name indexed by address), so a decision is a few dictionary lookups.
import LoomSystem

/// One authorization policy, as configured.
public struct AuthorizationPolicy: Sendable, Equatable {
    public enum Action: String, Sendable, CaseIterable {
        case allow
        case deny
    }

    /// Unique in the configuration.
    public var name: String
    /// The namespace of the destination pods it protects.
    public var namespace: String
    public var action: Action
    /// Sources: a source matches if it has one of these identities or comes from one of
    /// `fromNamespaces`. Both empty: any source, plaintext too; otherwise a plaintext
    /// source (no identity) never matches.
    public var fromIdentities: [String]
    public var fromNamespaces: [String]
    /// Destinations (`namespace/name`): an endpoint (address and port) of one of these
    /// services. Empty: any pod of `namespace`.
    public var toServices: [String]
    /// Destination pod ports (the endpoint's port, not the service port). Empty: any.
    public var toPorts: [UInt16]

    public init(
        name: String,
        namespace: String,
        action: Action,
        fromIdentities: [String] = [],
        fromNamespaces: [String] = [],
        toServices: [String] = [],
        toPorts: [UInt16] = []
    ) {
        self.name = name
        self.namespace = namespace
        self.action = action
        self.fromIdentities = fromIdentities
        self.fromNamespaces = fromNamespaces
        self.toServices = toServices
        self.toPorts = toPorts
    }

    /// `deny-legacy shop deny from [spiffe://cluster.local/ns/legacy/sa/app, ns legacy] to [shop/web, port 8080]`.
    public var summary: String {
        let from = fromIdentities + fromNamespaces.map { "ns \($0)" }
        let to = toServices + toPorts.map { "port \($0)" }
        func list(_ items: [String]) -> String { items.isEmpty ? "*" : "[" + items.joined(separator: ", ") + "]" }
        return "\(name) \(namespace) \(action.rawValue) from \(list(from)) to \(list(to))"
    }
}

/// A workload identity of the shape `spiffe://TRUST-DOMAIN/ns/NAMESPACE/sa/SERVICE-ACCOUNT`
/// (the shape policies accept; the verified peer identities come from the TLS layer).
struct SPIFFEIdentity: Equatable, CustomStringConvertible {
    var trustDomain: String
    var namespace: String
    var serviceAccount: String

    init(trustDomain: String, namespace: String, serviceAccount: String) {
        self.trustDomain = trustDomain
        self.namespace = namespace
        self.serviceAccount = serviceAccount
    }

    /// Parses exactly that shape: a trust domain of lowercase letters, digits, '.', '-',
    /// '_'; namespace and service account of letters, digits, '.', '-', '_' (not `.` or `..`).
    init?(_ uri: String) {
        guard uri.hasPrefix("spiffe://") else { return nil }
        let parts = uri.dropFirst("spiffe://".count).split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 5, parts[1] == "ns", parts[3] == "sa",
            !parts[0].isEmpty, parts[0].unicodeScalars.allSatisfy(Self.trustDomainCharacters.contains),
            Self.isSegment(parts[2]), Self.isSegment(parts[4])
        else { return nil }
        self.init(trustDomain: String(parts[0]), namespace: String(parts[2]), serviceAccount: String(parts[4]))
    }

    var description: String { "spiffe://\(trustDomain)/ns/\(namespace)/sa/\(serviceAccount)" }

    private static func isSegment(_ text: Substring) -> Bool {
        !text.isEmpty && text != "." && text != ".." && text.unicodeScalars.allSatisfy(segmentCharacters.contains)
    }

    private static let trustDomainCharacters = Set("abcdefghijklmnopqrstuvwxyz0123456789.-_".unicodeScalars)
    private static let segmentCharacters = Set(
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_".unicodeScalars
    )
}

/// Whether an inbound connection may reach its destination, and why.
public struct AuthorizationDecision: Equatable, Sendable {
    public var allowed: Bool
    /// The name of the deciding policy (nil when none decided: no policy, or no allow
    /// policy matched).
    public var policy: String?
    /// For the trace: `denied by policy deny-legacy`, `allowed (no policy)`.
    public var reason: String

    public init(allowed: Bool, policy: String?, reason: String) {
        self.allowed = allowed
        self.policy = policy
        self.reason = reason
    }
}

extension MeshSnapshot {
    /// The decision for a connection from a source (its identity and the namespace of that
    /// identity, both nil for plaintext) to a pod `destination` (address and pod port) in
    /// `destinationNamespace`. Deny wins; then, if the namespace has allow policies, one
    /// must match; without policies everything is allowed.
    public func authorize(
        sourceIdentity: String?,
        sourceNamespace: String?,
        destinationNamespace: String,
        destination: SocketAddress
    ) -> AuthorizationDecision {
        authorization.decide(
            identity: sourceIdentity,
            namespace: sourceNamespace,
            destinationNamespace: destinationNamespace,
            destination: destination
        )
    }
}

/// The policies of a snapshot, compiled for evaluation.
struct AuthorizationIndex: Sendable {
    struct Rule: Sendable {
        var identities: [String]
        var namespaces: [String]
        /// Indexes into the snapshot's services; nil: any destination. Names the snapshot
        /// does not know are left out (so a rule naming only those matches nothing).
        var services: [Int]?
        var ports: [UInt16]
        /// The decision when it matches, built once.
        var decision: AuthorizationDecision
    }

    struct Namespace: Sendable {
        var deny: [Rule] = []
        var allow: [Rule] = []
        var noMatch = AuthorizationDecision(allowed: true, policy: nil, reason: "")
    }

    static let noPolicy = AuthorizationDecision(allowed: true, policy: nil, reason: "allowed (no policy)")

    private var namespaces: [String: Namespace] = [:]
    /// Endpoint address and port to the services (indexes) that have it, for the services
    /// some policy names only.
    private var owners: [SocketAddress: [Int]] = [:]

    init(policies: [AuthorizationPolicy], services: [Service], names: [String: Int]) {
        guard !policies.isEmpty else { return }
        var named = Set<Int>()
        for policy in policies {
            var rule = Rule(
                identities: policy.fromIdentities,
                namespaces: policy.fromNamespaces,
                services: nil,
                ports: policy.toPorts,
                decision: AuthorizationDecision(
                    allowed: policy.action == .allow,
                    policy: policy.name,
                    reason: "\(policy.action == .allow ? "allowed" : "denied") by policy \(policy.name)"
                )
            )
            if !policy.toServices.isEmpty {
                let indexes = policy.toServices.compactMap { names[$0] }
                rule.services = indexes
                named.formUnion(indexes)
            }
            switch policy.action {
            case .allow: namespaces[policy.namespace, default: Namespace()].allow.append(rule)
            case .deny: namespaces[policy.namespace, default: Namespace()].deny.append(rule)
            }
        }
        for (name, rules) in namespaces {
            namespaces[name]?.noMatch =
                rules.allow.isEmpty
                ? AuthorizationDecision(
                    allowed: true,
                    policy: nil,
                    reason: "allowed (no deny policy of namespace \(name) matches)"
                )
                : AuthorizationDecision(
                    allowed: false,
                    policy: nil,
                    reason: "no allow policy of namespace \(name) matches"
                )
        }
        for s in named.sorted() {
            let service = services[s]
            for endpoint in service.endpoints {
                let addresses =
                    endpoint.address.port != 0
                    ? [endpoint.address] : service.ports.map { endpoint.address.with(port: $0.targetPort) }
                for address in addresses where owners[address]?.last != s {
                    owners[address, default: []].append(s)
                }
            }
        }
    }

    func decide(
        identity: String?,
        namespace: String?,
        destinationNamespace: String,
        destination: SocketAddress
    ) -> AuthorizationDecision {
        guard let rules = namespaces[destinationNamespace] else { return Self.noPolicy }
        var found: [Int]?
        var looked = false
        func matches(_ rule: Rule) -> Bool {
            if !rule.identities.isEmpty || !rule.namespaces.isEmpty {
                guard let identity else { return false }
                let byNamespace = namespace.map { rule.namespaces.contains($0) } ?? false
                guard byNamespace || rule.identities.contains(identity) else { return false }
            }
            if !rule.ports.isEmpty && !rule.ports.contains(destination.port) { return false }
            if let services = rule.services {
                if !looked {
                    found = owners[destination]
                    looked = true
                }
                guard let found, services.contains(where: found.contains) else { return false }
            }
            return true
        }
        for rule in rules.deny where matches(rule) { return rule.decision }
        for rule in rules.allow where matches(rule) { return rule.decision }
        return rules.noMatch
    }
}
