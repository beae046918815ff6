// The table loomd adds to a pod's network namespace while someone traces it
// (`loomctl trace`): the first SYN of each new TCP connection goes to an NFQUEUE queue,
// where loomd reads it (TraceQueue), always accepts it, and works out which of the pod's
// Loom rules decides it (RulePlan+Decide.swift). Like RulePlan, a value rendered twice: to
// `nft` text (exactly what `nft list table inet loom_trace` prints) and to one netlink batch.

/// The trace table of one pod: `inet loom_trace`, beside Loom's own table, never in it.
public struct TracePlan: Equatable, Sendable {
    public static let family = RulePlan.family
    public static let table = "loom_trace"
    /// Loom's table comment: uninstall's sweep and an operator recognise the table as Loom's.
    public static let tableComment = RulePlan.tableComment
    /// Before Loom's nat chains (-100), so the packet still has its original destination.
    /// nft lists it by its standard name, `mangle`.
    public static let chainPriority: Int32 = -150
    /// The queue loomd reads. Queues are per network namespace: every pod can use it.
    public static let defaultQueue: UInt16 = 15000
    /// The comment of the queueing rules.
    public static let ruleComment = "loomctl trace"

    /// How the rule hands a packet to the queue. Both carry the bypass flag: with nobody
    /// reading the queue, the kernel accepts the packet.
    public enum QueueStatement: Equatable, Sendable {
        /// nf_tables' `queue` statement (kernel module nft_queue, CONFIG_NFT_QUEUE).
        case native
        /// xtables' NFQUEUE target through nft_compat, as iptables-nft sends it; for
        /// kernels built without nft_queue (CONFIG_NETFILTER_XT_TARGET_NFQUEUE, CONFIG_NFT_COMPAT).
        case xtables
    }

    /// A base chain (`type filter`, policy accept) with its one queueing rule.
    public struct Chain: Equatable, Sendable {
        public var name: String
        /// `output` or `prerouting`.
        public var hook: String
        public var priority: Int32
        /// Leave packets arriving on the loopback interface alone. On prerouting they are
        /// the second sighting of a connection the output chain already queued (a local
        /// connection, or one Loom's output chain redirected to its listener).
        public var skipsLoopbackArrivals: Bool
    }

    /// Loom's socket mark: loomd's own upstream connections are not traced.
    public let mark: UInt32
    /// The NFQUEUE queue number.
    public let queue: UInt16
    public let statement: QueueStatement
    public let chains: [Chain]

    /// The trace table for a pod whose Loom rules use `mark`, queueing to `queue`.
    public init(mark: UInt32, queue: UInt16 = TracePlan.defaultQueue, statement: QueueStatement = .native) {
        self.mark = mark
        self.queue = queue
        self.statement = statement
        let priority = Self.chainPriority
        chains = [
            Chain(name: "output", hook: "output", priority: priority, skipsLoopbackArrivals: false),
            Chain(name: "prerouting", hook: "prerouting", priority: priority, skipsLoopbackArrivals: true),
        ]
    }

    /// The same plan with another queue statement.
    public func with(statement: QueueStatement) -> TracePlan {
        TracePlan(mark: mark, queue: queue, statement: statement)
    }

    // MARK: - nft text

    /// The whole table as `nft list table inet loom_trace` (nft 1.0.6) prints it once
    /// NetfilterSocket.applyTrace has installed it.
    public func nftText() -> String {
        let blocks = chains.map { chain in
            let priority = RulePlan.priorityText(chain.priority, hook: chain.hook)
            return [
                "\tchain \(chain.name) {",
                "\t\ttype filter hook \(chain.hook) priority \(priority); policy accept;",
                "\t\t" + ruleText(chain),
                "\t}",
            ].joined(separator: "\n")
        }
        let body = blocks.joined(separator: "\n\n")
        return "table \(Self.family) \(Self.table) {\n\tcomment \"\(Self.tableComment)\"\n\(body)\n}\n"
    }

    /// The chain's rule as nft lists it, e.g. `tcp flags syn / fin,syn,rst,ack meta mark !=
    /// 0x00004c4f queue flags bypass to 15000 comment "loomctl trace"`.
    public func ruleText(_ chain: Chain) -> String {
        var parts: [String] = []
        if chain.skipsLoopbackArrivals { parts.append("iifname != \"lo\"") }
        // `tcp flags & (fin | syn | rst | ack) == syn`: SYN without ACK, RST or FIN.
        parts.append("tcp flags syn / fin,syn,rst,ack")
        parts.append("meta mark != \(RulePlan.hex(mark))")
        switch statement {
        case .native: parts.append("queue flags bypass to \(queue)")
        // nft prints the xtables target through libxtables' translation (nft_compat).
        case .xtables: parts.append("queue num \(queue) bypass")
        }
        parts.append("comment \"\(Self.ruleComment)\"")
        return parts.joined(separator: " ")
    }

    // MARK: - netlink

    /// Removes the trace table whether or not it exists, and nothing else.
    static let removalMessages: [NetlinkMessage] = [.addTable(comment: nil), .deleteTable]

    /// TCP flags as the header carries them (byte 13 of the TCP header).
    static let tcpFlagSYN: UInt8 = 0x02
    /// FIN, SYN, RST, ACK.
    static let tcpFlagsMask: UInt8 = 0x17

    /// Replaces the trace table, whatever it holds, with this plan in one transaction (in
    /// `inet loom_trace`: NetfilterSocket sends them there).
    func netlinkMessages() -> [NetlinkMessage] {
        var messages = Self.removalMessages + [.addTable(comment: Self.tableComment)]
        for chain in chains {
            messages.append(.addChain(name: chain.name, type: .filter, hook: chain.hook, priority: chain.priority))
            messages.append(.addRule(chain: chain.name, expressions(chain), comment: Self.ruleComment))
        }
        return messages
    }

    /// The rule's expressions, as nft 1.0.6 builds them for `ruleText(chain)`.
    func expressions(_ chain: Chain) -> [NetlinkExpression] {
        var result: [NetlinkExpression] = []
        if chain.skipsLoopbackArrivals {
            result += [.meta(.iifname), .compare(equal: false, RulePlan.interfaceName("lo"))]
        }
        result += [
            .meta(.l4proto), .compare(equal: true, [RulePlan.ipProtoTCP]),
            .payload(.transport, offset: 13, length: 1), .mask([Self.tcpFlagsMask]),
            .compare(equal: true, [Self.tcpFlagSYN]),
            .meta(.mark), .compare(equal: false, withUnsafeBytes(of: mark, Array.init)),
        ]
        switch statement {
        case .native: result.append(.queue(number: queue, bypass: true))
        case .xtables: result.append(.xtQueue(number: queue, bypass: true))
        }
        return result
    }
}
