import Foundation
import Testing

@testable import LoomIntercept

/// Compares `text` with `golden/NAME`; `LOOM_UPDATE_GOLDEN=1 swift test` rewrites it.
func expectGolden(_ text: String, _ name: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
    let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("golden/\(name)")
    if ProcessInfo.processInfo.environment["LOOM_UPDATE_GOLDEN"] == "1" {
        try text.write(to: url, atomically: true, encoding: .utf8)
    }
    let golden = try String(contentsOf: url, encoding: .utf8)
    #expect(
        text == golden,
        "differs from golden/\(name); rerun with LOOM_UPDATE_GOLDEN=1 if intended",
        sourceLocation: sourceLocation
    )
}

@Suite struct RulePlanTests {
    @Test func defaultPlanIsFailClosedWithStandardExemptions() throws {
        let plan = RulePlan(InterceptSettings())
        try expectGolden(plan.nftText(), "default.nft")
        let output = try #require(plan.chains.first { $0.hook == "output" })
        #expect(output.rules.last?.verdict == .redirect(15001))
        #expect(output.rules.contains { $0.matches == [.mark(0x4c4f)] && $0.verdict == .bypass })
        let inbound = try #require(plan.chains.first { $0.hook == "prerouting" })
        #expect(inbound.rules.last?.verdict == .redirect(15006))
        #expect(inbound.rules.contains { $0.matches == [.destinationPorts([15008])] }, "the tunnel is never redirected")
        #expect(!plan.nftText().contains("heartbeat"), "fail closed needs no heartbeat")
    }

    @Test func exclusionsAndFailOpen() throws {
        let settings = InterceptSettings(
            excludeOutboundPorts: try InterceptSettings.ports(
                parsing: "8080, 22,22",
                option: "--exclude-outbound-ports"
            ),
            excludeInboundPorts: [9090],
            excludeCIDRs: [
                try CIDR(parsing: "10.96.0.0/12"), try CIDR(parsing: "fd00::/8"), try CIDR(parsing: "169.254.169.254"),
            ],
            failPolicy: .open
        )
        let plan = RulePlan(settings)
        try expectGolden(plan.nftText(), "exclusions-open.nft")
        #expect(settings.excludeOutboundPorts == [22, 8080])
        for chain in plan.chains {
            let redirect = try #require(
                chain.rules.firstIndex { if case .redirect = $0.verdict { true } else { false } }
            )
            let heartbeat = try #require(chain.rules.firstIndex { $0.matches == [.heartbeatExpired] })
            #expect(heartbeat < redirect, "an expired heartbeat must bypass before the redirect")
        }
    }

    @Test func oneRulePerExcludedPrefixInTheGivenOrder() throws {
        let cidrs = try ["fd00::/8", "10.96.0.0/12", "fd00::/8", "192.0.2.7"].map { try CIDR(parsing: $0) }
        let plan = RulePlan(InterceptSettings(excludeCIDRs: cidrs, captureInbound: false))
        let lines = plan.nftText().split(separator: "\n").filter { $0.contains("excluded CIDR") }
        #expect(
            lines == [
                "\t\tip6 daddr fd00::/8 return comment \"excluded CIDR\"",
                "\t\tip daddr 10.96.0.0/12 return comment \"excluded CIDR\"",
                "\t\tip daddr 192.0.2.7 return comment \"excluded CIDR\"",
            ],
            "duplicates dropped; a host prefix lists as a bare address, as nft prints it"
        )
    }

    @Test func prioritiesPrintAsNftListsThem() {
        #expect(RulePlan.priorityText(-100, hook: "prerouting") == "dstnat")
        #expect(RulePlan.priorityText(-100, hook: "output") == "-100")
        let text = RulePlan(InterceptSettings()).nftText()
        #expect(text.hasPrefix("table inet loom {\n\tcomment \"managed by loomd\"\n\tchain output {\n"))
        #expect(text.contains("\t}\n\n\tchain prerouting {\n\t\ttype nat hook prerouting priority dstnat;"))
    }

    @Test func outboundOnlyPlanHasNoPreroutingChain() {
        let plan = RulePlan(InterceptSettings(captureInbound: false))
        #expect(plan.chains.map(\.hook) == ["output"])
        #expect(!plan.nftText().contains("15006"))
    }

    @Test func badValuesAreNamed() {
        #expect(throws: InterceptError.invalidPort(option: "--exclude-outbound-ports", value: "http")) {
            try InterceptSettings.ports(parsing: "80,http", option: "--exclude-outbound-ports")
        }
        #expect(throws: InterceptError.invalidPort(option: "--exclude-inbound-ports", value: "70000")) {
            try InterceptSettings.ports(parsing: "70000", option: "--exclude-inbound-ports")
        }
        #expect {
            try CIDR(parsing: "10.1.2.3/8")
        } throws: { error in
            "\(error)".contains("did you mean 10.0.0.0/8")
        }
        #expect(throws: InterceptError.self) { try CIDR(parsing: "10.0.0.0/33") }
        #expect(throws: InterceptError.self) { try CIDR(parsing: "pod-a/8") }
        #expect(throws: InterceptError.self) { try CIDR(parsing: "fd00::/129") }
    }

    @Test func cidrsPrintInCanonicalForm() throws {
        #expect(try CIDR(parsing: "fd00:0::/8").description == "fd00::/8")
        #expect(try CIDR(parsing: "192.168.1.7").description == "192.168.1.7/32")
        #expect(try CIDR(parsing: "0.0.0.0/0").description == "0.0.0.0/0")
    }
}
