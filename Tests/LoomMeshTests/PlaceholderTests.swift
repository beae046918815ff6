import LoomSystem
import Testing

@testable import LoomMesh

@Suite struct SnapshotIndexTests {
    @Test func lookupFindsTheServicePortOfAVirtualIP() {
        let vip = SocketAddress(parsing: "10.96.0.10", defaultPort: 0)!
        let service = Service(
            name: "web",
            namespace: "shop",
            vips: [vip],
            ports: [ServicePort(port: 80, appProtocol: .http)],
            endpoints: []
        )
        let snapshot = MeshSnapshot(services: [service])
        #expect(snapshot.lookup(vip.with(port: 80)) == ServiceRef(service: 0, port: 0))
        #expect(snapshot.lookup(vip.with(port: 81)) == nil)
    }
}
