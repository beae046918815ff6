// `services:` of the mesh configuration: names, VIPs, ports, endpoints, policy and the
// routes as written (resolved against the other services in ConfigResolve.swift).
// The file format is described at the top of ConfigParser.swift.
import LoomSystem
import Yams

extension ConfigParser {
    static let serviceKeys = ["name", "namespace", "vips", "ports", "endpoints", "policy", "routes"]
    static let maxWeight = 1_000_000

    func parseServices(_ node: Node, defaults: ServicePolicy) -> [ServiceDecl] {
        guard let items = reader.list(node, "services") else { return [] }
        var decls: [ServiceDecl] = []
        decls.reserveCapacity(items.count)
        for (i, item) in items.enumerated() {
            guard let map = reader.map(item, "services[\(i)]", keys: Self.serviceKeys) else { continue }
            var name: String?
            if let node = reader.required(map, "name"), let text = reader.string(node, map.child("name")),
                checkName(text, node, map.child("name"))
            {
                name = text
            }
            var namespace: String? = "default"
            if let node = map.value("namespace") {
                namespace = reader.string(node, map.child("namespace"))
                if let text = namespace, !checkName(text, node, map.child("namespace")) { namespace = nil }
            }
            let vips = parseVIPs(map)
            let errorsBefore = reader.errorCount
            let ports = parsePorts(map)
            let portsBroken = reader.errorCount != errorsBefore
            let endpoints = parseEndpoints(map)
            let policy = map.value("policy").map { parsePolicy($0, map.child("policy"), base: defaults) } ?? defaults
            var routes: [RouteDecl] = []
            if let node = map.value("routes"), let list = reader.list(node, map.child("routes")) {
                for (r, route) in list.enumerated() {
                    if let decl = parseRoute(route, "\(map.child("routes"))[\(r)]", index: r, namespace: namespace) {
                        routes.append(decl)
                    }
                }
            }
            guard let name, let namespace else { continue }
            let service = Service(
                name: name,
                namespace: namespace,
                vips: vips.map(\.address),
                ports: ports,
                endpoints: endpoints,
                policy: policy
            )
            decls.append(
                ServiceDecl(
                    service: service,
                    spot: ConfigSpot(item, map.path),
                    nameSpot: map.spot("name"),
                    vipSpots: vips.map(\.spot),
                    routes: routes,
                    portsBroken: portsBroken
                )
            )
        }
        return decls
    }

    private func parseVIPs(_ map: ConfigMap) -> [(address: SocketAddress, spot: ConfigSpot)] {
        guard let node = map.value("vips"), let items = reader.list(node, map.child("vips")) else { return [] }
        var vips: [(address: SocketAddress, spot: ConfigSpot)] = []
        for (i, item) in items.enumerated() {
            let path = "\(map.child("vips"))[\(i)]"
            guard let text = reader.string(item, path) else { continue }
            guard SocketAddress(parsing: text) == nil else {
                reader.error(item, path, "'\(text)' has a port; a virtual IP is an address, its ports go in `ports`")
                continue
            }
            guard let address = usableAddress(text, port: 0, item, path) else { continue }
            if let first = vips.first(where: { $0.address == address }) {
                reader.error(item, path, "\(address.host) is listed twice (also \(first.spot.reference))")
                continue
            }
            vips.append((address, ConfigSpot(item, path)))
        }
        return vips
    }

    /// An IP address (IPv6 may be in brackets) that is not 0.0.0.0 or ::.
    private func usableAddress(_ text: String, port: UInt16, _ node: Node, _ path: String) -> SocketAddress? {
        guard let address = SocketAddress(parsing: text, defaultPort: port) else {
            reader.error(node, path, "'\(text)' is not an IPv4 or IPv6 address (names are not resolved)")
            return nil
        }
        guard !address.isUnspecified else {
            reader.error(node, path, "'\(text)' is the unspecified address")
            return nil
        }
        return address
    }

    private func parsePorts(_ map: ConfigMap) -> [ServicePort] {
        guard let node = map.value("ports"), let items = reader.list(node, map.child("ports")) else { return [] }
        var ports: [ServicePort] = []
        var seen: [UInt16: ConfigSpot] = [:]
        for (i, item) in items.enumerated() {
            guard let port = reader.map(item, "\(map.child("ports"))[\(i)]", keys: ["port", "protocol", "targetPort"]),
                let numberNode = reader.required(port, "port"),
                let number = reader.port(numberNode, port.child("port"))
            else { continue }
            let appProtocol: AppProtocol? =
                port.value("protocol") == nil ? .tcp : reader.choice(port, "protocol", "protocol")
            let targetPort = port.value("targetPort") == nil ? number : reader.port(port, "targetPort")
            if let first = seen[number] {
                reader.error(port.spot("port"), "port \(number) is listed twice (also \(first.reference))")
                continue
            }
            seen[number] = port.spot("port")
            guard let appProtocol, let targetPort else { continue }
            ports.append(ServicePort(port: number, appProtocol: appProtocol, targetPort: targetPort))
        }
        return ports
    }

    private func parseEndpoints(_ map: ConfigMap) -> [Endpoint] {
        guard let node = map.value("endpoints"), let items = reader.list(node, map.child("endpoints")) else {
            return []
        }
        var endpoints: [Endpoint] = []
        endpoints.reserveCapacity(items.count)
        var seen: [SocketAddress: Int] = [:]
        var total: UInt64 = 0
        for (i, item) in items.enumerated() {
            let keys = ["address", "port", "weight", "identity"]
            guard let endpoint = reader.map(item, "\(map.child("endpoints"))[\(i)]", keys: keys),
                let addressNode = reader.required(endpoint, "address"),
                let text = reader.string(addressNode, endpoint.child("address"))
            else { continue }
            let written = SocketAddress(parsing: text)
            guard var address = usableAddress(text, port: 0, addressNode, endpoint.child("address")) else { continue }
            if let portNode = endpoint.value("port") {
                guard let port = reader.port(portNode, endpoint.child("port")) else { continue }
                if let written, written.port != port {
                    reader.error(endpoint.spot("port"), "\(port) differs from the port in address '\(text)'")
                    continue
                }
                address = address.with(port: port)
            } else if let written {
                address = written
            }
            var weight: UInt32 = 1
            if let node = endpoint.value("weight") {
                guard let value = reader.int(node, endpoint.child("weight"), 1...Self.maxWeight) else { continue }
                weight = UInt32(value)
            }
            var identity: String?
            if let node = endpoint.value("identity") {
                guard let text = reader.string(node, endpoint.child("identity")), !text.isEmpty else {
                    reader.error(node, endpoint.child("identity"), "must not be empty")
                    continue
                }
                identity = text
            }
            if let first = seen[address] {
                let shown = address.port == 0 ? address.host : address.description
                reader.error(
                    addressNode,
                    endpoint.child("address"),
                    "\(shown) is listed twice (also endpoints[\(first)])"
                )
                continue
            }
            seen[address] = i
            total += UInt64(weight)
            endpoints.append(Endpoint(address: address, weight: weight, identity: identity))
        }
        if total > UInt64(UInt32.max) {
            reader.error(node, map.child("endpoints"), "the weights sum to \(total), more than \(UInt32.max)")
        }
        return endpoints
    }

    // MARK: Routes

    private func parseRoute(_ node: Node, _ path: String, index: Int, namespace: String?) -> RouteDecl? {
        guard let route = reader.map(node, path, keys: ["name", "port", "match", "to"]) else { return nil }
        var valid = true
        var name = "routes[\(index)]"
        if let node = route.value("name") {
            if let text = reader.string(node, route.child("name")), !text.isEmpty {
                name = text
            } else {
                if node.scalar != nil { reader.error(node, route.child("name"), "must not be empty") }
                valid = false
            }
        }
        var port: UInt16?
        if let node = route.value("port") {
            port = reader.port(node, route.child("port"))
            valid = valid && port != nil
        }
        var decl = RouteDecl(
            name: name,
            spot: ConfigSpot(node, path),
            nameSpot: route.spot("name"),
            port: port,
            portSpot: route.spot("port"),
            match: RouteMatch(),
            destinations: []
        )
        if let match = route.value("match"), !parseMatch(match, route.child("match"), into: &decl) {
            valid = false
        }
        guard let to = reader.required(route, "to"), let items = reader.list(to, route.child("to")) else { return nil }
        if items.isEmpty {
            reader.error(to, route.child("to"), "needs at least one destination")
            return nil
        }
        var total: UInt64 = 0
        for (i, item) in items.enumerated() {
            guard let destination = parseDestination(item, "\(route.child("to"))[\(i)]", namespace: namespace) else {
                valid = false
                continue
            }
            total += UInt64(destination.weight)
            decl.destinations.append(destination)
        }
        if total > UInt64(UInt32.max) {
            reader.error(to, route.child("to"), "the weights sum to \(total), more than \(UInt32.max)")
        }
        return valid ? decl : nil
    }

    private func parseDestination(_ node: Node, _ path: String, namespace: String?) -> DestinationDecl? {
        guard let map = reader.map(node, path, keys: ["service", "weight", "port"]),
            let serviceNode = reader.required(map, "service"),
            let text = reader.string(serviceNode, map.child("service"))
        else { return nil }
        let parts = text.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard parts.count <= 2, parts.allSatisfy({ checkName($0, serviceNode, map.child("service")) }) else {
            if parts.count > 2 {
                reader.error(serviceNode, map.child("service"), "'\(text)' is not `name` or `namespace/name`")
            }
            return nil
        }
        guard let namespace = parts.count == 2 ? parts[0] : namespace else { return nil }
        var weight: UInt32 = 1
        if let node = map.value("weight") {
            guard let value = reader.int(node, map.child("weight"), 1...Self.maxWeight) else { return nil }
            weight = UInt32(value)
        }
        var port: UInt16?
        if let node = map.value("port") {
            guard let number = reader.port(node, map.child("port")) else { return nil }
            port = number
        }
        return DestinationDecl(
            service: "\(namespace)/\(parts[parts.count - 1])",
            serviceSpot: map.spot("service"),
            port: port,
            portSpot: map.spot("port"),
            weight: weight
        )
    }

    /// Fills `decl.match`; false if a field was invalid.
    private func parseMatch(_ node: Node, _ path: String, into decl: inout RouteDecl) -> Bool {
        guard let map = reader.map(node, path, keys: ["host", "pathPrefix", "headers", "sni"]) else { return false }
        var valid = true
        for (name, _, value) in map.fields {
            let fieldPath = map.child(name)
            let spot = ConfigSpot(value, fieldPath)
            if name == "sni" {
                decl.tlsField = spot
            } else if decl.httpField == nil {
                decl.httpField = spot
            }
            switch name {
            case "sni", "host":
                guard let text = reader.string(value, fieldPath), let pattern = hostPattern(text, value, fieldPath)
                else {
                    valid = false
                    continue
                }
                if name == "sni" { decl.match.sni = pattern } else { decl.match.host = pattern }
            case "pathPrefix":
                guard let text = reader.string(value, fieldPath) else {
                    valid = false
                    continue
                }
                guard text.hasPrefix("/"),
                    !text.unicodeScalars.contains(where: { $0.value <= 0x20 || $0.value == 0x7f })
                else {
                    reader.error(value, fieldPath, "'\(text)' must start with '/' and contain no spaces")
                    valid = false
                    continue
                }
                decl.match.pathPrefix = text
            default:
                guard let headers = parseHeaders(value, fieldPath) else {
                    valid = false
                    continue
                }
                decl.match.headers = headers
            }
        }
        if let tls = decl.tlsField, decl.httpField != nil {
            reader.error(tls, "sni matches TLS and host, pathPrefix and headers match HTTP; a route cannot match both")
            valid = false
        }
        return valid
    }

    private func parseHeaders(_ node: Node, _ path: String) -> [HeaderMatch]? {
        guard let entries = reader.entries(node, path) else { return nil }
        var headers: [HeaderMatch] = []
        var valid = true
        for (written, key, value) in entries {
            let name = written.lowercased()
            let headerPath = "\(path).\(written)"
            guard !name.isEmpty, name.unicodeScalars.allSatisfy({ Self.tokenCharacters.contains($0) }) else {
                reader.error(key, headerPath, "'\(written)' is not a header name")
                valid = false
                continue
            }
            guard !headers.contains(where: { $0.name == name }) else {
                reader.error(key, headerPath, "header '\(name)' is listed twice (names ignore case)")
                valid = false
                continue
            }
            guard !value.isNull, let text = reader.string(value, headerPath) else {
                if value.isNull { reader.error(key, headerPath, "needs a value to match exactly") }
                valid = false
                continue
            }
            headers.append(HeaderMatch(name: name, value: text))
        }
        return valid ? headers : nil
    }

    /// RFC 9110 token characters (header names), lowercase.
    private static let tokenCharacters = Set("abcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+-.^_`|~".unicodeScalars)
    private static let hostCharacters = Set("abcdefghijklmnopqrstuvwxyz0123456789-_".unicodeScalars)

    /// A host or server name, lowercased: `shop.example` or `*.example`.
    private func hostPattern(_ text: String, _ node: Node, _ path: String) -> String? {
        let lower = text.lowercased()
        let name = lower.hasPrefix("*.") ? lower.dropFirst(2) : Substring(lower)
        if name.contains(":") {
            reader.error(node, path, "'\(text)' has a port; match the name alone")
            return nil
        }
        if name.contains("*") {
            reader.error(node, path, "'\(text)': a wildcard is allowed only as a leading '*.' (like *.example.com)")
            return nil
        }
        let labels = name.split(separator: ".", omittingEmptySubsequences: false)
        let valid =
            name.count <= 253
            && labels.allSatisfy {
                !$0.isEmpty && $0.count <= 63 && $0.unicodeScalars.allSatisfy(Self.hostCharacters.contains)
            }
        guard valid else {
            reader.error(node, path, "'\(text)' is not a host name (labels of letters, digits, '-', separated by '.')")
            return nil
        }
        return lower
    }
}
