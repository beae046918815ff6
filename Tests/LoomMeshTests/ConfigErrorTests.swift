import Testing

@testable import LoomMesh

/// A configuration that must be refused, and lines its error text must contain.
struct BadConfig: CustomTestStringConvertible, Sendable {
    var name: String
    var yaml: String
    var expected: [String]
    var testDescription: String { name }
}

private let web = "services:\n- name: web\n  ports: [{port: 80, protocol: http}, {port: 443, protocol: tls}]\n"

let badConfigs: [BadConfig] = [
    BadConfig(
        name: "malformed YAML",
        yaml: "services:\n  - name: web\n   ports: [80\n",
        expected: [
            "loom.yaml:3:4: malformed YAML: did not find expected '-' indicator (while parsing a block collection at line 2, column 3)"
        ]
    ),
    BadConfig(
        name: "duplicate key",
        yaml: "services:\n- name: web\n  name: api\n",
        expected: ["loom.yaml:2:3: malformed YAML: duplicate key 'name' in one mapping"]
    ),
    BadConfig(
        name: "unknown top-level field",
        yaml: "service:\n  - name: web\n",
        expected: ["loom.yaml:1:1: service: unknown field 'service' (did you mean 'services'?)"]
    ),
    BadConfig(
        name: "unknown field without a close match",
        yaml: "services:\n- name: web\n  colour: blue\n",
        expected: [
            "loom.yaml:3:3: services[0].colour: unknown field 'colour' (known: name, namespace, vips, ports, endpoints, policy, routes)"
        ]
    ),
    BadConfig(
        name: "misspelt policy field",
        yaml: web + "  policy: {loadbalancing: ring-hash}\n",
        expected: [
            "loom.yaml:4:12: services[0].policy.loadbalancing: unknown field 'loadbalancing' (did you mean 'loadBalancing'?)"
        ]
    ),
    BadConfig(
        name: "missing name",
        yaml: "services:\n- namespace: shop\n",
        expected: ["loom.yaml:2:3: services[0].name: missing (required)"]
    ),
    BadConfig(
        name: "wrong shape",
        yaml: "services:\n  name: web\n",
        expected: ["loom.yaml:2:3: services: expected a list, got a mapping"]
    ),
    BadConfig(
        name: "duplicate service",
        yaml:
            "services:\n- {name: web, namespace: shop}\n- {name: api, namespace: shop}\n- {name: web, namespace: shop}\n",
        expected: ["loom.yaml:4:10: services[2].name: shop/web is defined twice (first at services[0] at line 2)"]
    ),
    BadConfig(
        name: "VIP and port in two services",
        yaml: """
            services:
            - {name: web, vips: [10.96.0.10], ports: [{port: 80}]}
            - {name: api, vips: [10.0.0.1, 10.96.0.10], ports: [{port: 8080}, {port: 80}]}
            """,
        expected: [
            "loom.yaml:3:32: services[1].vips[1]: 10.96.0.10:80 belongs to both default/web (services[0].vips[0] at line 2) and default/api"
        ]
    ),
    BadConfig(
        name: "VIP and port in two services (IPv6)",
        yaml:
            "services:\n- {name: a, vips: [fd96::1], ports: [{port: 80}]}\n- {name: b, vips: ['fd96:0::1'], ports: [{port: 80}]}\n",
        expected: ["loom.yaml:3:20: services[1].vips[0]: [fd96::1]:80 belongs to both default/a"]
    ),
    BadConfig(
        name: "port out of range",
        yaml: "services:\n- name: web\n  ports:\n    - port: 70000\n",
        expected: ["loom.yaml:4:13: services[0].ports[0].port: 70000 is out of range (1-65535)"]
    ),
    BadConfig(
        name: "target port 0",
        yaml: "services:\n- {name: web, ports: [{port: 80, targetPort: 0}]}\n",
        expected: ["loom.yaml:2:46: services[0].ports[0].targetPort: 0 is out of range (1-65535)"]
    ),
    BadConfig(
        name: "quoted port",
        yaml: "services:\n- {name: web, ports: [{port: \"80\"}]}\n",
        expected: ["loom.yaml:2:30: services[0].ports[0].port: expected an integer, got the string \"80\""]
    ),
    BadConfig(
        name: "duplicate port",
        yaml: "services:\n- {name: web, ports: [{port: 80}, {port: 80, protocol: http}]}\n",
        expected: [
            "loom.yaml:2:42: services[0].ports[1].port: port 80 is listed twice (also services[0].ports[0].port at line 2)"
        ]
    ),
    BadConfig(
        name: "unknown protocol",
        yaml: "services:\n- {name: web, ports: [{port: 53, protocol: udp}]}\n",
        expected: ["loom.yaml:2:44: services[0].ports[0].protocol: unknown protocol 'udp' (expected tcp, http, tls)"]
    ),
    BadConfig(
        name: "unknown load balancing",
        yaml: "defaults:\n  loadBalancing: round_robin\n",
        expected: [
            "loom.yaml:2:18: defaults.loadBalancing: unknown load balancing 'round_robin' (did you mean 'round-robin'?)"
        ]
    ),
    BadConfig(
        name: "zero endpoint weight",
        yaml: "services:\n- name: web\n  endpoints: [{address: 10.0.0.1, weight: 0}]\n",
        expected: ["loom.yaml:3:43: services[0].endpoints[0].weight: 0 is out of range (1-1000000)"]
    ),
    BadConfig(
        name: "zero route weight",
        yaml: web + "  routes: [{to: [{service: web, weight: 0}]}]\n",
        expected: ["loom.yaml:4:41: services[0].routes[0].to[0].weight: 0 is out of range (1-1000000)"]
    ),
    BadConfig(
        name: "no destinations",
        yaml: web + "  routes: [{name: r, to: []}]\n",
        expected: ["loom.yaml:4:26: services[0].routes[0].to: needs at least one destination"]
    ),
    BadConfig(
        name: "unknown destination service",
        yaml: web + "  routes: [{to: [{service: wbe}]}]\n- {name: api}\n",
        expected: [
            "loom.yaml:4:28: services[0].routes[0].to[0].service: unknown service default/wbe (did you mean default/web?)"
        ]
    ),
    BadConfig(
        name: "destination port the service lacks",
        yaml: web + "  routes: [{port: 80, to: [{service: web, port: 8080}]}]\n",
        expected: [
            "loom.yaml:4:49: services[0].routes[0].to[0].port: default/web has no port 8080 (its ports: 80, 443)"
        ]
    ),
    BadConfig(
        name: "destination without a port of the same number",
        yaml: web + "  routes: [{port: 80, to: [{service: other}]}]\n- {name: other, ports: [{port: 1}, {port: 2}]}\n",
        expected: [
            "loom.yaml:4:38: services[0].routes[0].to[0].service: default/other has no port 80 (its ports: 1, 2); say which with `port`"
        ]
    ),
    BadConfig(
        name: "route port the service lacks",
        yaml: web + "  routes: [{port: 81, to: [{service: web}]}]\n",
        expected: ["loom.yaml:4:19: services[0].routes[0].port: default/web has no port 81 (its ports: 80, 443)"]
    ),
    BadConfig(
        name: "sni on an http port",
        yaml: web + "  routes: [{port: 80, match: {sni: a.example}, to: [{service: web}]}]\n",
        expected: [
            "loom.yaml:4:36: services[0].routes[0].match.sni: sni needs a port with protocol tls, and port 80 is http"
        ]
    ),
    BadConfig(
        name: "host on a tls port",
        yaml: web + "  routes: [{port: 443, match: {host: a.example}, to: [{service: web}]}]\n",
        expected: [
            "loom.yaml:4:38: services[0].routes[0].match.host: host needs a port with protocol http, and port 443 is tls"
        ]
    ),
    BadConfig(
        name: "headers on a tcp service",
        yaml:
            "services:\n- name: db\n  ports: [{port: 5432}]\n  routes: [{match: {headers: {a: b}}, to: [{service: db}]}]\n",
        expected: [
            "loom.yaml:4:12: services[0].routes[0]: default/db has no port with protocol http for this route to apply to"
        ]
    ),
    BadConfig(
        name: "sni and host together",
        yaml: web + "  routes: [{match: {sni: a.example, host: a.example}, to: [{service: web}]}]\n",
        expected: ["loom.yaml:4:26: services[0].routes[0].match.sni: sni matches TLS and host"]
    ),
    BadConfig(
        name: "duplicate route name",
        yaml: web
            + "  routes:\n  - {name: r, port: 80, to: [{service: web}]}\n  - {name: r, port: 443, to: [{service: web}]}\n",
        expected: [
            "loom.yaml:6:12: services[0].routes[1].name: route 'r' is defined twice (also services[0].routes[0] at line 5)"
        ]
    ),
    BadConfig(
        name: "bad endpoint address",
        yaml: "services:\n- name: web\n  endpoints:\n  - address: web-1.local\n  - address: 0.0.0.0\n",
        expected: [
            "loom.yaml:4:14: services[0].endpoints[0].address: 'web-1.local' is not an IPv4 or IPv6 address (names are not resolved)",
            "loom.yaml:5:14: services[0].endpoints[1].address: '0.0.0.0' is the unspecified address",
        ]
    ),
    BadConfig(
        name: "endpoint port contradicting its address",
        yaml: "services:\n- name: web\n  endpoints: [{address: \"10.0.0.1:80\", port: 81}]\n",
        expected: ["loom.yaml:3:46: services[0].endpoints[0].port: 81 differs from the port in address '10.0.0.1:80'"]
    ),
    BadConfig(
        name: "duplicate endpoint",
        yaml: "services:\n- name: web\n  endpoints: [{address: 10.0.0.1, port: 80}, {address: \"10.0.0.1:80\"}]\n",
        expected: ["loom.yaml:3:56: services[0].endpoints[1].address: 10.0.0.1:80 is listed twice (also endpoints[0])"]
    ),
    BadConfig(
        name: "VIP with a port",
        yaml: "services:\n- {name: web, vips: [\"10.96.0.1:80\"]}\n",
        expected: ["loom.yaml:2:22: services[0].vips[0]: '10.96.0.1:80' has a port; a virtual IP is an address"]
    ),
    BadConfig(
        name: "negative retries",
        yaml: web + "  policy:\n    retries: -1\n",
        expected: ["loom.yaml:5:14: services[0].policy.retries: -1 is out of range (0-100)"]
    ),
    BadConfig(
        name: "malformed durations",
        yaml: "defaults:\n  connectTimeout: 5\n  outlier: {baseEjection: 1.5s, maxEjection: 0ms}\n",
        expected: [
            "loom.yaml:2:19: defaults.connectTimeout: '5' is not a duration (a whole number and ms, s, m or h: 250ms, 5s, 1m)",
            "loom.yaml:3:27: defaults.outlier.baseEjection: '1.5s' is not a duration",
            "loom.yaml:3:46: defaults.outlier.maxEjection: '0ms' is out of range (1ms to 365 days)",
        ]
    ),
    BadConfig(
        name: "maximum ejection below the base",
        yaml: "defaults:\n  outlier: {baseEjection: 10s, maxEjection: 1s}\n",
        expected: [
            "loom.yaml:2:45: defaults.outlier.maxEjection: maxEjection (1000ms) is shorter than baseEjection (10000ms)"
        ]
    ),
    BadConfig(
        name: "maxConnections 0",
        yaml: "defaults:\n  maxConnections: 0\n",
        expected: ["loom.yaml:2:19: defaults.maxConnections: 0 is out of range (1 or more)"]
    ),
    BadConfig(
        name: "maxEjectionPercent 101",
        yaml: "defaults:\n  outlier:\n    maxEjectionPercent: 101\n",
        expected: ["loom.yaml:3:25: defaults.outlier.maxEjectionPercent: 101 is out of range (0-100)"]
    ),
    BadConfig(
        name: "bad hosts and header names",
        yaml: web + """
              routes:
              - match: {host: "shop.example:80"}
                to: [{service: web}]
              - match: {host: "a.*.example"}
                to: [{service: web}]
              - match: {sni: "*"}
                to: [{service: web}]
              - match: {headers: {"x beta": "1"}}
                to: [{service: web}]
              - match: {pathPrefix: v2}
                to: [{service: web}]
              - match: {headers: {X-A: "1", x-a: "2"}}
                to: [{service: web}]
            """,
        expected: [
            "loom.yaml:5:19: services[0].routes[0].match.host: 'shop.example:80' has a port; match the name alone",
            "loom.yaml:7:19: services[0].routes[1].match.host: 'a.*.example': a wildcard is allowed only as a leading '*.'",
            "loom.yaml:9:18: services[0].routes[2].match.sni: '*': a wildcard is allowed only as a leading '*.'",
            "loom.yaml:11:23: services[0].routes[3].match.headers.x beta: 'x beta' is not a header name",
            "loom.yaml:13:25: services[0].routes[4].match.pathPrefix: 'v2' must start with '/'",
            "loom.yaml:15:33: services[0].routes[5].match.headers.x-a: header 'x-a' is listed twice (names ignore case)",
        ]
    ),
    BadConfig(
        name: "namespaces and pods",
        yaml: """
            namespaces:
              shop: {intercept: yes, fail: opne, excludeCIDRs: [10.96.0.1/12, 10.0.0.0/33, foo], unmatched: drop}
              "bad name": {}
            pods:
              - {namespace: shop}
              - {netns: web-1}
              - {netns: web-1}
            """,
        expected: [
            "loom.yaml:2:21: namespaces.shop.intercept: expected true or false, got 'yes'",
            "loom.yaml:2:32: namespaces.shop.fail: unknown fail policy 'opne' (did you mean 'open'?)",
            "loom.yaml:2:53: namespaces.shop.excludeCIDRs[0]: '10.96.0.1/12' has host bits set past /12",
            "loom.yaml:2:67: namespaces.shop.excludeCIDRs[1]: '10.0.0.0/33': the prefix length must be 0 to 32",
            "loom.yaml:2:80: namespaces.shop.excludeCIDRs[2]: 'foo' is not a prefix",
            "loom.yaml:2:97: namespaces.shop.unmatched: unknown unmatched policy 'drop' (expected passthrough, refuse)",
            "loom.yaml:3:3: namespaces.bad name: 'bad name' is not a valid name",
            "loom.yaml:5:5: pods[0].netns: missing (required)",
            "loom.yaml:7:13: pods[2].netns: 'web-1' is listed twice (also pods[1].netns at line 6)",
        ]
    ),
    BadConfig(
        name: "top level not a mapping",
        yaml: "- a\n- b\n",
        expected: ["loom.yaml:1:1: expected a mapping, got a list"]
    ),
]

@Suite struct ConfigErrorTests {
    @Test(arguments: badConfigs)
    func badConfigurationsAreRefusedWithTheirPlace(_ bad: BadConfig) {
        let text = configErrors(bad.yaml)
        for line in bad.expected {
            #expect(text.contains(line), "expected \(line)\ngot:\n\(text)")
        }
    }

    @Test func everyErrorIsReportedUpToTheLimit() throws {
        var yaml = "services:\n"
        for i in 0..<30 { yaml += "- {name: s\(i), ports: [{port: \(70_000 + i)}]}\n" }
        do {
            _ = try MeshConfig.parse(yaml, file: "loom.yaml")
            Issue.record("30 bad ports loaded")
        } catch {
            #expect(error.diagnostics.count == MeshConfigError.limit)
            #expect(error.omitted == 10)
            let lines = error.description.split(separator: "\n")
            #expect(lines.first == "loom.yaml:2:29: services[0].ports[0].port: 70000 is out of range (1-65535)")
            #expect(lines.last == "(10 more errors not shown)")
        }
    }

    @Test func errorsInSeveralSectionsAreAllReported() {
        let text = configErrors(
            """
            namespaces: {shop: {fail: maybe}}
            defaults: {retries: -2}
            services:
            - {name: web, ports: [{port: 0}], endpoints: [{address: nowhere}]}
            """
        )
        #expect(text.split(separator: "\n").count == 4, "\(text)")
    }

    @Test func aBrokenPortDoesNotCascadeIntoRouteErrors() {
        let text = configErrors(
            web + "- name: api\n  ports: [{port: 80, protocol: quic}]\n  routes: [{port: 80, to: [{service: api}]}]\n"
        )
        #expect(text.split(separator: "\n").count == 1, "\(text)")
    }

    @Test func suggestionsNeedACloseMatch() {
        #expect(ConfigReader.suggestion(for: "prot", among: ["port", "protocol"]) == "port")
        #expect(ConfigReader.suggestion(for: "targetport", among: ["port", "targetPort"]) == "targetPort")
        #expect(ConfigReader.suggestion(for: "colour", among: ["name", "namespace", "vips"]) == nil)
        #expect(ConfigReader.editDistance(Array("ab"), Array("ba")) == 1)
        #expect(ConfigReader.editDistance(Array("kitten"), Array("sitting")) == 3)
    }
}
