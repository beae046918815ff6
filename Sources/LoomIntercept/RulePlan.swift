// A pod's nf_tables rules as a value: built from InterceptSettings, rendered to `nft`
// text for humans, dry runs and golden tests (RulePlan+Text.swift) and to one netlink
// batch for loomd (RulePlan+Netlink.swift, sent by NetfilterSocket). Cleanup is derived
// from the same plan: delete the one table it names.

/// The rules Loom installs in one pod's network namespace.
public struct RulePlan: Equatable, Sendable {
    /// Family and name of Loom's only table.
    public static let family = "inet"
    public static let table = "loom"
    /// The table's comment: how Loom (and an operator) recognises a table as Loom's.
    public static let tableComment = "managed by loomd"
    /// The set whose element loomd keeps alive for `open` pods.
    public static let heartbeatSet = "heartbeat"
    /// Priority of both base chains: NAT before conntrack confirms (`dstnat`).
    public static let chainPriority: Int32 = -100

    /// One condition of a rule.
    public enum Match: Equatable, Sendable {
        /// Not TCP (Loom relays TCP only).
        case notTCP
        /// Carries Loom's socket mark (loomd's own upstream sockets).
        case mark(UInt32)
        /// Leaves through / arrives on the loopback interface.
        case outputLoopback
        case inputLoopback
        /// TCP destination port is one of these.
        case destinationPorts([UInt16])
        /// IPv4 or IPv6 destination in this prefix (one rule per prefix: no interval sets).
        case destinationPrefix(CIDR)
        /// loomd's heartbeat element has expired (fail open).
        case heartbeatExpired
    }

    /// What a matching rule does.
    public enum Verdict: Equatable, Sendable {
        /// Leave the chain: the connection is not intercepted.
        case bypass
        /// Redirect TCP to this local port.
        case redirect(UInt16)
    }

    /// One rule: all matches must hold; `reason` is kept as an nft comment.
    public struct Rule: Equatable, Sendable {
        public var matches: [Match]
        public var verdict: Verdict
        public var reason: String
    }

    /// A base chain of the table (`type nat`, policy accept).
    public struct Chain: Equatable, Sendable {
        public var name: String
        /// `output` or `prerouting`.
        public var hook: String
        public var priority: Int32
        public var rules: [Rule]
    }

    public let settings: InterceptSettings
    public let chains: [Chain]

    /// A plan with exactly these chains (tests: chains RulePlan would not build).
    init(settings: InterceptSettings, chains: [Chain]) {
        self.settings = settings
        self.chains = chains
    }

    /// Builds the plan for a pod.
    public init(_ settings: InterceptSettings) {
        self.settings = settings
        // An empty list adds no rule: nft rejects an empty anonymous set.
        func bypass(_ match: Match, _ isEmpty: Bool, _ reason: String) -> [Rule] {
            isEmpty ? [] : [Rule(matches: [match], verdict: .bypass, reason: reason)]
        }
        // As nft lists them: port sets sorted without duplicates; prefixes in the given
        // order, each once.
        let outboundPorts = Array(Set(settings.excludeOutboundPorts)).sorted()
        let inboundPorts = Array(Set(settings.excludeInboundPorts)).sorted()
        var cidrs: [CIDR] = []
        for cidr in settings.excludeCIDRs where !cidrs.contains(cidr) { cidrs.append(cidr) }
        var output: [Rule] =
            [
                Rule(matches: [.notTCP], verdict: .bypass, reason: "not TCP"),
                Rule(matches: [.mark(settings.mark)], verdict: .bypass, reason: "loomd's own socket"),
                Rule(matches: [.outputLoopback], verdict: .bypass, reason: "loopback"),
            ]
            + bypass(.destinationPorts(outboundPorts), outboundPorts.isEmpty, "excluded outbound port")
            + cidrs.map { Rule(matches: [.destinationPrefix($0)], verdict: .bypass, reason: "excluded CIDR") }
        var inbound: [Rule] =
            [
                Rule(matches: [.notTCP], verdict: .bypass, reason: "not TCP"),
                Rule(matches: [.inputLoopback], verdict: .bypass, reason: "loopback"),
                Rule(matches: [.destinationPorts([settings.tunnelPort])], verdict: .bypass, reason: "mTLS tunnel port"),
            ]
            + bypass(.destinationPorts(inboundPorts), inboundPorts.isEmpty, "excluded inbound port")
        if settings.failPolicy == .open {
            let rule = Rule(matches: [.heartbeatExpired], verdict: .bypass, reason: "fail open: loomd is gone")
            output.append(rule)
            inbound.append(rule)
        }
        output.append(Rule(matches: [], verdict: .redirect(settings.outboundPort), reason: "outbound capture"))
        inbound.append(Rule(matches: [], verdict: .redirect(settings.inboundPort), reason: "inbound capture"))
        let priority = Self.chainPriority
        chains =
            [Chain(name: "output", hook: "output", priority: priority, rules: output)]
            + (settings.captureInbound
                ? [Chain(name: "prerouting", hook: "prerouting", priority: priority, rules: inbound)] : [])
    }
}
