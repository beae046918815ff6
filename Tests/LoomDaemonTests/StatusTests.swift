import Testing

@testable import LoomDaemon
@testable import LoomRelay

@Suite struct StatusReportTests {
    @Test func jsonSumsLoopsAndEscapesNames() {
        var a = LoopCounters()
        a.active = 2
        a.accepted = 5
        a.bytesOutbound = 100
        var b = LoopCounters()
        b.active = 1
        b.pipesInUse = 1
        b.bytesInbound = 7
        let pod = PodStatus(
            netns: "/var/run/netns/pod\"x",
            namespace: "shop",
            serviceAccount: "web",
            state: "intercepted",
            fail: "open",
            generation: 2,
            listeners: 8,
            active: 1,
            accepted: 3,
            refused: 0,
            error: nil,
            changeMs: 1.5
        )
        let report = StatusReport(
            config: RelayConfiguration(),
            budget: nil,
            loops: [a, b],
            pods: [pod],
            uptimeMs: 1,
            pid: 42
        )
        let json = report.json()
        #expect(json.contains("\"active\":3"))
        #expect(json.contains("\"accepted\":5"))
        #expect(json.contains("\"in_use\":1"))
        #expect(json.contains("\"client_to_upstream\":100,\"upstream_to_client\":7"))
        #expect(json.contains("\"netns\":\"/var/run/netns/pod\\\"x\""))
        #expect(json.contains("\"generation\":2"))
        #expect(json.contains("\"mesh\":{\"version\":1,\"source\":\"\",\"services\":0}"))
    }

    @Test func escapesControlCharacters() {
        #expect(jsonEscape("a\nb\u{1}") == "a\\nb\\u0001")
    }
}
