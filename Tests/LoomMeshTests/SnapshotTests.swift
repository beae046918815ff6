import LoomSystem
import Testing

@testable import LoomMesh

@Suite struct SnapshotTests {
    @Test func lookupFindsTheServicePortOfIPv4AndIPv6VirtualIPs() throws {
        let config = try MeshConfig.parse(
            """
            services:
              - name: web
                vips: [10.96.0.10, "fd96::10", "[fd96::11]"]
                ports: [{port: 80, protocol: http}, {port: 443, protocol: tls}]
              - name: db
                vips: [10.96.0.11]
                ports: [{port: 5432}]
            """,
            file: "loom.yaml"
        )
        let snapshot = config.snapshot
        #expect(snapshot.lookup(address("10.96.0.10", 80)) == ServiceRef(service: 0, port: 0))
        #expect(snapshot.lookup(address("10.96.0.10", 443)) == ServiceRef(service: 0, port: 1))
        #expect(snapshot.lookup(address("[fd96::10]:80")) == ServiceRef(service: 0, port: 0))
        #expect(snapshot.lookup(address("[fd96:0:0::11]:443")) == ServiceRef(service: 0, port: 1))
        #expect(snapshot.lookup(address("10.96.0.11", 5432)) == ServiceRef(service: 1, port: 0))
        #expect(snapshot.lookup(address("10.96.0.11", 80)) == nil)
        #expect(snapshot.lookup(address("[fd96::12]:80")) == nil)
        #expect(snapshot.lookup(address("10.96.0.12", 80)) == nil)
        #expect(snapshot.indexedDestinations == 7)
        #expect(snapshot.summary == "loom.yaml: 2 services, 3 ports, 0 endpoints, 0 routes")
    }

    @Test func theFirstServiceKeepsAContestedDestination() {
        let vip = address("10.96.0.10")
        let a = Service(name: "a", namespace: "x", vips: [vip], ports: [ServicePort(port: 80)], endpoints: [])
        let b = Service(name: "b", namespace: "x", vips: [vip], ports: [ServicePort(port: 80)], endpoints: [])
        #expect(MeshSnapshot(services: [a, b]).lookup(vip.with(port: 80)) == ServiceRef(service: 0, port: 0))
        #expect(MeshSnapshot.empty.lookup(vip.with(port: 80)) == nil)
        #expect(MeshSnapshot.empty.unmatchedPolicy(namespace: "x") == .passthrough)
    }

    @Test func tenThousandServicesWithTenEndpointsEachParseAndIndex() throws {
        let count = 10_000
        var yaml = "services:\n"
        yaml.reserveCapacity(count * 700)
        for i in 0..<count {
            let (hi, lo) = (i >> 8, i & 0xff)
            yaml +=
                "- name: s\(i)\n  namespace: ns\(i % 100)\n  vips: [10.96.\(hi).\(lo), fd96::\(String(i, radix: 16))]\n"
            yaml +=
                "  ports: [{port: 80, protocol: http, targetPort: 8080}, {port: 443, protocol: tls}]\n  endpoints:\n"
            for e in 0..<10 { yaml += "  - {address: 10.\(e + 1).\(hi).\(lo), weight: \(e + 1)}\n" }
        }
        let clock = ContinuousClock()
        var config: MeshConfig?
        let parse = try clock.measure { config = try MeshConfig.parse(yaml, file: "big.yaml") }
        let snapshot = try #require(config).snapshot
        var rebuilt: MeshSnapshot?
        let index = clock.measure { rebuilt = MeshSnapshot(services: snapshot.services, source: "big.yaml") }
        print("10,000 services x 10 endpoints: parsed and validated in \(parse), indexed in \(index)")

        #expect(snapshot.services.count == count)
        #expect(snapshot.services.reduce(0) { $0 + $1.endpoints.count } == count * 10)
        #expect(snapshot.indexedDestinations == count * 4)
        #expect(rebuilt?.indexedDestinations == count * 4)
        for i in stride(from: 0, to: count, by: 997) {
            let v4 = address("10.96.\(i >> 8).\(i & 0xff)", 443)
            #expect(snapshot.lookup(v4) == ServiceRef(service: i, port: 1))
            #expect(snapshot.lookup(address("[fd96::\(String(i, radix: 16))]:80")) == ServiceRef(service: i, port: 0))
            #expect(snapshot.serviceIndex(namespace: "ns\(i % 100)", name: "s\(i)") == i)
        }
        let lookups = clock.measure {
            var found = 0
            for i in 0..<count where snapshot.lookup(.v4(address: 0x0A60_0000 | UInt32(i), port: 80)) != nil {
                found += 1
            }
            #expect(found == count)
        }
        print("10,000 lookups in \(lookups)")
    }
}
