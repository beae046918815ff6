import LoomSystem
import Testing

@testable import LoomIntercept

/// `RulePlan.decide`: the chain of the packet's hook walked in order, as the kernel does.
@Suite struct RuleDecisionTests {
    func address(_ text: String) -> SocketAddress { SocketAddress(parsing: text)! }

    func outbound(
        _ destination: String,
        from source: String = "10.1.0.5:40000",
        interface: UInt32 = 2,
        mark: UInt32 = 0
    )
        -> KernelPacket
    {
        KernelPacket(
            hook: .output,
            source: address(source),
            destination: address(destination),
            outInterface: interface,
            mark: mark
        )
    }

    func inbound(_ destination: String, from source: String = "10.2.0.9:50000", interface: UInt32 = 2)
        -> KernelPacket
    {
        KernelPacket(
            hook: .prerouting,
            source: address(source),
            destination: address(destination),
            inInterface: interface
        )
    }

    let plan = RulePlan(
        InterceptSettings(
            excludeOutboundPorts: [22, 8080],
            excludeInboundPorts: [9090],
            excludeCIDRs: ["10.96.0.0/12", "fd00::/8", "169.254.169.254"].map { try! CIDR(parsing: $0) },
            failPolicy: .open
        )
    )

    func expect(
        _ decision: RuleDecision,
        _ verdict: RulePlan.Verdict,
        _ reason: String,
        sourceLocation: SourceLocation = #_sourceLocation
    ) {
        #expect(decision.verdict == verdict, sourceLocation: sourceLocation)
        #expect(decision.reason == reason, "\(decision)", sourceLocation: sourceLocation)
    }

    @Test func everyOutboundMatch() {
        expect(plan.decide(outbound("10.1.2.3:80")), .redirect(15001), "outbound capture")
        expect(
            plan.decide(outbound("[2001:db8::1]:80", from: "[2001:db8::5]:40000")),
            .redirect(15001),
            "outbound capture"
        )
        expect(plan.decide(outbound("10.1.2.3:80", mark: 0x4c4f)), .bypass, "loomd's own socket")
        expect(plan.decide(outbound("10.1.2.3:80", mark: 0x4c4e)), .redirect(15001), "outbound capture")
        expect(plan.decide(outbound("127.0.0.1:80", from: "127.0.0.1:40000", interface: 1)), .bypass, "loopback")
        expect(plan.decide(outbound("[::1]:80", from: "[::1]:40000", interface: 1)), .bypass, "loopback")
        // The pod's own address goes out through lo too; the interface decides, not the address.
        expect(plan.decide(outbound("10.1.0.5:80", interface: 1)), .bypass, "loopback")
        expect(plan.decide(outbound("10.1.2.3:22")), .bypass, "excluded outbound port")
        expect(plan.decide(outbound("[2001:db8::1]:8080", from: "[2001:db8::5]:1")), .bypass, "excluded outbound port")
        expect(plan.decide(outbound("10.1.2.3:8081")), .redirect(15001), "outbound capture")
    }

    @Test func prefixesMatchTheirFamilyOnly() {
        expect(plan.decide(outbound("10.96.0.1:443")), .bypass, "excluded CIDR")
        expect(plan.decide(outbound("10.111.255.255:443")), .bypass, "excluded CIDR")
        expect(plan.decide(outbound("10.112.0.0:443")), .redirect(15001), "outbound capture")
        expect(plan.decide(outbound("169.254.169.254:80")), .bypass, "excluded CIDR")
        expect(plan.decide(outbound("169.254.169.253:80")), .redirect(15001), "outbound capture")
        expect(plan.decide(outbound("[fd12::1]:443", from: "[fd12::5]:1")), .bypass, "excluded CIDR")
        expect(plan.decide(outbound("[fe00::1]:443", from: "[fd12::5]:1")), .redirect(15001), "outbound capture")
        // An IPv4-mapped IPv6 packet is IPv6 to nf_tables: `ip daddr` does not see it.
        expect(plan.decide(outbound("[::ffff:10.96.0.1]:443", from: "[::1]:1")), .redirect(15001), "outbound capture")
        let everything = RulePlan(
            InterceptSettings(excludeCIDRs: [try! CIDR(parsing: "0.0.0.0/0")], captureInbound: false)
        )
        expect(everything.decide(outbound("1.2.3.4:80")), .bypass, "excluded CIDR")
        expect(everything.decide(outbound("[2001:db8::1]:80")), .redirect(15001), "outbound capture")
    }

    @Test func everyInboundMatch() {
        expect(plan.decide(inbound("10.1.0.5:80")), .redirect(15006), "inbound capture")
        expect(plan.decide(inbound("[fd00::5]:80", from: "[fd00::9]:1")), .redirect(15006), "inbound capture")
        expect(plan.decide(inbound("10.1.0.5:80", interface: 1)), .bypass, "loopback")
        expect(plan.decide(inbound("10.1.0.5:15008")), .bypass, "mTLS tunnel port")
        expect(plan.decide(inbound("10.1.0.5:9090")), .bypass, "excluded inbound port")
        // Outbound-only rules are not in the inbound chain.
        expect(plan.decide(inbound("10.1.0.5:22")), .redirect(15006), "inbound capture")
        expect(plan.decide(inbound("10.96.0.1:80")), .redirect(15006), "inbound capture")
        // Marks are not checked inbound: an arriving packet has no socket mark to exempt.
        var marked = inbound("10.1.0.5:80")
        marked.mark = 0x4c4f
        expect(plan.decide(marked), .redirect(15006), "inbound capture")
    }

    @Test func heartbeatMattersOnlyWhenExpired() {
        expect(plan.decide(outbound("10.1.2.3:80"), heartbeatAlive: false), .bypass, "fail open: loomd is gone")
        expect(plan.decide(inbound("10.1.0.5:80"), heartbeatAlive: false), .bypass, "fail open: loomd is gone")
        // Earlier rules still come first.
        expect(plan.decide(outbound("10.1.2.3:22"), heartbeatAlive: false), .bypass, "excluded outbound port")
        let closed = RulePlan(InterceptSettings())
        expect(closed.decide(outbound("10.1.2.3:80"), heartbeatAlive: false), .redirect(15001), "outbound capture")
    }

    @Test func firstMatchWinsAndTheDecisionNamesTheRule() throws {
        // Loopback and an excluded port and an excluded prefix all match: loopback comes first.
        let decision = plan.decide(outbound("10.96.0.1:22", interface: 1, mark: 0x4c4f))
        #expect(decision.reason == "loomd's own socket", "the mark rule precedes loopback")
        #expect(decision.chain == "output")
        #expect(decision.ruleIndex == 1)
        #expect(decision.rule == "meta mark 0x00004c4f return comment \"loomd's own socket\"")
        let port = plan.decide(outbound("10.96.0.1:22"))
        #expect(port.reason == "excluded outbound port", "ports precede prefixes")
        #expect(port.rule == "tcp dport { 22, 8080 } return comment \"excluded outbound port\"")
        let output = try #require(plan.chains.first { $0.hook == "output" })
        let capture = plan.decide(outbound("10.1.2.3:80"))
        #expect(capture.ruleIndex == output.rules.count - 1)
        #expect(capture.rule == "meta l4proto tcp redirect to :15001 comment \"outbound capture\"")
        let inbound = plan.decide(inbound("10.1.0.5:80"))
        #expect(inbound.chain == "prerouting")
        #expect(inbound.rule == "meta l4proto tcp redirect to :15006 comment \"inbound capture\"")
        // Every decision names a rule that is in the chain, at that index.
        for packet in [outbound("10.1.2.3:80"), outbound("10.96.0.1:22"), self.inbound("10.1.0.5:9090")] {
            let decision = plan.decide(packet)
            let chain = try #require(plan.chains.first { $0.name == decision.chain })
            let index = try #require(decision.ruleIndex)
            #expect(RulePlan.text(chain.rules[index]) == decision.rule)
            #expect(chain.rules[index].reason == decision.reason)
        }
    }

    @Test func notTCPNeverMatches() {
        #expect(!RulePlan.matches(.notTCP, outbound("10.1.2.3:80"), heartbeatAlive: true))
        #expect(plan.decide(outbound("10.1.2.3:80")).ruleIndex != 0)
    }

    @Test func withoutInboundCaptureNothingDecidesInbound() {
        let outboundOnly = RulePlan(InterceptSettings(captureInbound: false))
        let decision = outboundOnly.decide(inbound("10.1.0.5:80"))
        #expect(
            decision
                == RuleDecision(
                    verdict: .bypass,
                    chain: "prerouting",
                    ruleIndex: nil,
                    reason: "no inbound capture",
                    rule: ""
                )
        )
    }

    @Test func aChainWithoutACatchAllEndsInItsPolicy() {
        let chain = RulePlan.Chain(
            name: "output",
            hook: "output",
            priority: -100,
            rules: [RulePlan.Rule(matches: [.outputLoopback], verdict: .bypass, reason: "loopback")]
        )
        let plan = RulePlan(settings: InterceptSettings(captureInbound: false), chains: [chain])
        let decision = plan.decide(outbound("10.1.2.3:80"))
        #expect(decision.verdict == .bypass && decision.ruleIndex == nil)
        #expect(decision.reason == "end of chain (policy accept)")
    }
}

/// Reading addresses out of the first bytes of a queued packet.
@Suite struct KernelPacketTests {
    /// An IPv4 TCP SYN header pair: 10.1.0.5:40000 → 10.96.0.1:443, `options` extra IP header bytes.
    func ipv4Packet(options: Int = 0, proto: UInt8 = 6, fragment: UInt16 = 0) -> [UInt8] {
        let ihl = UInt8(5 + options / 4)
        var bytes: [UInt8] = [
            0x40 | ihl, 0, 0, 60, 0, 0, UInt8(fragment >> 8), UInt8(fragment & 0xff), 64, proto, 0, 0,
        ]
        bytes += [10, 1, 0, 5, 10, 96, 0, 1] + Array(repeating: 1, count: options)
        bytes += [0x9c, 0x40, 0x01, 0xbb] + [0, 0, 0, 1, 0, 0, 0, 0, 0xa0, 0x02, 0xff, 0xff, 0, 0, 0, 0]
        return bytes
    }

    /// An IPv6 header (2001:db8::5 → fd00::1), `extensions` as (type, bytes), then TCP 40000 → 443.
    func ipv6Packet(_ extensions: [(UInt8, [UInt8])] = []) -> [UInt8] {
        let first = extensions.first?.0 ?? 6
        var bytes: [UInt8] = [0x60, 0, 0, 0, 0, 20, first, 64]
        bytes += [0x20, 0x01, 0x0d, 0xb8] + Array(repeating: 0, count: 11) + [5]
        bytes += [0xfd, 0x00] + Array(repeating: 0, count: 13) + [1]
        for (index, (_, body)) in extensions.enumerated() {
            let next = index + 1 < extensions.count ? extensions[index + 1].0 : 6
            bytes += [next] + body
        }
        bytes += [0x9c, 0x40, 0x01, 0xbb, 0, 0, 0, 1]
        return bytes
    }

    @Test func readsIPv4() throws {
        let (source, destination) = try #require(KernelPacket.addresses(ofPacket: ipv4Packet()))
        #expect(source == SocketAddress(parsing: "10.1.0.5:40000"))
        #expect(destination == SocketAddress(parsing: "10.96.0.1:443"))
        let (_, withOptions) = try #require(KernelPacket.addresses(ofPacket: ipv4Packet(options: 8)))
        #expect(withOptions == SocketAddress(parsing: "10.96.0.1:443"), "IP options move the TCP header")
        #expect(KernelPacket.addresses(ofPacket: ipv4Packet(proto: 17)) == nil, "UDP")
        #expect(
            KernelPacket.addresses(ofPacket: ipv4Packet(fragment: 0x0010)) == nil,
            "a later fragment has no TCP header"
        )
        #expect(
            KernelPacket.addresses(ofPacket: ipv4Packet(fragment: 0x2000)) != nil,
            "more fragments, offset 0: the first"
        )
        #expect(KernelPacket.addresses(ofPacket: Array(ipv4Packet().prefix(23))) == nil, "ports cut off")
        #expect(KernelPacket.addresses(ofPacket: Array(ipv4Packet().prefix(24))) != nil)
        #expect(KernelPacket.addresses(ofPacket: []) == nil)
        var badLength = ipv4Packet()
        badLength[0] = 0x44
        #expect(KernelPacket.addresses(ofPacket: badLength) == nil, "header length below 20")
    }

    @Test func readsIPv6() throws {
        let (source, destination) = try #require(KernelPacket.addresses(ofPacket: ipv6Packet()))
        #expect(source == SocketAddress(parsing: "[2001:db8::5]:40000"))
        #expect(destination == SocketAddress(parsing: "[fd00::1]:443"))
        // Hop-by-hop (8 bytes), destination options (16 bytes), first fragment.
        let options: [(UInt8, [UInt8])] = [
            (0, [0] + Array(repeating: 1, count: 6)), (60, [1] + Array(repeating: 1, count: 14)),
            (44, [0, 0, 1, 0, 0, 0, 7]),
        ]
        let (_, behind) = try #require(KernelPacket.addresses(ofPacket: ipv6Packet(options)))
        #expect(behind == SocketAddress(parsing: "[fd00::1]:443"))
        #expect(
            KernelPacket.addresses(ofPacket: ipv6Packet([(44, [0, 0, 0x08, 0, 0, 0, 7])])) == nil,
            "later fragment"
        )
        #expect(KernelPacket.addresses(ofPacket: ipv6Packet([(50, Array(repeating: 0, count: 7))])) == nil, "ESP")
        var udp = ipv6Packet()
        udp[6] = 17
        #expect(KernelPacket.addresses(ofPacket: udp) == nil)
        #expect(KernelPacket.addresses(ofPacket: Array(ipv6Packet().prefix(43))) == nil)
        var version5 = ipv6Packet()
        version5[0] = 0x50
        #expect(KernelPacket.addresses(ofPacket: version5) == nil)
    }
}
