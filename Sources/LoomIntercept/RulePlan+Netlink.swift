// A rule plan as nf_tables netlink messages: what NetfilterSocket sends, one batch per
// operation. Pure values, so unit tests check them; the expressions are the ones nft 1.0.6
// generates for the same text (`nft --debug=netlink`), so that `nft list` prints the
// plan's `nftText()` back.

/// One nf_tables expression; loads and compares use register 1.
enum NetlinkExpression: Equatable, Sendable {
    enum MetaKey: Equatable, Sendable {
        case l4proto, nfproto, mark, iifname, oifname
    }

    enum PayloadBase: Equatable, Sendable {
        case network, transport
    }

    /// `[ meta load KEY => reg 1 ]`
    case meta(MetaKey)
    /// `[ cmp eq reg 1 DATA ]` or `neq`
    case compare(equal: Bool, [UInt8])
    /// `[ payload load LENGTHb @ BASE header + OFFSET => reg 1 ]`
    case payload(PayloadBase, offset: UInt32, length: UInt32)
    /// `[ bitwise reg 1 = ( reg 1 & MASK ) ^ 0 ]`
    case mask([UInt8])
    /// `[ lookup reg 1 set NAME ]`, inverted: `!= @NAME`. `setID` names a set of the same batch.
    case lookup(set: String, setID: UInt32, inverted: Bool)
    /// `[ immediate reg 1 DATA ]`
    case load([UInt8])
    /// `[ immediate reg 0 return ]`
    case returnVerdict
    /// `[ redir proto_min reg 1 flags 0x2 ]`: redirect to the local port in register 1.
    case redirectToPort
    /// `[ queue num NUMBER bypass ]`: nf_tables' queue statement (kernel module nft_queue).
    case queue(number: UInt16, bypass: Bool)
    /// `[ target name NFQUEUE rev 3 ]`: xtables' NFQUEUE target through nft_compat, for
    /// kernels without nft_queue (what iptables-nft sends for `-j NFQUEUE`).
    case xtQueue(number: UInt16, bypass: Bool)
}

/// A set in Loom's table.
struct NetlinkSet: Equatable, Sendable {
    enum KeyType: Equatable, Sendable {
        /// nft's `inet_proto`: one byte.
        case inetProto
        /// nft's `inet_service`: a port, two bytes, big endian.
        case inetService
    }

    enum Kind: Equatable, Sendable {
        /// Anonymous and constant: the `{ 22, 8080 }` of one rule, named by the kernel.
        case constant
        /// Named, with expiring elements (the heartbeat).
        case timeout
    }

    /// "__set%d" for an anonymous set: the kernel fills in the number.
    var name: String
    /// Identifies the set to later messages of the same batch.
    var id: UInt32
    var keyType: KeyType
    var kind: Kind
    /// Number of elements, for constant sets (0: not given).
    var size: UInt32
}

/// One message of a batch in one of Loom's tables: `inet loom` unless the batch says
/// otherwise (the trace table, `inet loom_trace`).
enum NetlinkMessage: Equatable, Sendable, CustomStringConvertible {
    /// A base chain's type.
    enum ChainType: String, Equatable, Sendable {
        /// Loom's chains: redirects.
        case nat
        /// The trace table's chains: they only queue.
        case filter
    }

    case addTable(comment: String?)
    case deleteTable
    case addChain(name: String, type: ChainType, hook: String, priority: Int32)
    case addSet(NetlinkSet)
    case addElements(set: String, setID: UInt32, keys: [[UInt8]], timeoutMilliseconds: UInt64)
    case flushSet(String)
    case addRule(chain: String, [NetlinkExpression], comment: String)

    /// What the message does in Loom's table, for errors: "add rule to chain output ("loopback")".
    var description: String { description(table: RulePlan.table) }

    /// What the message does in `table`: "add table inet loom_trace".
    func description(table name: String) -> String {
        let table = "table \(RulePlan.family) \(name)"
        func named(_ set: String) -> String { set.hasPrefix("__set") ? "anonymous set" : "set \(set)" }
        switch self {
        case .addTable: return "add \(table)"
        case .deleteTable: return "delete \(table)"
        case .addChain(let name, _, _, _): return "add chain \(name)"
        case .addSet(let set): return "add \(named(set.name))"
        case .addElements(let set, _, _, _): return "add elements to \(named(set))"
        case .flushSet(let set): return "flush \(named(set))"
        case .addRule(let chain, _, let comment): return "add rule to chain \(chain) (\"\(comment)\")"
        }
    }
}

extension RulePlan {
    /// Removes Loom's table whether or not it exists (adding an existing table is a no-op),
    /// and nothing else.
    static let removalMessages: [NetlinkMessage] = [.addTable(comment: nil), .deleteTable]

    /// Keys per element message, well within one message's 64 KiB of attributes.
    static let elementsPerMessage = 512

    /// Replaces Loom's table, whatever it holds, with this plan: one transaction, so
    /// packets see either the old table or the whole new one.
    func netlinkMessages() -> [NetlinkMessage] {
        var messages = Self.removalMessages + [.addTable(comment: Self.tableComment)]
        var lastSetID: UInt32 = 0
        if settings.failPolicy == .open {
            lastSetID += 1
            let set = NetlinkSet(name: Self.heartbeatSet, id: lastSetID, keyType: .inetProto, kind: .timeout, size: 0)
            messages += [.addSet(set), Self.heartbeatElement(seconds: settings.heartbeatSeconds, setID: set.id)]
        }
        for chain in chains {
            messages.append(.addChain(name: chain.name, type: .nat, hook: chain.hook, priority: chain.priority))
            for rule in chain.rules {
                var expressions: [NetlinkExpression] = []
                for match in rule.matches {
                    let (sets, matchExpressions) = Self.expressions(match, nextSetID: &lastSetID)
                    messages += sets
                    expressions += matchExpressions
                }
                expressions += Self.expressions(rule.verdict)
                messages.append(.addRule(chain: chain.name, expressions, comment: rule.reason))
            }
        }
        return messages
    }

    /// Replaces the heartbeat element (`tcp`, expiring after `seconds`) in one transaction,
    /// so packets never see the set without it.
    static func heartbeatMessages(seconds: Int) -> [NetlinkMessage] {
        [.flushSet(heartbeatSet), heartbeatElement(seconds: seconds, setID: 0)]
    }

    /// The heartbeat element: protocol `tcp`, expiring after `seconds` (at least 1).
    static func heartbeatElement(seconds: Int, setID: UInt32) -> NetlinkMessage {
        .addElements(
            set: heartbeatSet,
            setID: setID,
            keys: [[ipProtoTCP]],
            timeoutMilliseconds: UInt64(max(1, seconds)) * 1000
        )
    }

    // Protocol numbers as the kernel compares them.
    static let ipProtoTCP: UInt8 = 6
    static let nfprotoIPv4: UInt8 = 2
    static let nfprotoIPv6: UInt8 = 10

    /// The expressions of one match, and the messages adding the anonymous set it looks
    /// up, if any (they must come before the rule).
    static func expressions(_ match: Match, nextSetID: inout UInt32) -> ([NetlinkMessage], [NetlinkExpression]) {
        switch match {
        case .notTCP: return ([], [.meta(.l4proto), .compare(equal: false, [ipProtoTCP])])
        case .mark(let mark): return ([], [.meta(.mark), .compare(equal: true, withUnsafeBytes(of: mark, Array.init))])
        case .outputLoopback: return ([], [.meta(.oifname), .compare(equal: true, interfaceName("lo"))])
        case .inputLoopback: return ([], [.meta(.iifname), .compare(equal: true, interfaceName("lo"))])
        case .destinationPorts(let ports):
            // `tcp dport`: only for TCP, then the transport header's bytes 2-3.
            let load: [NetlinkExpression] = [
                .meta(.l4proto), .compare(equal: true, [ipProtoTCP]), .payload(.transport, offset: 2, length: 2),
            ]
            let keys = ports.map { withUnsafeBytes(of: $0.bigEndian, Array.init) }
            if keys.count == 1 { return ([], load + [.compare(equal: true, keys[0])]) }
            nextSetID += 1
            let set = NetlinkSet(
                name: "__set%d",
                id: nextSetID,
                keyType: .inetService,
                kind: .constant,
                size: UInt32(keys.count)
            )
            let elements = stride(from: 0, to: keys.count, by: elementsPerMessage).map {
                NetlinkMessage.addElements(
                    set: set.name,
                    setID: set.id,
                    keys: Array(keys[$0..<min($0 + elementsPerMessage, keys.count)]),
                    timeoutMilliseconds: 0
                )
            }
            return ([.addSet(set)] + elements, load + [.lookup(set: set.name, setID: set.id, inverted: false)])
        case .destinationPrefix(let cidr): return ([], prefixExpressions(cidr))
        case .heartbeatExpired:
            return ([], [.meta(.l4proto), .lookup(set: heartbeatSet, setID: 0, inverted: true)])
        }
    }

    /// `ip daddr` / `ip6 daddr` in a prefix, as nft builds it: a whole-byte prefix loads
    /// and compares just its bytes; any other loads the address and masks it.
    static func prefixExpressions(_ cidr: CIDR) -> [NetlinkExpression] {
        let (nfproto, offset): (UInt8, UInt32) = cidr.isIPv4 ? (nfprotoIPv4, 16) : (nfprotoIPv6, 24)
        let family: [NetlinkExpression] = [.meta(.nfproto), .compare(equal: true, [nfproto])]
        let address = cidr.network.addressBytes
        if cidr.length > 0 && cidr.length % 8 == 0 {
            let bytes = cidr.length / 8
            return family + [
                .payload(.network, offset: offset, length: UInt32(bytes)),
                .compare(equal: true, Array(address.prefix(bytes))),
            ]
        }
        return family + [
            .payload(.network, offset: offset, length: UInt32(address.count)),
            .mask(cidr.maskBytes),
            .compare(equal: true, address),
        ]
    }

    static func expressions(_ verdict: Verdict) -> [NetlinkExpression] {
        switch verdict {
        case .bypass: return [.returnVerdict]
        case .redirect(let port):
            return [
                .meta(.l4proto), .compare(equal: true, [ipProtoTCP]),
                .load(withUnsafeBytes(of: port.bigEndian, Array.init)),
                .redirectToPort,
            ]
        }
    }

    /// An interface name as `iifname`/`oifname` compare it: IFNAMSIZ bytes, zero padded.
    static func interfaceName(_ name: String) -> [UInt8] {
        Array(name.utf8) + Array(repeating: 0, count: max(0, 16 - name.utf8.count))
    }
}
