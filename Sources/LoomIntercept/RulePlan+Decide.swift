// Which of a pod's Loom rules decides a connection: the chain for the packet's hook walked
// in order, as the kernel walks it, first match wins. Pure, so every kind of match is unit
// tested; `loomctl trace` applies it to the SYNs TraceQueue reads.

/// What Loom's rules do with a connection, and which rule says so.
public struct RuleDecision: Equatable, Sendable {
    /// Bypass (the connection goes where it was going) or redirect to loomd's port.
    public var verdict: RulePlan.Verdict
    /// The chain that decided (`output` or `prerouting`).
    public var chain: String
    /// The deciding rule's position in the chain; nil when no rule did (no such chain, or
    /// the end of the chain: policy accept).
    public var ruleIndex: Int?
    /// The rule's reason (its nft comment): "loopback", "excluded outbound port",
    /// "outbound capture"...
    public var reason: String
    /// The rule as nft lists it (empty when no rule decided).
    public var rule: String

    public init(verdict: RulePlan.Verdict, chain: String, ruleIndex: Int?, reason: String, rule: String) {
        self.verdict = verdict
        self.chain = chain
        self.ruleIndex = ruleIndex
        self.reason = reason
        self.rule = rule
    }
}

extension RulePlan {
    /// What the plan's rules decide for the first SYN `packet`. `heartbeatAlive` false
    /// means loomd's fail-open heartbeat has expired (the `heartbeatExpired` rules match).
    public func decide(_ packet: KernelPacket, heartbeatAlive: Bool = true) -> RuleDecision {
        let hook = packet.hook.rawValue
        guard let chain = chains.first(where: { $0.hook == hook }) else {
            let reason = packet.hook == .prerouting ? "no inbound capture" : "no \(hook) chain"
            return RuleDecision(verdict: .bypass, chain: hook, ruleIndex: nil, reason: reason, rule: "")
        }
        for (index, rule) in chain.rules.enumerated()
        where rule.matches.allSatisfy({ Self.matches($0, packet, heartbeatAlive: heartbeatAlive) }) {
            return RuleDecision(
                verdict: rule.verdict,
                chain: chain.name,
                ruleIndex: index,
                reason: rule.reason,
                rule: Self.text(rule)
            )
        }
        return RuleDecision(
            verdict: .bypass,
            chain: chain.name,
            ruleIndex: nil,
            reason: "end of chain (policy accept)",
            rule: ""
        )
    }

    /// Whether one condition holds for a TCP packet, as the kernel evaluates it.
    static func matches(_ match: Match, _ packet: KernelPacket, heartbeatAlive: Bool) -> Bool {
        switch match {
        case .notTCP: return false  // the trace queue only sees TCP
        case .mark(let mark): return packet.mark == mark
        // `oifname "lo"` / `iifname "lo"`: the loopback interface has index 1 in every netns.
        case .outputLoopback: return packet.outInterface == KernelPacket.loopbackInterface
        case .inputLoopback: return packet.inInterface == KernelPacket.loopbackInterface
        case .destinationPorts(let ports): return ports.contains(packet.destination.port)
        case .destinationPrefix(let cidr):
            // `ip daddr` only matches IPv4 packets, `ip6 daddr` only IPv6 ones.
            let address = packet.destination.with(port: 0)
            return address.bitCount == cidr.network.bitCount && address.masked(to: cidr.length) == cidr.network
        case .heartbeatExpired: return !heartbeatAlive
        }
    }
}
