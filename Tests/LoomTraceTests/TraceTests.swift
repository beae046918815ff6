import XCTest

@testable import LoomTrace

final class PrometheusTextTests: XCTestCase {
    func testCounterGaugeAndHistogramRender() {
        var p = PrometheusText()
        p.counter("loom_x_total", "Things.", [([("pod", "a\"b")], 3), ([], 1.5)])
        p.gauge("loom_y", "Now.", [([("ns", "demo"), ("pod", "p")], 0)])
        p.histogram("loom_z_seconds", "Latency.", bounds: [0.001, 0.01], cumulative: [1, 3, 4], sum: 0.5)
        XCTAssertEqual(
            p.text,
            """
            # HELP loom_x_total Things.
            # TYPE loom_x_total counter
            loom_x_total{pod="a\\"b"} 3
            loom_x_total 1.5
            # HELP loom_y Now.
            # TYPE loom_y gauge
            loom_y{ns="demo",pod="p"} 0
            # HELP loom_z_seconds Latency.
            # TYPE loom_z_seconds histogram
            loom_z_seconds_bucket{le="0.001"} 1
            loom_z_seconds_bucket{le="0.01"} 3
            loom_z_seconds_bucket{le="+Inf"} 4
            loom_z_seconds_sum 0.5
            loom_z_seconds_count 4

            """
        )
    }

    func testLabelEscaping() {
        XCTAssertEqual(PrometheusText.escape("a\\b\n\"c\""), "a\\\\b\\n\\\"c\\\"")
    }
}

final class TraceRecordTests: XCTestCase {
    func testJSONRoundTripUsesSnakeCaseKeys() {
        var r = TraceRecord(event: "close", time: "2026-11-28T21:00:00.123Z")
        r.pod = "web-1"
        r.bytesOut = 10
        r.bytesIn = 20
        r.durationMs = 1.5
        r.end = "fin"
        let line = r.json()
        XCTAssertTrue(line.contains("\"bytes_out\":10"), line)
        XCTAssertTrue(line.contains("\"duration_ms\":1.5"), line)
        XCTAssertEqual(TraceRecord.parse(line), r)
    }

    func testHumanLineNamesVerdictRuleServiceAndEnd() {
        var r = TraceRecord(event: "close", time: "2026-11-28T21:00:00.123Z")
        r.pod = "web-1"
        r.direction = "outbound"
        r.client = "10.0.0.2:40000"
        r.destination = "10.96.0.10:80"
        r.kernel = KernelVerdict(
            verdict: "redirected",
            rule: "outbound capture",
            nft: "meta l4proto tcp redirect to :15001",
            chain: "output",
            port: 15001
        )
        r.service = "demo/web"
        r.endpoint = "10.0.1.2:8080"
        r.bytesOut = 120
        r.bytesIn = 20000
        r.durationMs = 4
        r.end = "upstream_refused"
        r.detail = "refused by upstream"
        XCTAssertEqual(
            r.human(colour: false),
            "21:00:00.123 web-1 out 10.0.0.2:40000 -> 10.96.0.10:80 redirected (outbound capture) svc demo/web -> 10.0.1.2:8080 close upstream_refused out 120B in 20kB 4.0ms (refused by upstream)"
        )
        XCTAssertTrue(r.human(colour: true).contains("\u{1b}[31mclose upstream_refused"))
    }

    func testBypassLineStopsAtTheKernelVerdict() {
        var r = TraceRecord(event: "bypass", time: "2026-11-28T21:00:00.000Z")
        r.pod = "p"
        r.direction = "outbound"
        r.client = "10.0.0.2:1"
        r.destination = "10.0.0.3:5555"
        r.kernel = KernelVerdict(verdict: "bypassed", rule: "excluded outbound port", nft: "", chain: "output")
        XCTAssertEqual(
            r.human(colour: false),
            "21:00:00.000 p out 10.0.0.2:1 -> 10.0.0.3:5555 bypassed (excluded outbound port)"
        )
    }
}

final class TraceSubscriptionTests: XCTestCase {
    func testFullQueueDropsCountsAndReportsOnce() {
        let sub = TraceSubscription(id: 1, filter: TraceFilter(pods: [1]), wantsKernel: true, capacity: 2)
        XCTAssertTrue(sub.offer("a"))
        XCTAssertTrue(sub.offer("b"))
        XCTAssertFalse(sub.offer("c"))
        XCTAssertFalse(sub.offer("d"))
        let first = sub.poll()
        XCTAssertEqual(first.lines.count, 3)
        XCTAssertEqual(TraceRecord.parse(first.lines[0])?.event, "dropped")
        XCTAssertEqual(TraceRecord.parse(first.lines[0])?.dropped, 2)
        XCTAssertEqual(Array(first.lines[1...]), ["a", "b"])
        XCTAssertFalse(first.ended)
        XCTAssertEqual(sub.poll().lines, [])
        XCTAssertEqual(sub.droppedTotal, 2)
        sub.end()
        XCTAssertTrue(sub.poll().ended)
    }

    func testClockFormatsRFC3339Milliseconds() {
        let text = TraceClock.shared.now()
        XCTAssertNotNil(
            text.range(of: #"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$"#, options: .regularExpression),
            text
        )
    }
}
