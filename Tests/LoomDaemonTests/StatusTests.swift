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
        let report = StatusReport(
            netns: "pod\"x",
            config: RelayConfiguration(),
            budget: nil,
            loops: [a, b],
            uptimeMs: 1,
            pid: 42
        )
        let json = report.json()
        #expect(json.contains("\"active\":3"))
        #expect(json.contains("\"accepted\":5"))
        #expect(json.contains("\"in_use\":1"))
        #expect(json.contains("\"client_to_upstream\":100,\"upstream_to_client\":7"))
        #expect(json.contains("\"netns\":\"pod\\\"x\""))
    }

    @Test func escapesControlCharacters() {
        #expect(jsonEscape("a\nb\u{1}") == "a\\nb\\u0001")
    }
}
