import Foundation
import LoomSystem
import Testing

@testable import LoomMesh

/// The example of the file format, complete with the services its routes name.
let exampleYAML = """
    namespaces:
      shop:
        intercept: true
        fail: open
        excludeOutboundPorts: [53]
        excludeInboundPorts: [22]
        excludeCIDRs: [10.96.0.0/12]
        unmatched: refuse
    pods:
      - {netns: web-1, namespace: shop, serviceAccount: web, intercept: false}
    defaults:
      loadBalancing: round-robin
      connectTimeout: 5s
      retries: 2
    services:
      - name: web
        namespace: shop
        vips: [10.96.0.10, fd96::10]
        ports:
          - {port: 80, protocol: http, targetPort: 8080}
          - {port: 443, protocol: tls}
        endpoints:
          - {address: 10.1.0.5, port: 8080, weight: 1, identity: spiffe://cluster.local/ns/shop/sa/web}
          - {address: "[fd01::5]:8080"}
        policy:
          loadBalancing: least-connections
          connectTimeout: 2s
          retries: 1
          maxConnections: 1000
          outlier: {consecutiveFailures: 3, baseEjection: 5s, maxEjection: 5m, maxEjectionPercent: 50}
        routes:
          - name: v2-beta
            port: 80
            match: {host: Shop.Example, pathPrefix: /v2, headers: {X-Beta: "1"}}
            to: [{service: web-v2, weight: 90}, {service: web-v1, weight: 10, port: 8080}]
          - name: sni-a
            port: 443
            match: {sni: a.example}
            to: [{service: backend-a}]
      - name: web-v2
        namespace: shop
        ports: [{port: 80, protocol: http}]
        endpoints: [{address: 10.1.1.1}]
      - name: web-v1
        namespace: shop
        ports: [{port: 8080}]
        endpoints: [{address: 10.1.2.1}]
      - name: backend-a
        namespace: shop
        vips: [10.96.0.20]
        ports: [{port: 8443, protocol: tls}]
      - name: idle
    """

func address(_ text: String, _ port: UInt16 = 0) -> SocketAddress { SocketAddress(parsing: text, defaultPort: port)! }

/// The configuration's errors as text, or "" if it loaded.
func configErrors(_ yaml: String) -> String {
    do {
        _ = try MeshConfig.parse(yaml, file: "loom.yaml")
        return ""
    } catch {
        return error.description
    }
}

@Suite struct ConfigExampleTests {
    @Test func theExampleParsesIntoTheModel() throws {
        let config = try MeshConfig.parse(exampleYAML, file: "loom.yaml")
        #expect(config.warnings.isEmpty)
        #expect(
            config.namespaces == [
                "shop": NamespaceConfig(
                    intercept: true,
                    fail: .open,
                    excludeOutboundPorts: [53],
                    excludeInboundPorts: [22],
                    excludeCIDRs: ["10.96.0.0/12"],
                    unmatched: .refuse
                )
            ]
        )
        #expect(config.pods == [PodConfig(netns: "web-1", namespace: "shop", serviceAccount: "web", intercept: false)])

        let snapshot = config.snapshot
        #expect(snapshot.source == "loom.yaml")
        #expect(
            snapshot.services.map(\.qualifiedName) == [
                "shop/web", "shop/web-v2", "shop/web-v1", "shop/backend-a", "default/idle",
            ]
        )
        #expect(snapshot.unmatchedPolicy(namespace: "shop") == .refuse)
        #expect(snapshot.unmatchedPolicy(namespace: "other") == .passthrough)

        let web = snapshot.services[0]
        #expect(web.vips == [address("10.96.0.10"), address("fd96::10")])
        #expect(
            web.endpoints == [
                Endpoint(
                    address: address("10.1.0.5", 8080),
                    weight: 1,
                    identity: "spiffe://cluster.local/ns/shop/sa/web"
                ),
                Endpoint(address: address("[fd01::5]:8080")),
            ]
        )
        #expect(
            web.policy
                == ServicePolicy(
                    loadBalancing: .leastConnections,
                    connectTimeoutMs: 2_000,
                    retries: 1,
                    maxConnections: 1_000,
                    outlier: OutlierPolicy(
                        consecutiveFailures: 3,
                        baseEjectionMs: 5_000,
                        maxEjectionMs: 300_000,
                        maxEjectionPercent: 50
                    )
                )
        )
        let beta = Route(
            name: "v2-beta",
            match: RouteMatch(
                host: "shop.example",
                pathPrefix: "/v2",
                headers: [HeaderMatch(name: "x-beta", value: "1")]
            ),
            destinations: [
                WeightedDestination(service: 1, port: 80, weight: 90),
                WeightedDestination(service: 2, port: 8080, weight: 10),
            ]
        )
        let sni = Route(
            name: "sni-a",
            match: RouteMatch(sni: "a.example"),
            destinations: [WeightedDestination(service: 3, port: 8443, weight: 1)]
        )
        #expect(
            web.ports == [
                ServicePort(port: 80, appProtocol: .http, targetPort: 8080, routes: [beta]),
                ServicePort(port: 443, appProtocol: .tls, routes: [sni]),
            ]
        )
        // Defaults reach services without a policy; endpoints without a port use targetPort.
        #expect(
            snapshot.services[1].policy
                == ServicePolicy(loadBalancing: .roundRobin, connectTimeoutMs: 5_000, retries: 2)
        )
        #expect(snapshot.services[1].endpoints == [Endpoint(address: address("10.1.1.1"))])
        // A service with no endpoints and no routes is kept.
        #expect(snapshot.services[4] == Service(name: "idle", namespace: "default", vips: [], ports: [], endpoints: []))

        #expect(snapshot.lookup(address("10.96.0.10", 80)) == ServiceRef(service: 0, port: 0))
        #expect(snapshot.lookup(address("[fd96::10]:443")) == ServiceRef(service: 0, port: 1))
        #expect(snapshot.lookup(address("10.96.0.20", 8443)) == ServiceRef(service: 3, port: 0))
        #expect(snapshot.lookup(address("10.96.0.10", 8080)) == nil)
        #expect(snapshot.serviceIndex(namespace: "shop", name: "web-v1") == 2)
        #expect(snapshot.describe().contains("route v2-beta host=shop.example path=/v2 x-beta=1 -> shop/web-v2:80*90"))
    }

    @Test func anEmptyFileIsAnEmptyMesh() throws {
        for text in ["", "# nothing\n", "services: []\n", "services:\n"] {
            let config = try MeshConfig.parse(text, file: "loom.yaml")
            #expect(config.snapshot.services.isEmpty && config.namespaces.isEmpty && config.pods.isEmpty)
        }
    }

    @Test func routesWithoutAPortApplyToEveryPortOfTheirProtocol() throws {
        let config = try MeshConfig.parse(
            """
            services:
              - name: web
                ports: [{port: 80, protocol: http}, {port: 8080, protocol: http}, {port: 443, protocol: tls}, {port: 22}]
                routes:
                  - {name: beta, match: {headers: {x-beta: "1"}}, to: [{service: beta}]}
                  - {name: a, match: {sni: "*.A.example"}, to: [{service: beta}]}
                  - {name: all, to: [{service: beta, port: 9000}]}
              - name: beta
                ports: [{port: 80}, {port: 8080}, {port: 443}, {port: 9000}]
            """,
            file: "loom.yaml"
        )
        let ports = config.snapshot.services[0].ports
        #expect(ports.map { $0.routes.map(\.name) } == [["beta", "all"], ["beta", "all"], ["a", "all"], ["all"]])
        #expect(ports[1].routes[0].destinations == [WeightedDestination(service: 1, port: 8080, weight: 1)])
        #expect(ports[2].routes[0].match.sni == "*.a.example")
        #expect(ports[3].routes[0].destinations == [WeightedDestination(service: 1, port: 9000, weight: 1)])
    }

    @Test func aDestinationWithOnePortIsServedOnIt() throws {
        let config = try MeshConfig.parse(
            "services:\n- {name: a, ports: [{port: 80}], routes: [{to: [{service: other/b}]}]}\n"
                + "- {name: b, namespace: other, ports: [{port: 9090}]}\n",
            file: "loom.yaml"
        )
        #expect(config.snapshot.services[0].ports[0].routes[0].name == "routes[0]")
        #expect(config.snapshot.services[0].ports[0].routes[0].destinations[0].port == 9090)
    }

    @Test func shadowedRoutesAreWarningsNotErrors() throws {
        let config = try MeshConfig.parse(
            """
            services:
              - name: web
                ports: [{port: 80, protocol: http}]
                routes:
                  - {name: v2, match: {pathPrefix: /v2/}, to: [{service: web}]}
                  - {name: v2-beta, match: {pathPrefix: /v2/beta, headers: {x-beta: "1"}}, to: [{service: web}]}
                  - {name: v2x, match: {pathPrefix: /v2x}, to: [{service: web}]}
                  - {name: everything, to: [{service: web}]}
                  - {name: late, match: {host: a.example}, to: [{service: web}]}
            """,
            file: "loom.yaml"
        )
        #expect(config.snapshot.services[0].ports[0].routes.count == 5)
        #expect(
            config.warnings.map(\.description) == [
                "loom.yaml:6:9: services[0].routes[1]: route 'v2-beta' never matches on port 80: route 'v2' before it "
                    + "accepts every connection it would",
                "loom.yaml:9:9: services[0].routes[4]: route 'late' never matches on port 80: route 'everything' before "
                    + "it accepts every connection it would",
            ]
        )
    }

    @Test func endpointPortsComeFromTheFieldTheAddressOrTheServicePort() throws {
        let config = try MeshConfig.parse(
            """
            services:
              - name: web
                ports: [{port: 80, targetPort: 8080}]
                endpoints:
                  - {address: 10.0.0.1, port: 81}
                  - {address: "10.0.0.2:82"}
                  - {address: "10.0.0.3:83", port: 83}
                  - {address: 10.0.0.4}
                  - {address: "[fd00::5]"}
                  - {address: fd00::6, port: 86}
            """,
            file: "loom.yaml"
        )
        #expect(
            config.snapshot.services[0].endpoints.map(\.address) == [
                address("10.0.0.1", 81), address("10.0.0.2", 82), address("10.0.0.3", 83), address("10.0.0.4"),
                address("fd00::5"), address("fd00::6", 86),
            ]
        )
    }

    @Test func sourcesLoadFilesAndText() throws {
        let path = "/tmp/loom-mesh-config-\(getpid()).yaml"
        #expect(FileManager.default.createFile(atPath: path, contents: Data(exampleYAML.utf8)))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let source: any MeshSource = FileMeshSource(path: path)
        #expect(source.name == path)
        #expect(try source.load().snapshot.services.count == 5)
        #expect(try TextMeshSource(name: "inline", yaml: exampleYAML).load().snapshot.source == "inline")
        #expect(throws: MeshConfigError.self) { try FileMeshSource(path: path + ".missing").load() }
        do {
            _ = try FileMeshSource(path: path + ".missing").load()
        } catch {
            #expect(error.description.hasPrefix("\(path).missing: cannot read it"))
        }
    }
}
