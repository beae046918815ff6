// `policies:` of the mesh configuration: authorization policies, checked against the
// namespaces and services the rest of the file defines.
// The file format is described at the top of ConfigParser.swift.
import Yams

extension ConfigParser {
    static let policyKeys = ["name", "namespace", "action", "from", "to"]

    /// The policies in file order. `namespaces`: every namespace the file knows of;
    /// `services`: the services as parsed (a policy's `to.services` must name one).
    func parseAuthorization(_ node: Node, namespaces: Set<String>, services: [ServiceDecl]) -> [AuthorizationPolicy] {
        guard let items = reader.list(node, "policies") else { return [] }
        let serviceNames = Set(services.map(\.service.qualifiedName))
        var policies: [AuthorizationPolicy] = []
        var seen: [String: ConfigSpot] = [:]
        for (i, item) in items.enumerated() {
            let path = "policies[\(i)]"
            guard let map = reader.map(item, path, keys: Self.policyKeys) else { continue }
            let errorsBefore = reader.errorCount
            var name: String?
            if let node = reader.required(map, "name"), let text = reader.string(node, map.child("name")),
                checkName(text, node, map.child("name"))
            {
                if let first = seen[text] {
                    reader.error(map.spot("name"), "policy '\(text)' is defined twice (also \(first.reference))")
                } else {
                    seen[text] = ConfigSpot(item, path)
                    name = text
                }
            }
            var namespace: String?
            if let node = reader.required(map, "namespace"), let text = reader.string(node, map.child("namespace")),
                checkName(text, node, map.child("namespace")),
                checkNamespace(text, known: namespaces, node, map.child("namespace"))
            {
                namespace = text
            }
            var action: AuthorizationPolicy.Action?
            if let node = reader.required(map, "action") { action = reader.choice(node, map.child("action"), "action") }
            var policy = AuthorizationPolicy(name: name ?? "", namespace: namespace ?? "", action: action ?? .deny)
            if let node = map.value("from") { parseSources(node, map.child("from"), namespaces, into: &policy) }
            if let node = map.value("to") {
                parseTargets(node, map.child("to"), namespace: namespace, serviceNames, services, into: &policy)
            }
            if reader.errorCount == errorsBefore { policies.append(policy) }
        }
        return policies
    }

    private func parseSources(
        _ node: Node,
        _ path: String,
        _ known: Set<String>,
        into policy: inout AuthorizationPolicy
    ) {
        guard let map = reader.map(node, path, keys: ["identities", "namespaces"]) else { return }
        guard !map.fields.isEmpty else {
            reader.error(node, path, "lists no source: give identities, namespaces or both, or leave `from` out")
            return
        }
        for (i, item) in nonEmptyList(map, "identities").enumerated() {
            let itemPath = "\(map.child("identities"))[\(i)]"
            guard let text = reader.string(item, itemPath) else { continue }
            guard SPIFFEIdentity(text) != nil else {
                reader.error(
                    item,
                    itemPath,
                    "'\(text)' is not a SPIFFE identity (spiffe://TRUST-DOMAIN/ns/NAMESPACE/sa/SERVICE-ACCOUNT)"
                )
                continue
            }
            policy.fromIdentities.append(text)
        }
        for (i, item) in nonEmptyList(map, "namespaces").enumerated() {
            let itemPath = "\(map.child("namespaces"))[\(i)]"
            guard let text = reader.string(item, itemPath), checkName(text, item, itemPath),
                checkNamespace(text, known: known, item, itemPath)
            else { continue }
            policy.fromNamespaces.append(text)
        }
    }

    private func parseTargets(
        _ node: Node,
        _ path: String,
        namespace: String?,
        _ serviceNames: Set<String>,
        _ services: [ServiceDecl],
        into policy: inout AuthorizationPolicy
    ) {
        guard let map = reader.map(node, path, keys: ["services", "ports"]) else { return }
        guard !map.fields.isEmpty else {
            reader.error(node, path, "lists no destination: give services, ports or both, or leave `to` out")
            return
        }
        for (i, item) in nonEmptyList(map, "services").enumerated() {
            let itemPath = "\(map.child("services"))[\(i)]"
            guard let text = reader.string(item, itemPath) else { continue }
            let parts = text.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
            guard parts.count <= 2 else {
                reader.error(item, itemPath, "'\(text)' is not `name` or `namespace/name`")
                continue
            }
            // A bad policy namespace is reported already; its services cannot be looked up.
            guard parts.allSatisfy({ checkName($0, item, itemPath) }),
                let owner = parts.count == 2 ? parts[0] : namespace
            else { continue }
            let qualified = "\(owner)/\(parts[parts.count - 1])"
            guard serviceNames.contains(qualified) else {
                var hint: String?
                if reader.keepsMore {
                    let candidates = services.filter { $0.service.namespace == owner }.map(\.service.qualifiedName)
                    hint = ConfigReader.suggestion(for: qualified, among: candidates)
                }
                reader.error(
                    item,
                    itemPath,
                    "unknown service \(qualified)" + (hint.map { " (did you mean \($0)?)" } ?? "")
                )
                continue
            }
            policy.toServices.append(qualified)
        }
        for (i, item) in nonEmptyList(map, "ports").enumerated() {
            if let port = reader.port(item, "\(map.child("ports"))[\(i)]") { policy.toPorts.append(port) }
        }
    }

    /// The items of list field `name`, if given; an empty list is an error.
    private func nonEmptyList(_ map: ConfigMap, _ name: String) -> [Node] {
        guard let node = map.value(name), let items = reader.list(node, map.child(name)) else { return [] }
        if items.isEmpty { reader.error(node, map.child(name), "is empty: list at least one, or leave the field out") }
        return items
    }

    /// True if `name` is a namespace the configuration knows of; an error naming them if not.
    private func checkNamespace(_ name: String, known: Set<String>, _ node: Node, _ path: String) -> Bool {
        guard !known.contains(name) else { return true }
        let sorted = known.sorted()
        let suggestion = reader.keepsMore ? ConfigReader.suggestion(for: name, among: sorted) : nil
        let hint = suggestion.map { "did you mean '\($0)'? " } ?? ""
        let shown = sorted.prefix(20).joined(separator: ", ") + (sorted.count > 20 ? ", ..." : "")
        reader.error(node, path, "unknown namespace '\(name)' (\(hint)known: \(shown))")
        return false
    }
}
