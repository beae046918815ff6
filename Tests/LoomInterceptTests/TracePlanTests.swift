import Testing

@testable import LoomIntercept

/// The trace table as text and as netlink messages. The expressions are what
/// `nft --debug=netlink` (nft 1.0.6) prints for the same text; TraceKernelTests compares
/// them with nft itself and the text with the kernel's listing.
@Suite struct TracePlanTests {
    typealias E = NetlinkExpression

    @Test func textIsTheKernelListing() throws {
        let plan = TracePlan(mark: 0x4c4f, queue: TracePlan.defaultQueue)
        try expectGolden(plan.nftText(), "trace.nft")
        try expectGolden(plan.with(statement: .xtables).nftText(), "trace-xtables.nft")
        #expect(plan.nftText().hasPrefix("table inet loom_trace {\n\tcomment \"managed by loomd\"\n\tchain output {\n"))
        #expect(
            plan.ruleText(plan.chains[0])
                == "tcp flags syn / fin,syn,rst,ack meta mark != 0x00004c4f queue flags bypass to 15000 comment \"loomctl trace\""
        )
        #expect(
            plan.with(statement: .xtables).ruleText(plan.chains[1])
                == "iifname != \"lo\" tcp flags syn / fin,syn,rst,ack meta mark != 0x00004c4f queue num 15000 bypass comment \"loomctl trace\""
        )
    }

    @Test func constantsAndChains() {
        let plan = TracePlan(mark: 7, queue: 3)
        #expect(TracePlan.defaultQueue == 15000)
        #expect(TracePlan.table == "loom_trace" && TracePlan.family == "inet")
        #expect(TracePlan.tableComment == RulePlan.tableComment, "uninstall's sweep recognises it by this comment")
        #expect(TracePlan.chainPriority < RulePlan.chainPriority, "before Loom's nat chains: original destination")
        #expect(plan.chains.map(\.hook) == ["output", "prerouting"])
        #expect(plan.chains.map(\.skipsLoopbackArrivals) == [false, true])
        #expect(plan.statement == .native)
        #expect(plan.with(statement: .xtables) == TracePlan(mark: 7, queue: 3, statement: .xtables))
        #expect(RulePlan.priorityText(-150, hook: "output") == "mangle")
        #expect(RulePlan.priorityText(-150, hook: "prerouting") == "mangle")
    }

    @Test func applyReplacesOnlyTheTraceTableInOneBatch() {
        let plan = TracePlan(mark: 0x4c4f, queue: 15000)
        let messages = plan.netlinkMessages()
        #expect(
            messages.map { $0.description(table: TracePlan.table) } == [
                "add table inet loom_trace", "delete table inet loom_trace", "add table inet loom_trace",
                "add chain output", "add rule to chain output (\"loomctl trace\")",
                "add chain prerouting", "add rule to chain prerouting (\"loomctl trace\")",
            ]
        )
        #expect(messages[2] == .addTable(comment: "managed by loomd"))
        #expect(messages[3] == .addChain(name: "output", type: .filter, hook: "output", priority: -150))
        #expect(messages[5] == .addChain(name: "prerouting", type: .filter, hook: "prerouting", priority: -150))
        #expect(TracePlan.removalMessages == [.addTable(comment: nil), .deleteTable])
    }

    @Test func ruleExpressions() {
        let plan = TracePlan(mark: 0x4c4f, queue: 15000)
        let synOnly: [E] = [
            .meta(.l4proto), .compare(equal: true, [6]), .payload(.transport, offset: 13, length: 1), .mask([0x17]),
            .compare(equal: true, [0x02]),
        ]
        let notMarked: [E] = [.meta(.mark), .compare(equal: false, [0x4f, 0x4c, 0, 0])]
        let notLoopback: [E] = [.meta(.iifname), .compare(equal: false, RulePlan.interfaceName("lo"))]
        #expect(plan.expressions(plan.chains[0]) == synOnly + notMarked + [.queue(number: 15000, bypass: true)])
        #expect(
            plan.expressions(plan.chains[1])
                == notLoopback + synOnly + notMarked + [.queue(number: 15000, bypass: true)]
        )
        let xt = plan.with(statement: .xtables)
        #expect(xt.expressions(xt.chains[0]).last == .xtQueue(number: 15000, bypass: true))
        guard case .addRule(_, let expressions, _) = xt.netlinkMessages()[4] else {
            Issue.record("the output chain's rule")
            return
        }
        #expect(expressions == xt.expressions(xt.chains[0]))
    }

    @Test func libnftnlPrintsTheRuleAsNftDoes() throws {
        let plan = TracePlan(mark: 0x4c4f, queue: 15000)
        let native = try #require(NetfilterSocket.describe(plan.expressions(plan.chains[0]), chain: "output"))
        let lines = native.split(separator: "\n").filter { $0.hasPrefix("  [") }
        #expect(
            lines == [
                "  [ meta load l4proto => reg 1 ]", "  [ cmp eq reg 1 0x00000006 ]",
                "  [ payload load 1b @ transport header + 13 => reg 1 ]",
                "  [ bitwise reg 1 = ( reg 1 & 0x00000017 ) ^ 0x00000000 ]", "  [ cmp eq reg 1 0x00000002 ]",
                "  [ meta load mark => reg 1 ]", "  [ cmp neq reg 1 0x00004c4f ]", "  [ queue num 15000 bypass ]",
            ],
            "\(native)"
        )
        let xt = plan.with(statement: .xtables)
        let target = try #require(NetfilterSocket.describe(xt.expressions(xt.chains[0]), chain: "output"))
        #expect(target.contains("  [ target name NFQUEUE rev 3 ]"), "\(target)")
    }

    @Test func errorsNameTheTraceTable() {
        let missing = NetfilterError(
            operation: .applyTrace,
            message: TracePlan(mark: 1).netlinkMessages()[4].description(table: TracePlan.table),
            errno: 2
        )
        #expect(
            missing.description.hasPrefix(
                "cannot apply the trace table: add rule to chain output (\"loomctl trace\"): No such file or directory"
            )
        )
        #expect(missing.description.contains("CONFIG_NFT_QUEUE"))
        let held = NetfilterError(operation: .openQueue, message: "queue 15000", errno: 1)
        #expect(held.description.hasPrefix("cannot open the trace queue: queue 15000: Operation not permitted"))
        #expect(held.description.contains("another trace") && held.description.contains("CAP_NET_ADMIN"))
    }
}
