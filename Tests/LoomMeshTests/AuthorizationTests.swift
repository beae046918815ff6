import LoomSystem
import Testing

@testable import LoomMesh

/// Namespaces with mTLS modes, services whose endpoints policies name, and policies.
private let meshYAML = """
    namespaces:
      shop: {mtls: strict}
      frontend: {mtls: permissive}
      legacy: {}
    pods:
      - {netns: ops-1, namespace: ops}
    defaults:
      mtls: false
    services:
      - name: web
        namespace: shop
        ports: [{port: 80, protocol: http, targetPort: 8080}, {port: 9090}]
        endpoints:
          - {address: 10.1.0.5, port: 8080, identity: spiffe://cluster.local/ns/shop/sa/web}
          - {address: "[fd01::5]:8080"}
          - {address: 10.1.0.6}
        policy: {mtls: true}
      - name: db
        namespace: data
        ports: [{port: 5432}]
        endpoints: [{address: 10.2.0.1}]
    policies:
      - name: deny-legacy
        namespace: shop
        action: deny
        from: {identities: [spiffe://cluster.local/ns/legacy/sa/app], namespaces: [legacy]}
        to: {services: [web], ports: [8080]}
      - {name: allow-frontend, namespace: shop, action: allow, from: {namespaces: [frontend, legacy]}}
      - {name: allow-metrics, namespace: shop, action: allow, to: {ports: [9090]}}
      - name: allow-data
        namespace: data
        action: allow
        from: {identities: [spiffe://cluster.local/ns/shop/sa/web]}
        to: {services: [data/db]}
      - {name: deny-all, namespace: legacy, action: deny}
      - {name: no-ssh, namespace: ops, action: deny, to: {ports: [22]}}
    """

private let shopWeb = "spiffe://cluster.local/ns/shop/sa/web"
private let legacyApp = "spiffe://cluster.local/ns/legacy/sa/app"

/// One row of the evaluation table.
struct AuthorizationCase: CustomTestStringConvertible, Sendable {
    var name: String
    var identity: String?
    var namespace: String?
    var to: String
    var destination: String
    var allowed: Bool
    var policy: String?
    var reason: String
    var testDescription: String { name }
}

private let table: [AuthorizationCase] = [
    AuthorizationCase(
        name: "deny wins over a matching allow",
        identity: legacyApp,
        namespace: "legacy",
        to: "shop",
        destination: "10.1.0.5:8080",
        allowed: false,
        policy: "deny-legacy",
        reason: "denied by policy deny-legacy"
    ),
    AuthorizationCase(
        name: "a source matches by namespace alone, on an IPv6 endpoint",
        identity: "spiffe://cluster.local/ns/legacy/sa/other",
        namespace: "legacy",
        to: "shop",
        destination: "[fd01::5]:8080",
        allowed: false,
        policy: "deny-legacy",
        reason: "denied by policy deny-legacy"
    ),
    AuthorizationCase(
        name: "an endpoint without a port is one on each target port",
        identity: legacyApp,
        namespace: "legacy",
        to: "shop",
        destination: "10.1.0.6:8080",
        allowed: false,
        policy: "deny-legacy",
        reason: "denied by policy deny-legacy"
    ),
    AuthorizationCase(
        name: "the deny's port does not match, an allow does",
        identity: legacyApp,
        namespace: "legacy",
        to: "shop",
        destination: "10.1.0.6:9090",
        allowed: true,
        policy: "allow-frontend",
        reason: "allowed by policy allow-frontend"
    ),
    AuthorizationCase(
        name: "not an endpoint of the deny's service",
        identity: legacyApp,
        namespace: "legacy",
        to: "shop",
        destination: "10.9.9.9:8080",
        allowed: true,
        policy: "allow-frontend",
        reason: "allowed by policy allow-frontend"
    ),
    AuthorizationCase(
        name: "an allowed namespace",
        identity: "spiffe://cluster.local/ns/frontend/sa/ui",
        namespace: "frontend",
        to: "shop",
        destination: "10.1.0.5:8080",
        allowed: true,
        policy: "allow-frontend",
        reason: "allowed by policy allow-frontend"
    ),
    AuthorizationCase(
        name: "no allow policy matches",
        identity: "spiffe://cluster.local/ns/ops/sa/x",
        namespace: "ops",
        to: "shop",
        destination: "10.1.0.5:8080",
        allowed: false,
        policy: nil,
        reason: "no allow policy of namespace shop matches"
    ),
    AuthorizationCase(
        name: "plaintext matches no from, not even a deny",
        identity: nil,
        namespace: nil,
        to: "shop",
        destination: "10.1.0.5:8080",
        allowed: false,
        policy: nil,
        reason: "no allow policy of namespace shop matches"
    ),
    AuthorizationCase(
        name: "a namespace without an identity is plaintext",
        identity: nil,
        namespace: "frontend",
        to: "shop",
        destination: "10.1.0.5:8080",
        allowed: false,
        policy: nil,
        reason: "no allow policy of namespace shop matches"
    ),
    AuthorizationCase(
        name: "a ports-only allow admits plaintext",
        identity: nil,
        namespace: nil,
        to: "shop",
        destination: "10.1.0.6:9090",
        allowed: true,
        policy: "allow-metrics",
        reason: "allowed by policy allow-metrics"
    ),
    AuthorizationCase(
        name: "identity and service",
        identity: shopWeb,
        namespace: "shop",
        to: "data",
        destination: "10.2.0.1:5432",
        allowed: true,
        policy: "allow-data",
        reason: "allowed by policy allow-data"
    ),
    AuthorizationCase(
        name: "identity but not the service's endpoint",
        identity: shopWeb,
        namespace: "shop",
        to: "data",
        destination: "10.2.0.1:5433",
        allowed: false,
        policy: nil,
        reason: "no allow policy of namespace data matches"
    ),
    AuthorizationCase(
        name: "another identity of the same namespace",
        identity: "spiffe://cluster.local/ns/shop/sa/api",
        namespace: "shop",
        to: "data",
        destination: "10.2.0.1:5432",
        allowed: false,
        policy: nil,
        reason: "no allow policy of namespace data matches"
    ),
    AuthorizationCase(
        name: "a deny without from or to refuses plaintext too",
        identity: nil,
        namespace: nil,
        to: "legacy",
        destination: "10.3.0.1:80",
        allowed: false,
        policy: "deny-all",
        reason: "denied by policy deny-all"
    ),
    AuthorizationCase(
        name: "a ports-only deny",
        identity: shopWeb,
        namespace: "shop",
        to: "ops",
        destination: "[fd02::1]:22",
        allowed: false,
        policy: "no-ssh",
        reason: "denied by policy no-ssh"
    ),
    AuthorizationCase(
        name: "only deny policies, none matches",
        identity: nil,
        namespace: nil,
        to: "ops",
        destination: "10.4.0.1:80",
        allowed: true,
        policy: nil,
        reason: "allowed (no deny policy of namespace ops matches)"
    ),
    AuthorizationCase(
        name: "a namespace without policies",
        identity: legacyApp,
        namespace: "legacy",
        to: "frontend",
        destination: "10.5.0.1:80",
        allowed: true,
        policy: nil,
        reason: "allowed (no policy)"
    ),
]

/// Configurations with mTLS or policy mistakes, and lines their error text must contain.
private let badPolicyConfigs: [BadConfig] = [
    BadConfig(
        name: "mtls values",
        yaml:
            "namespaces:\n  shop: {mtls: STRICT}\ndefaults:\n  mtls: yes\nservices:\n- {name: a, policy: {mtls: 1}}\n",
        expected: [
            "loom.yaml:2:16: namespaces.shop.mtls: unknown mTLS mode 'STRICT' (did you mean 'strict'?)",
            "loom.yaml:4:9: defaults.mtls: expected true or false, got 'yes'",
            "loom.yaml:6:28: services[0].policy.mtls: expected true or false, got '1'",
        ]
    ),
    BadConfig(
        name: "unknown namespaces",
        yaml: """
            namespaces: {shop: {}}
            pods: [{netns: p, namespace: ops}]
            services: [{name: db, namespace: data}]
            policies:
              - {name: a, namespace: shpo, action: allow}
              - {name: b, namespace: shop, action: allow, from: {namespaces: [legacy, default]}}
            """,
        expected: [
            "loom.yaml:5:26: policies[0].namespace: unknown namespace 'shpo' (did you mean 'shop'? "
                + "known: data, default, ops, shop)",
            "loom.yaml:6:67: policies[1].from.namespaces[0]: unknown namespace 'legacy' (known: data, default, ops, shop)",
        ]
    ),
    BadConfig(
        name: "unknown services",
        yaml: """
            services: [{name: web, namespace: shop}, {name: db, namespace: data}]
            policies:
              - {name: a, namespace: shop, action: deny, to: {services: [wbe, data/web, shop/db, a/b/c]}}
            """,
        expected: [
            "loom.yaml:3:62: policies[0].to.services[0]: unknown service shop/wbe (did you mean shop/web?)",
            "loom.yaml:3:67: policies[0].to.services[1]: unknown service data/web (did you mean data/db?)",
            "loom.yaml:3:77: policies[0].to.services[2]: unknown service shop/db (did you mean shop/web?)",
            "loom.yaml:3:86: policies[0].to.services[3]: 'a/b/c' is not `name` or `namespace/name`",
        ]
    ),
    BadConfig(
        name: "bad identities",
        yaml: """
            policies:
            - name: a
              namespace: default
              action: allow
              from:
                identities:
                - spiffe://cluster.local/ns/shop/sa/web/extra
                - spiffe://cluster.local/ns/shop
                - spiffe://Cluster.Local/ns/shop/sa/web
                - spiffe:///ns/shop/sa/web
                - http://cluster.local/ns/shop/sa/web
                - shop/web
                - spiffe://cluster.local/ns//sa/web
                - spiffe://cluster.local/namespace/shop/sa/web
            """,
        expected: [
            "loom.yaml:7:7: policies[0].from.identities[0]: 'spiffe://cluster.local/ns/shop/sa/web/extra' is not a SPIFFE "
                + "identity (spiffe://TRUST-DOMAIN/ns/NAMESPACE/sa/SERVICE-ACCOUNT)",
            "loom.yaml:8:7: policies[0].from.identities[1]: 'spiffe://cluster.local/ns/shop' is not a SPIFFE identity",
            "loom.yaml:9:7: policies[0].from.identities[2]:",
            "loom.yaml:10:7: policies[0].from.identities[3]:",
            "loom.yaml:11:7: policies[0].from.identities[4]:",
            "loom.yaml:12:7: policies[0].from.identities[5]: 'shop/web' is not a SPIFFE identity",
            "loom.yaml:13:7: policies[0].from.identities[6]:",
            "loom.yaml:14:7: policies[0].from.identities[7]:",
        ]
    ),
    BadConfig(
        name: "actions and required fields",
        yaml: """
            policies:
              - {name: a, namespace: default, action: permit}
              - {namespace: default}
              - {name: "bad name", namespace: default, action: deny, colour: red}
            """,
        expected: [
            "loom.yaml:2:43: policies[0].action: unknown action 'permit' (expected allow, deny)",
            "loom.yaml:3:5: policies[1].name: missing (required)",
            "loom.yaml:3:5: policies[1].action: missing (required)",
            "loom.yaml:4:12: policies[2].name: 'bad name' is not a valid name",
            "loom.yaml:4:58: policies[2].colour: unknown field 'colour' (known: name, namespace, action, from, to)",
        ]
    ),
    BadConfig(
        name: "duplicate policy name",
        yaml: """
            policies:
              - {name: a, namespace: default, action: allow}
              - {name: b, namespace: default, action: allow}
              - {name: a, namespace: default, action: deny}
            """,
        expected: ["loom.yaml:4:12: policies[2].name: policy 'a' is defined twice (also policies[0] at line 2)"]
    ),
    BadConfig(
        name: "empty lists",
        yaml: """
            policies:
              - {name: a, namespace: default, action: allow, from: {identities: [], namespaces: []}}
              - {name: b, namespace: default, action: allow, to: {services: [], ports: []}}
              - {name: c, namespace: default, action: allow, from: {}, to: {ports: ~}}
            """,
        expected: [
            "loom.yaml:2:69: policies[0].from.identities: is empty: list at least one, or leave the field out",
            "loom.yaml:2:85: policies[0].from.namespaces: is empty",
            "loom.yaml:3:65: policies[1].to.services: is empty",
            "loom.yaml:3:76: policies[1].to.ports: is empty",
            "loom.yaml:4:56: policies[2].from: lists no source: give identities, namespaces or both, or leave `from` out",
            "loom.yaml:4:64: policies[2].to: lists no destination: give services, ports or both, or leave `to` out",
        ]
    ),
    BadConfig(
        name: "bad ports and shapes",
        yaml: """
            policies:
              - {name: a, namespace: default, action: allow, to: {ports: [0, 65536, "80"]}}
              - {name: b, namespace: default, action: allow, from: [default]}
            policies2: []
            """,
        expected: [
            "loom.yaml:2:63: policies[0].to.ports[0]: 0 is out of range (1-65535)",
            "loom.yaml:2:66: policies[0].to.ports[1]: 65536 is out of range (1-65535)",
            "loom.yaml:2:73: policies[0].to.ports[2]: expected an integer, got the string \"80\"",
            "loom.yaml:3:56: policies[1].from: expected a mapping, got a list",
            "loom.yaml:4:1: policies2: unknown field 'policies2' (did you mean 'policies'?)",
        ]
    ),
]

@Suite struct AuthorizationTests {
    @Test func theKeysParseIntoTheModelAndTheSnapshot() throws {
        let config = try MeshConfig.parse(meshYAML, file: "loom.yaml")
        #expect(config.namespaces["shop"] == NamespaceConfig(mtls: .strict))
        #expect(config.namespaces["frontend"]?.mtls == .permissive)
        #expect(config.namespaces["legacy"]?.mtls == nil)

        let snapshot = config.snapshot
        #expect(snapshot.mtlsMode(namespace: "shop") == .strict)
        #expect(snapshot.mtlsMode(namespace: "frontend") == .permissive)
        #expect(snapshot.mtlsMode(namespace: "legacy") == .permissive)
        #expect(snapshot.mtlsMode(namespace: "nowhere") == .permissive)
        #expect(!MTLSMode.strict.acceptsPlaintext && MTLSMode.permissive.acceptsPlaintext)

        // `policy` overrides `defaults` field by field, mtls too.
        #expect(snapshot.services[0].policy.mtls)
        #expect(!snapshot.services[1].policy.mtls)
        #expect(snapshot.services[1].policy == ServicePolicy(mtls: false))
        let web = snapshot.services[0]
        #expect(web.usesMTLS(to: web.endpoints[0], nodeHasCA: true))
        #expect(!web.usesMTLS(to: web.endpoints[0], nodeHasCA: false))
        #expect(!web.usesMTLS(to: web.endpoints[1], nodeHasCA: true))
        #expect(
            !snapshot.services[1].usesMTLS(
                to: Endpoint(address: address("10.0.0.1"), identity: shopWeb),
                nodeHasCA: true
            )
        )

        #expect(
            snapshot.policies == [
                AuthorizationPolicy(
                    name: "deny-legacy",
                    namespace: "shop",
                    action: .deny,
                    fromIdentities: [legacyApp],
                    fromNamespaces: ["legacy"],
                    toServices: ["shop/web"],
                    toPorts: [8080]
                ),
                AuthorizationPolicy(
                    name: "allow-frontend",
                    namespace: "shop",
                    action: .allow,
                    fromNamespaces: ["frontend", "legacy"]
                ),
                AuthorizationPolicy(name: "allow-metrics", namespace: "shop", action: .allow, toPorts: [9090]),
                AuthorizationPolicy(
                    name: "allow-data",
                    namespace: "data",
                    action: .allow,
                    fromIdentities: [shopWeb],
                    toServices: ["data/db"]
                ),
                AuthorizationPolicy(name: "deny-all", namespace: "legacy", action: .deny),
                AuthorizationPolicy(name: "no-ssh", namespace: "ops", action: .deny, toPorts: [22]),
            ]
        )
    }

    @Test func theSnapshotDescribesModesAndPolicies() throws {
        let text = try MeshConfig.parse(meshYAML, file: "loom.yaml").snapshot.describe()
        let lines = text.split(separator: "\n").map(String.init)
        #expect(lines.contains("shop/web vips [] round-robin"))
        #expect(lines.contains("data/db vips [] round-robin mtls off"))
        #expect(lines.filter { $0.hasPrefix("namespace ") } == ["namespace shop mtls strict"])
        #expect(
            lines.filter { $0.hasPrefix("policy ") } == [
                "policy deny-legacy shop deny from [\(legacyApp), ns legacy] to [shop/web, port 8080]",
                "policy allow-frontend shop allow from [ns frontend, ns legacy] to *",
                "policy allow-metrics shop allow from * to [port 9090]",
                "policy allow-data data allow from [\(shopWeb)] to [data/db]",
                "policy deny-all legacy deny from * to *",
                "policy no-ssh ops deny from * to [port 22]",
            ]
        )
    }

    @Test(arguments: table)
    func evaluation(_ row: AuthorizationCase) throws {
        let snapshot = try MeshConfig.parse(meshYAML, file: "loom.yaml").snapshot
        let decision = snapshot.authorize(
            sourceIdentity: row.identity,
            sourceNamespace: row.namespace,
            destinationNamespace: row.to,
            destination: address(row.destination)
        )
        #expect(decision == AuthorizationDecision(allowed: row.allowed, policy: row.policy, reason: row.reason))
    }

    @Test func configurationsWithoutTheKeysBehaveAsBefore() throws {
        let config = try MeshConfig.parse(exampleYAML, file: "loom.yaml")
        let snapshot = config.snapshot
        #expect(config.namespaces["shop"]?.mtls == nil)
        #expect(snapshot.mtls.isEmpty && snapshot.policies.isEmpty)
        #expect(snapshot.mtlsMode(namespace: "shop") == .permissive)
        #expect(snapshot.services.allSatisfy { $0.policy.mtls })
        #expect(!snapshot.describe().contains("mtls") && !snapshot.describe().contains("\npolicy "))
        for identity in [nil, shopWeb] {
            let decision = snapshot.authorize(
                sourceIdentity: identity,
                sourceNamespace: identity == nil ? nil : "shop",
                destinationNamespace: "shop",
                destination: address("10.1.0.5", 8080)
            )
            #expect(decision == AuthorizationDecision(allowed: true, policy: nil, reason: "allowed (no policy)"))
        }
        #expect(
            MeshSnapshot.empty.authorize(
                sourceIdentity: nil,
                sourceNamespace: nil,
                destinationNamespace: "x",
                destination: address("10.0.0.1", 80)
            ).allowed
        )
    }

    @Test func aSnapshotBuiltByHandIgnoresServicesItLacks() {
        let web = Service(
            name: "web",
            namespace: "shop",
            vips: [],
            ports: [ServicePort(port: 80)],
            endpoints: [Endpoint(address: address("10.1.0.5", 80))]
        )
        let snapshot = MeshSnapshot(
            services: [web],
            policies: [
                AuthorizationPolicy(name: "ghost", namespace: "shop", action: .deny, toServices: ["shop/gone"]),
                AuthorizationPolicy(name: "web", namespace: "shop", action: .allow, toServices: ["shop/web"]),
            ]
        )
        func decide(_ destination: String) -> AuthorizationDecision {
            snapshot.authorize(
                sourceIdentity: nil,
                sourceNamespace: nil,
                destinationNamespace: "shop",
                destination: address(destination)
            )
        }
        #expect(decide("10.1.0.5:80").policy == "web")
        #expect(
            decide("10.1.0.5:81")
                == AuthorizationDecision(
                    allowed: false,
                    policy: nil,
                    reason: "no allow policy of namespace shop matches"
                )
        )
    }

    @Test func spiffeIdentitiesHaveOneShape() {
        #expect(
            SPIFFEIdentity("spiffe://cluster.local/ns/shop/sa/web")
                == SPIFFEIdentity(trustDomain: "cluster.local", namespace: "shop", serviceAccount: "web")
        )
        #expect(SPIFFEIdentity("spiffe://td/ns/Shop_1/sa/a.b-c")?.description == "spiffe://td/ns/Shop_1/sa/a.b-c")
        for bad in [
            "", "spiffe://", "spiffe://td/ns/a/sa/", "spiffe://td/ns/../sa/b", "spiffe://t d/ns/a/sa/b",
            "spiffe://td/sa/a/ns/b", "SPIFFE://td/ns/a/sa/b", "spiffe://td/ns/a/sa/b/", "spiffe://td/ns/a b/sa/c",
        ] {
            #expect(SPIFFEIdentity(bad) == nil, "\(bad)")
        }
    }

    @Test(arguments: badPolicyConfigs)
    func badPoliciesAreRefusedWithTheirPlace(_ bad: BadConfig) {
        let text = configErrors(bad.yaml)
        for line in bad.expected {
            #expect(text.contains(line), "expected \(line)\ngot:\n\(text)")
        }
    }
}
