// The mesh configuration file (YAML) into a `MeshConfig`. Every key is optional at the
// top level; unknown keys are errors everywhere. Errors name file:line:column and the
// field path; all of them are reported (up to 20), and nothing is loaded if there is one.
//
//   namespaces:                    # per mesh namespace; loomd also reads these for interception
//     shop:
//       intercept: true            # bool
//       fail: open                 # closed | open
//       excludeOutboundPorts: [53] # ports 1-65535
//       excludeInboundPorts: [22]
//       excludeCIDRs: [10.96.0.0/12]   # ADDRESS/LENGTH or a bare address, host bits zero
//       unmatched: passthrough     # passthrough (default) | refuse: destinations that are no service
//       accessLog: true            # one JSON line per connection to loomd's --access-log (default false)
//       mtls: strict               # permissive (default): plaintext inbound connections to the
//                                  # namespace's pods are accepted | strict: they are refused
//   pods:                          # also for interception
//     - {netns: web-1, namespace: shop, serviceAccount: web, intercept: false}   # netns required
//   defaults:                      # policy every service starts from (same keys as `policy`)
//     loadBalancing: round-robin   # round-robin | least-connections | power-of-two | ring-hash
//     connectTimeout: 5s           # durations: a whole number and ms, s, m or h (250ms, 5s, 1m)
//     retries: 2                   # 0-100
//     mtls: true                   # true (default): endpoints with an `identity` are reached through
//                                  # the node-to-node mTLS tunnel when the node has a CA | false: plaintext
//   services:
//     - name: web                  # required; letters, digits, '-', '_', '.'
//       namespace: shop            # default: default
//       vips: [10.96.0.10, fd96::10]                   # addresses without a port
//       ports:
//         - {port: 80, protocol: http, targetPort: 8080}   # protocol tcp (default) | http | tls
//         - {port: 443, protocol: tls}                     # targetPort defaults to port
//       endpoints:
//         - {address: 10.1.0.5, port: 8080, weight: 1, identity: spiffe://cluster.local/ns/shop/sa/web}
//         - {address: "[fd01::5]:8080"}    # the port may be in the address; neither: the port's targetPort
//       policy:                    # overrides `defaults` field by field (outlier too)
//         loadBalancing: least-connections
//         connectTimeout: 2s
//         retries: 1
//         maxConnections: 1000     # 1 or more; absent: no limit
//         outlier: {consecutiveFailures: 3, baseEjection: 5s, maxEjection: 5m, maxEjectionPercent: 50}
//         malformed: passthrough   # passthrough (default) | refuse: peeked first bytes that claim
//                                  # HTTP/TLS but break the rules or exceed 16 KiB
//       routes:                    # tried in file order; the first match wins
//         - name: v2-beta          # default: routes[N]; unique within the service
//           port: 80               # absent: every port of the match's protocol (sni: tls,
//                                  # host/pathPrefix/headers: http, nothing: every port)
//           match: {host: shop.example, pathPrefix: /v2, headers: {x-beta: "1"}}
//           to: [{service: web-v2, weight: 90}, {service: web-v1, weight: 10, port: 8080}]
//         - name: sni-a
//           port: 443
//           match: {sni: a.example}
//           to: [{service: backend-a}]  # weight 1-1000000, default 1; service `ns/name` or `name`
//   policies:                      # authorization of inbound connections (Istio AuthorizationPolicy, simplified)
//     - name: deny-legacy          # required, unique
//       namespace: shop            # required: the namespace of the destination pods it protects
//       action: deny               # required: allow | deny
//       from:                      # absent: any source (plaintext too); else a source matches if it has
//         identities: [spiffe://cluster.local/ns/legacy/sa/app]   # one of these identities (this shape)
//         namespaces: [legacy]     # or its identity is in one of these namespaces; plaintext never matches
//       to:                        # absent: any pod of the namespace; given both, both must match
//         services: [web]          # an endpoint (address:port) of one of them; `name` (in `namespace`) or `ns/name`
//         ports: [8080]            # the destination pod port (endpoint/target port), not the service port
//
// Rules beyond the shapes above:
// - Services are unique by namespace/name; a VIP:port belongs to one service; ports are
//   unique within a service; endpoints (address and port) too.
// - Weights are 1 or more (0 is an error: leave the entry out to send it nothing), so no
//   list of weights sums to 0; a service's or route's weights sum to at most 2^32 - 1.
// - Hosts and SNI are lowercased and may start with `*.` (`*.example.com`); header names
//   are lowercased; pathPrefix starts with '/'. A route matches TLS (sni) or HTTP
//   (host, pathPrefix, headers), not both; sni needs a tls port, the others an http port.
// - A route's `to` names known services; without `port` a destination is served on the
//   same port number, or on the destination's only port.
// - A route that an earlier route on the same port shadows (an empty match, or one that
//   accepts everything the later one does) is kept but reported as a warning
//   (`MeshConfig.warnings`): it is legal, probably a mistake, and harmless.
// - A service with no endpoints and no routes is kept; the relay refuses its connections.
// - Policies: any matching deny policy of the destination's namespace refuses a connection;
//   else, if the namespace has allow policies, one must match; a namespace without policies
//   allows everything. Namespaces named by policies must be known: keys of `namespaces`,
//   namespaces of services and pods, or `default`. Their lists must not be empty.
// - `null`/`~`/nothing counts as absent. Numbers and booleans must be plain (unquoted);
//   YAML merge keys (`<<`) are not supported. Aliases are.
import LoomSystem
import Yams

/// A service as parsed, with the places later checks point at.
struct ServiceDecl {
    var service: Service
    var spot: ConfigSpot
    var nameSpot: ConfigSpot
    /// Same order as `service.vips`.
    var vipSpots: [ConfigSpot]
    var routes: [RouteDecl]
    /// A port failed to parse: checks against this service's ports would only repeat it.
    var portsBroken: Bool
}

struct RouteDecl {
    var name: String
    var spot: ConfigSpot
    var nameSpot: ConfigSpot
    var port: UInt16?
    var portSpot: ConfigSpot
    var match: RouteMatch
    /// The sni field, if given: it needs a tls port.
    var tlsField: ConfigSpot?
    /// The first of host, pathPrefix, headers, if given: they need an http port.
    var httpField: ConfigSpot?
    var destinations: [DestinationDecl]
}

struct DestinationDecl {
    /// `namespace/name`.
    var service: String
    var serviceSpot: ConfigSpot
    var port: UInt16?
    var portSpot: ConfigSpot
    var weight: UInt32
}

struct ConfigParser {
    let reader: ConfigReader

    init(file: String) { reader = ConfigReader(file: file) }

    func parse(_ yaml: String) throws(MeshConfigError) -> MeshConfig {
        var namespaces: [String: NamespaceConfig] = [:]
        var pods: [PodConfig] = []
        var decls: [ServiceDecl] = []
        var policies: [AuthorizationPolicy] = []
        if let root = reader.compose(yaml), !root.isNull,
            let top = reader.map(root, "", keys: ["namespaces", "pods", "defaults", "services", "policies"])
        {
            if let node = top.value("namespaces") { namespaces = parseNamespaces(node) }
            if let node = top.value("pods") { pods = parsePods(node) }
            var defaults = ServicePolicy()
            if let node = top.value("defaults") { defaults = parsePolicy(node, "defaults", base: defaults) }
            if let node = top.value("services") { decls = parseServices(node, defaults: defaults) }
            if let node = top.value("policies") {
                var known: Set<String> = ["default"]
                known.formUnion(namespaces.keys)
                known.formUnion(pods.compactMap(\.namespace))
                known.formUnion(decls.map(\.service.namespace))
                policies = parseAuthorization(node, namespaces: known, services: decls)
            }
        }
        let services = resolve(decls)
        guard reader.errorCount == 0 else { throw reader.failure }
        let snapshot = MeshSnapshot(
            services: services,
            unmatched: namespaces.compactMapValues(\.unmatched),
            mtls: namespaces.compactMapValues(\.mtls),
            policies: policies,
            source: reader.file
        )
        return MeshConfig(snapshot: snapshot, namespaces: namespaces, pods: pods, warnings: reader.warnings)
    }

    // MARK: Interception

    private func parseNamespaces(_ node: Node) -> [String: NamespaceConfig] {
        let keys = [
            "intercept", "fail", "excludeOutboundPorts", "excludeInboundPorts", "excludeCIDRs", "unmatched",
            "accessLog", "mtls",
        ]
        var result: [String: NamespaceConfig] = [:]
        for (name, key, value) in reader.entries(node, "namespaces") ?? [] {
            let path = "namespaces.\(name)"
            guard checkName(name, key, path) else { continue }
            guard !value.isNull else {
                result[name] = NamespaceConfig()
                continue
            }
            guard let map = reader.map(value, path, keys: keys) else { continue }
            let intercept = reader.bool(map, "intercept")
            let fail: NamespaceConfig.FailPolicy? = reader.choice(map, "fail", "fail policy")
            let outbound = reader.ports(map, "excludeOutboundPorts")
            let inbound = reader.ports(map, "excludeInboundPorts")
            let unmatched: UnmatchedPolicy? = reader.choice(map, "unmatched", "unmatched policy")
            var cidrs: [String] = []
            if let list = map.value("excludeCIDRs"), let items = reader.list(list, map.child("excludeCIDRs")) {
                for (i, item) in items.enumerated() {
                    let itemPath = "\(map.child("excludeCIDRs"))[\(i)]"
                    guard let text = reader.string(item, itemPath) else { continue }
                    if let problem = Self.cidrProblem(text) {
                        reader.error(item, itemPath, problem)
                    } else {
                        cidrs.append(text)
                    }
                }
            }
            result[name] = NamespaceConfig(
                intercept: intercept,
                fail: fail,
                excludeOutboundPorts: outbound,
                excludeInboundPorts: inbound,
                excludeCIDRs: cidrs,
                unmatched: unmatched,
                accessLog: reader.bool(map, "accessLog"),
                mtls: reader.choice(map, "mtls", "mTLS mode")
            )
        }
        return result
    }

    private func parsePods(_ node: Node) -> [PodConfig] {
        var pods: [PodConfig] = []
        var seen: [String: ConfigSpot] = [:]
        for (i, item) in (reader.list(node, "pods") ?? []).enumerated() {
            let keys = ["netns", "namespace", "serviceAccount", "intercept"]
            guard let map = reader.map(item, "pods[\(i)]", keys: keys),
                let netnsNode = reader.required(map, "netns"),
                let netns = reader.string(netnsNode, map.child("netns"))
            else { continue }
            if let first = seen[netns] {
                reader.error(map.spot("netns"), "'\(netns)' is listed twice (also \(first.reference))")
                continue
            }
            seen[netns] = map.spot("netns")
            var namespace: String?
            if let node = map.value("namespace"), let name = reader.string(node, map.child("namespace")),
                checkName(name, node, map.child("namespace"))
            {
                namespace = name
            }
            let serviceAccount = reader.string(map, "serviceAccount")
            pods.append(
                PodConfig(
                    netns: netns,
                    namespace: namespace,
                    serviceAccount: serviceAccount,
                    intercept: reader.bool(map, "intercept")
                )
            )
        }
        return pods
    }

    /// Why `text` is not a prefix (`10.0.0.0/8`, `fd00::/8`, a bare address), or nil.
    static func cidrProblem(_ text: String) -> String? {
        let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard SocketAddress(parsing: String(parts[0])) == nil,
            let address = SocketAddress(parsing: String(parts[0]), defaultPort: 0)
        else { return "'\(text)' is not a prefix (ADDRESS/LENGTH, like 10.0.0.0/8 or fd00::/8)" }
        let bits: Int
        let hostBitsSet: (Int) -> Bool
        switch address {
        case .v4(let a, _):
            bits = 32
            hostBitsSet = { length in length < 32 && a << length != 0 }
        case .v6(let hi, let lo, _):
            bits = 128
            hostBitsSet = { length in
                length < 64 ? (hi << length != 0 || lo != 0) : (length < 128 && lo << (length - 64) != 0)
            }
        }
        guard parts.count == 2 else { return nil }
        guard let length = Int(parts[1]), (0...bits).contains(length) else {
            return "'\(text)': the prefix length must be 0 to \(bits)"
        }
        return hostBitsSet(length) ? "'\(text)' has host bits set past /\(length)" : nil
    }

    /// Namespace and service names: letters, digits, '-', '_', '.'.
    @discardableResult
    func checkName(_ name: String, _ node: Node, _ path: @autoclosure () -> String) -> Bool {
        let valid =
            !name.isEmpty && name.count <= 253
            && name.unicodeScalars.allSatisfy { $0.isASCII && (Self.nameCharacters.contains($0)) }
        if !valid { reader.error(node, path(), "'\(name)' is not a valid name (letters, digits, '-', '_', '.')") }
        return valid
    }

    private static let nameCharacters = Set(
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.".unicodeScalars
    )

    // MARK: Policy

    func parsePolicy(_ node: Node, _ path: String, base: ServicePolicy) -> ServicePolicy {
        let keys = ["loadBalancing", "connectTimeout", "retries", "maxConnections", "outlier", "malformed", "mtls"]
        guard let map = reader.map(node, path, keys: keys) else { return base }
        var policy = base
        if let value: LoadBalancing = reader.choice(map, "loadBalancing", "load balancing") {
            policy.loadBalancing = value
        }
        if let value = reader.duration(map, "connectTimeout") { policy.connectTimeoutMs = value }
        if let value = reader.int(map, "retries", 0...100) { policy.retries = value }
        if let value = reader.int(map, "maxConnections", 1...Int.max) { policy.maxConnections = value }
        if let value: MalformedPolicy = reader.choice(map, "malformed", "malformed-request policy") {
            policy.malformed = value
        }
        if let value = reader.bool(map, "mtls") { policy.mtls = value }
        if let outlier = map.value("outlier") {
            policy.outlier = parseOutlier(outlier, map.child("outlier"), base: policy.outlier)
        }
        return policy
    }

    private func parseOutlier(_ node: Node, _ path: String, base: OutlierPolicy) -> OutlierPolicy {
        let keys = ["consecutiveFailures", "baseEjection", "maxEjection", "maxEjectionPercent"]
        guard let map = reader.map(node, path, keys: keys) else { return base }
        var outlier = base
        if let value = reader.int(map, "consecutiveFailures", 1...Int.max) { outlier.consecutiveFailures = value }
        if let value = reader.duration(map, "baseEjection") { outlier.baseEjectionMs = value }
        if let value = reader.duration(map, "maxEjection") { outlier.maxEjectionMs = value }
        if let value = reader.int(map, "maxEjectionPercent", 0...100) { outlier.maxEjectionPercent = value }
        if outlier.maxEjectionMs < outlier.baseEjectionMs {
            let spot = map.value("maxEjection") != nil ? map.spot("maxEjection") : map.spot("baseEjection")
            reader.error(
                spot,
                "maxEjection (\(outlier.maxEjectionMs)ms) is shorter than baseEjection (\(outlier.baseEjectionMs)ms)"
            )
        }
        return outlier
    }
}
