// `nft` text of a rule plan: what `loomctl rules` and `--dry-run` print and what the
// golden tests compare. It is exactly what `nft list table inet loom` (nft 1.0.6) prints
// once NetfilterSocket.apply has installed the plan (for fail open, `nft -t`: the live
// heartbeat element is left out), and `nft -f` accepts it as is.

extension RulePlan {
    /// The whole table as an `nft -f` script, in the kernel listing's form.
    public func nftText() -> String {
        // nft separates the table's objects (sets, chains) with one blank line.
        var blocks: [[String]] = []
        if settings.failPolicy == .open {
            blocks.append([
                "\tset \(Self.heartbeatSet) {",
                "\t\ttype inet_proto",
                "\t\tflags timeout",
                "\t}",
            ])
        }
        for chain in chains {
            let priority = Self.priorityText(chain.priority, hook: chain.hook)
            blocks.append(
                ["\tchain \(chain.name) {", "\t\ttype nat hook \(chain.hook) priority \(priority); policy accept;"]
                    + chain.rules.map { "\t\t" + Self.text($0) }
                    + ["\t}"]
            )
        }
        let body = blocks.map { $0.joined(separator: "\n") }.joined(separator: "\n\n")
        return "table \(Self.family) \(Self.table) {\n\tcomment \"\(Self.tableComment)\"\n\(body)\n}\n"
    }

    /// nft lists a standard priority by name where that name applies to the hook:
    /// `dstnat` (-100) on prerouting, -100 on output stays a number; `mangle` (-150) on
    /// every hook (the trace table's chains).
    static func priorityText(_ priority: Int32, hook: String) -> String {
        if priority == -150 { return "mangle" }
        return hook == "prerouting" && priority == -100 ? "dstnat" : String(priority)
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
        case .destinationPorts(let ports):
            let list = ports.map(String.init)
            return "tcp dport " + (list.count == 1 ? list[0] : "{ " + list.joined(separator: ", ") + " }")
        case .destinationPrefix(let cidr):
            // A host prefix (/32, /128) lists as the bare address.
            let text = cidr.length == cidr.network.bitCount ? cidr.network.host : cidr.description
            return (cidr.isIPv4 ? "ip" : "ip6") + " daddr " + text
        case .heartbeatExpired: return "meta l4proto != @\(heartbeatSet)"
        }
    }

    /// A mark as nft prints it: `0x00004c4f`.
    static func hex(_ value: UInt32) -> String {
        let digits = String(value, radix: 16)
        return "0x" + String(repeating: "0", count: max(0, 8 - digits.count)) + digits
    }
}
