// `nft` text of a rule plan: what `loomctl enable --dry-run` prints and what the golden
// tests compare. `nft -f` accepts it as is.

extension RulePlan {
    /// The whole table as an `nft -f` script.
    public func nftText() -> String {
        var lines: [String] = ["table \(Self.family) \(Self.table) {"]
        if settings.failPolicy == .open {
            lines += [
                "\tset \(Self.heartbeatSet) {",
                "\t\ttype inet_proto",
                "\t\tflags timeout",
                "\t}",
            ]
        }
        for chain in chains {
            lines.append("\tchain \(chain.name) {")
            lines.append("\t\ttype nat hook \(chain.hook) priority -100; policy accept;")
            for rule in chain.rules {
                lines.append("\t\t" + Self.text(rule))
            }
            lines.append("\t}")
        }
        lines.append("}")
        return lines.joined(separator: "\n") + "\n"
    }

    static func text(_ rule: Rule) -> String {
        var parts = rule.matches.map(text)
        switch rule.verdict {
        case .bypass: parts.append("return")
        case .redirect(let port): parts.append("meta l4proto tcp redirect to :\(port)")
        }
        parts.append("comment \"\(rule.reason)\"")
        return parts.joined(separator: " ")
    }

    static func text(_ match: Match) -> String {
        switch match {
        case .notTCP: return "meta l4proto != tcp"
        case .mark(let mark): return "meta mark \(hex(mark))"
        case .outputLoopback: return "oifname \"lo\""
        case .inputLoopback: return "iifname \"lo\""
        case .destinationPorts(let ports): return "tcp dport \(set(ports.map(String.init)))"
        case .destinationPrefixes4(let cidrs): return "ip daddr \(set(cidrs.map(\.description)))"
        case .destinationPrefixes6(let cidrs): return "ip6 daddr \(set(cidrs.map(\.description)))"
        case .heartbeatExpired: return "meta l4proto != @\(heartbeatSet)"
        }
    }

    private static func set(_ items: [String]) -> String {
        items.count == 1 ? items[0] : "{ " + items.joined(separator: ", ") + " }"
    }

    private static func hex(_ value: UInt32) -> String {
        let digits = String(value, radix: 16)
        return "0x" + String(repeating: "0", count: max(0, 8 - digits.count)) + digits
    }
}
