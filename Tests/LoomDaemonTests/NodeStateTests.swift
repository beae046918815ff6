import LoomIntercept
import Testing

@testable import LoomDaemon

@Suite struct NodeStateTests {
    @Test func namespaceSwitchReachesItsPodsAndLaterOnes() throws {
        var state = NodeState()
        try state.addPod(PodEntry(netns: "a", namespace: "shop"))
        #expect(state.effectiveOptions(state.pod("a")!) == nil)
        try state.enable(Selector(namespace: "shop"), options: InterceptOptions(fail: .open))
        #expect(state.effectiveOptions(state.pod("a")!)?.failPolicy == .open)
        try state.addPod(PodEntry(netns: "b", namespace: "shop"))
        #expect(state.effectiveOptions(state.pod("/var/run/netns/b")!) != nil)
        try state.addPod(PodEntry(netns: "c", namespace: "other"))
        #expect(state.effectiveOptions(state.pod("c")!) == nil)
    }

    @Test func podOptOutAndOptInOutliveTheNamespace() throws {
        var state = NodeState()
        try state.addPod(PodEntry(netns: "a", namespace: "shop"))
        try state.enable(Selector(namespace: "shop"), options: nil)
        try state.disable(Selector(netns: "a"))
        #expect(state.effectiveOptions(state.pod("a")!) == nil)
        try state.enable(Selector(netns: "a"), options: InterceptOptions(excludeOutboundPorts: [53]))
        try state.disable(Selector(namespace: "shop"))
        #expect(state.effectiveOptions(state.pod("a")!)?.excludeOutboundPorts == [53])
    }

    @Test func enablingAnUnknownPodAddsItToTheGivenNamespace() throws {
        var state = NodeState()
        try state.enable(Selector(namespace: "shop", netns: "/proc/42/ns/net"), options: nil)
        #expect(state.pod("42")?.namespace == "shop")
        var other = NodeState()
        try other.enable(Selector(netns: "x"), options: nil)
        #expect(other.pod("x")?.namespace == NodeState.defaultNamespace)
    }

    @Test func badRequestsNameTheValueAndChangeNothing() throws {
        var state = NodeState()
        try state.addPod(PodEntry(netns: "a", namespace: "shop"))
        let before = state
        #expect(throws: NodeStateError.conflictingNamespace(netns: "/var/run/netns/a", has: "shop", given: "x")) {
            try state.enable(Selector(namespace: "x", netns: "a"), options: nil)
        }
        #expect(throws: NodeStateError.noSelector(command: "enable")) {
            try state.enable(Selector(), options: nil)
        }
        #expect(throws: NodeStateError.unknownPod("/var/run/netns/zz")) { try state.disable(Selector(netns: "zz")) }
        #expect(throws: NodeStateError.unknownNamespace("nope")) { try state.disable(Selector(namespace: "nope")) }
        var bad = InterceptOptions()
        bad.excludeCIDRs = ["10.1.2.3/8"]
        #expect(throws: NodeStateError.self) { try state.enable(Selector(namespace: "shop"), options: bad) }
        bad = InterceptOptions()
        bad.fail = "sometimes"
        #expect(throws: NodeStateError.invalidFailPolicy("sometimes")) {
            try state.enable(Selector(namespace: "shop"), options: bad)
        }
        #expect(state == before)
    }

    @Test func optionsBecomeRuleSettings() throws {
        let options = try InterceptOptions(
            excludeOutboundPorts: [53, 22, 53],
            excludeCIDRs: ["fd00::/8"],
            fail: .open
        ).validated()
        #expect(options.excludeOutboundPorts == [22, 53])
        let settings = options.settings(base: InterceptSettings(outboundPort: 15001))
        #expect(settings.failPolicy == .open)
        #expect(settings.excludeCIDRs.map(\.description) == ["fd00::/8"])
        #expect(settings.excludeOutboundPorts == [22, 53])
    }
}

@Suite struct NodeConfigTests {
    @Test func parsesPodsAndNamespaces() throws {
        let state = try NodeConfig.parse(
            """
            namespaces:
              shop: {intercept: true, fail: open, excludeOutboundPorts: [53]}
            pods:
              - {netns: web-1, namespace: shop, serviceAccount: web}
              - {netns: /proc/7/ns/net, intercept: false}
            """,
            path: "t.yaml"
        )
        #expect(state.namespaces["shop"]?.intercept == true)
        #expect(state.namespaces["shop"]?.options.failPolicy == .open)
        #expect(state.pod("web-1")?.serviceAccount == "web")
        #expect(state.pod("7")?.namespace == "default")
        #expect(state.pod("7")?.intercept == false)
        #expect(state.pods.allSatisfy { $0.fromConfig })
    }

    @Test func errorsNameTheFileAndField() {
        do {
            _ = try NodeConfig.parse("pods:\n  - {namespace: x}\n", path: "/etc/loom/loom.yaml")
            Issue.record("accepted a pod without netns")
        } catch {
            #expect(error.description.contains("/etc/loom/loom.yaml"))
            #expect(error.description.contains("netns"))
        }
        do {
            _ = try NodeConfig.parse("namespaces:\n  a: {fail: sometimes}\n", path: "c.yaml")
            Issue.record("accepted a bad fail policy")
        } catch {
            #expect(error.description.contains("sometimes"))
        }
    }

    @Test func savedStateWinsOverConfiguration() throws {
        var config = NodeState()
        config.namespaces["shop"] = NamespacePolicy(intercept: true)
        try config.addPod(PodEntry(netns: "a", namespace: "shop", fromConfig: true))
        try config.addPod(PodEntry(netns: "b", namespace: "shop", fromConfig: true))
        var saved = NodeState()
        saved.namespaces["shop"] = NamespacePolicy(intercept: false)
        try saved.addPod(PodEntry(netns: "a", namespace: "shop", intercept: false))
        try saved.addPod(PodEntry(netns: "c", namespace: "shop"))
        let merged = NodeConfig.merge(config: config, saved: saved)
        #expect(merged.namespaces["shop"]?.intercept == false)
        #expect(merged.pods.map(\.netns).sorted() == ["/var/run/netns/a", "/var/run/netns/b", "/var/run/netns/c"])
        #expect(merged.pod("a")?.intercept == false && merged.pod("a")?.fromConfig == true)
        #expect(merged.pod("c")?.fromConfig == false)
    }
}
