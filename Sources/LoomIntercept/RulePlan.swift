// A pod's nf_tables rules as a value: built from InterceptSettings, rendered to `nft`
// text for humans, dry runs and golden tests (and, with interception in loomd, to one
// netlink batch). Cleanup is derived from the same plan: delete the one table it names.

/// The rules Loom installs in one pod's network namespace.
public struct RulePlan: Equatable, Sendable {
    /// Family and name of Loom's only table.
    public static let family = "inet"
    public static let table = "loom"
    /// The set whose element loomd keeps alive for `open` pods.
    public static let heartbeatSet = "heartbeat"

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
        /// IPv4 / IPv6 destination in one of these prefixes.
        case destinationPrefixes4([CIDR])
        case destinationPrefixes6([CIDR])
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

    /// A base chain of the table.
    public struct Chain: Equatable, Sendable {
        public var name: String
        public var hook: String
        public var rules: [Rule]
    }

    public let settings: InterceptSettings
    public let chains: [Chain]

    /// Builds the plan for a pod.
    public init(_ settings: InterceptSettings) {
        self.settings = settings
        // An empty list adds no rule: nft rejects an empty anonymous set.
        func bypass(_ match: Match, _ isEmpty: Bool, _ reason: String) -> [Rule] {
            isEmpty ? [] : [Rule(matches: [match], verdict: .bypass, reason: reason)]
        }
        let v4 = settings.excludeCIDRs.filter(\.isIPv4)
        let v6 = settings.excludeCIDRs.filter { !$0.isIPv4 }
        var output: [Rule] =
            [
                Rule(matches: [.notTCP], verdict: .bypass, reason: "not TCP"),
                Rule(matches: [.mark(settings.mark)], verdict: .bypass, reason: "loomd's own socket"),
                Rule(matches: [.outputLoopback], verdict: .bypass, reason: "loopback"),
            ]
            + bypass(
                .destinationPorts(settings.excludeOutboundPorts),
                settings.excludeOutboundPorts.isEmpty,
                "excluded outbound port"
            )
            + bypass(.destinationPrefixes4(v4), v4.isEmpty, "excluded CIDR")
            + bypass(.destinationPrefixes6(v6), v6.isEmpty, "excluded CIDR")
        var inbound: [Rule] =
            [
                Rule(matches: [.notTCP], verdict: .bypass, reason: "not TCP"),
                Rule(matches: [.inputLoopback], verdict: .bypass, reason: "loopback"),
                Rule(matches: [.destinationPorts([settings.tunnelPort])], verdict: .bypass, reason: "mTLS tunnel port"),
            ]
            + bypass(
                .destinationPorts(settings.excludeInboundPorts),
                settings.excludeInboundPorts.isEmpty,
                "excluded inbound port"
            )
        if settings.failPolicy == .open {
            let rule = Rule(matches: [.heartbeatExpired], verdict: .bypass, reason: "fail open: loomd is gone")
            output.append(rule)
            inbound.append(rule)
        }
        output.append(Rule(matches: [], verdict: .redirect(settings.outboundPort), reason: "outbound capture"))
        inbound.append(Rule(matches: [], verdict: .redirect(settings.inboundPort), reason: "inbound capture"))
        chains =
            [Chain(name: "output", hook: "output", rules: output)]
            + (settings.captureInbound ? [Chain(name: "prerouting", hook: "prerouting", rules: inbound)] : [])
    }
}
