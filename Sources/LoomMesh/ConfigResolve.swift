// Checks across services: unique names, one owner per VIP:port, routes attached to the
// ports they can match on, destinations that exist, and routes that can never match.
import LoomSystem

extension ConfigParser {
    /// The services to publish, in file order, with their routes resolved.
    func resolve(_ decls: [ServiceDecl]) -> [Service] {
        var byName: [String: Int] = [:]
        byName.reserveCapacity(decls.count)
        var kept: [Int] = []
        kept.reserveCapacity(decls.count)
        for (i, decl) in decls.enumerated() {
            let name = decl.service.qualifiedName
            if let first = byName[name] {
                reader.error(decl.nameSpot, "\(name) is defined twice (first at \(decls[first].spot.reference))")
            } else {
                byName[name] = kept.count
                kept.append(i)
            }
        }
        let live = kept.map { decls[$0] }
        checkVIPs(live)
        var services = live.map(\.service)
        var origins: [[[Int]]] = services.map { $0.ports.map { _ in [] } }
        for (s, decl) in live.enumerated() {
            for (r, route) in decl.routes.enumerated() {
                attach(route, of: s, in: live, byName: byName, to: &services, origins: &origins[s], routeIndex: r)
            }
        }
        warnShadowedRoutes(services, live, origins)
        return services
    }

    /// A VIP and port may belong to one service only.
    private func checkVIPs(_ decls: [ServiceDecl]) {
        var owners: [SocketAddress: (service: Int, vip: Int)] = [:]
        owners.reserveCapacity(decls.reduce(0) { $0 + $1.service.vips.count * $1.service.ports.count })
        for (s, decl) in decls.enumerated() {
            for (v, vip) in decl.service.vips.enumerated() {
                var reported: Set<Int> = []
                for port in decl.service.ports {
                    let key = vip.with(port: port.port)
                    guard let owner = owners[key] else {
                        owners[key] = (s, v)
                        continue
                    }
                    guard reported.insert(owner.service).inserted else { continue }
                    let other = decls[owner.service]
                    reader.error(
                        decl.vipSpots[v],
                        "\(key) belongs to both \(other.service.qualifiedName) "
                            + "(\(other.vipSpots[owner.vip].reference)) and \(decl.service.qualifiedName)"
                    )
                }
            }
        }
    }

    /// Adds `route` to the ports of service `s` it applies to, with its destinations resolved.
    private func attach(
        _ route: RouteDecl,
        of s: Int,
        in decls: [ServiceDecl],
        byName: [String: Int],
        to services: inout [Service],
        origins: inout [[Int]],
        routeIndex: Int
    ) {
        let decl = decls[s]
        let ports = decl.service.ports
        let name = decl.service.qualifiedName
        if let earlier = decl.routes[..<routeIndex].first(where: { $0.name == route.name }) {
            reader.error(route.nameSpot, "route '\(route.name)' is defined twice (also \(earlier.spot.reference))")
        }
        let needed: AppProtocol? = route.tlsField != nil ? .tls : (route.httpField != nil ? .http : nil)
        var targets: [Int]
        if let number = route.port {
            guard let index = ports.firstIndex(where: { $0.port == number }) else {
                if !decl.portsBroken {
                    reader.error(route.portSpot, "\(name) has no port \(number) (\(Self.portList(ports)))")
                }
                return
            }
            if let needed, ports[index].appProtocol != needed, let field = route.tlsField ?? route.httpField {
                let what = field.path.split(separator: ".").last.map(String.init) ?? "match"
                reader.error(
                    field,
                    "\(what) needs a port with protocol \(needed.rawValue), and port \(number) is "
                        + ports[index].appProtocol.rawValue
                )
                return
            }
            targets = [index]
        } else {
            targets = ports.indices.filter { needed == nil || ports[$0].appProtocol == needed }
            if targets.isEmpty && !decl.portsBroken {
                let what = needed.map { "no port with protocol \($0.rawValue)" } ?? "no ports"
                reader.error(route.spot, "\(name) has \(what) for this route to apply to")
                return
            }
        }
        var perPort = [[WeightedDestination]](repeating: [], count: targets.count)
        for destination in route.destinations {
            guard let t = byName[destination.service] else {
                var hint: String?
                if reader.keepsMore {
                    let namespace = destination.service.prefix { $0 != "/" }
                    let candidates = decls.filter { $0.service.namespace == namespace }.map(\.service.qualifiedName)
                    hint = ConfigReader.suggestion(for: destination.service, among: candidates)
                }
                reader.error(
                    destination.serviceSpot,
                    "unknown service \(destination.service)" + (hint.map { " (did you mean \($0)?)" } ?? "")
                )
                continue
            }
            let target = decls[t].service
            guard !decls[t].portsBroken else { continue }
            for (k, index) in targets.enumerated() {
                guard let port = destinationPort(destination, target, serving: ports[index].port) else { break }
                perPort[k].append(WeightedDestination(service: t, port: port, weight: destination.weight))
            }
        }
        for (k, index) in targets.enumerated() where perPort[k].count == route.destinations.count {
            services[s].ports[index].routes.append(
                Route(name: route.name, match: route.match, destinations: perPort[k])
            )
            origins[index].append(routeIndex)
        }
    }

    /// The port of `target` a destination goes to from service port `own`; nil after an error.
    private func destinationPort(_ destination: DestinationDecl, _ target: Service, serving own: UInt16) -> UInt16? {
        let numbers = target.ports.map(\.port)
        if let port = destination.port {
            if numbers.contains(port) { return port }
            reader.error(
                destination.portSpot,
                "\(target.qualifiedName) has no port \(port) (\(Self.portList(target.ports)))"
            )
            return nil
        }
        if numbers.contains(own) { return own }
        if numbers.count == 1 { return numbers[0] }
        reader.error(
            destination.serviceSpot,
            "\(target.qualifiedName) has no port \(own) (\(Self.portList(target.ports))); say which with `port`"
        )
        return nil
    }

    private static func portList(_ ports: [ServicePort]) -> String {
        ports.isEmpty ? "it has none" : "its ports: " + ports.map { String($0.port) }.joined(separator: ", ")
    }

    /// A warning for each route an earlier route on the same port always beats.
    private func warnShadowedRoutes(_ services: [Service], _ decls: [ServiceDecl], _ origins: [[[Int]]]) {
        for (s, service) in services.enumerated() {
            var warned: Set<Int> = []
            for (p, port) in service.ports.enumerated() {
                let routes = port.routes
                for j in routes.indices {
                    guard let i = routes[..<j].firstIndex(where: { $0.match.shadows(routes[j].match) }) else {
                        continue
                    }
                    guard warned.insert(origins[s][p][j]).inserted else { continue }
                    reader.warning(
                        decls[s].routes[origins[s][p][j]].spot,
                        "route '\(routes[j].name)' never matches on port \(port.port): route '\(routes[i].name)' "
                            + "before it accepts every connection it would"
                    )
                }
            }
        }
    }
}

extension RouteMatch {
    /// True when every connection `later` accepts is accepted by this match too (so a route
    /// with `later` placed after this one never matches). Conservative: false when unsure.
    func shadows(_ later: RouteMatch) -> Bool {
        Self.nameCovers(sni, later.sni) && Self.nameCovers(host, later.host)
            && Self.pathCovers(pathPrefix, later.pathPrefix)
            && headers.allSatisfy { later.headers.contains($0) }
    }

    private static func nameCovers(_ pattern: String?, _ other: String?) -> Bool {
        guard let pattern else { return true }
        guard let other else { return false }
        if pattern == other { return true }
        guard pattern.hasPrefix("*.") else { return false }
        let suffix = pattern.dropFirst()  // ".example.com"
        return other.count > suffix.count && other.hasSuffix(suffix)
    }

    private static func pathCovers(_ prefix: String?, _ other: String?) -> Bool {
        guard let prefix else { return true }
        guard let other, other.hasPrefix(prefix) else { return false }
        return other.count == prefix.count || prefix.hasSuffix("/") || other.dropFirst(prefix.count).hasPrefix("/")
    }
}
