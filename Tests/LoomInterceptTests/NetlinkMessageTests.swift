import Testing

@testable import LoomIntercept

/// The batches NetfilterSocket sends, as values. Expected expressions are what
/// `nft --debug=netlink` (nft 1.0.6) prints for the same `nft` text.
@Suite struct NetlinkMessageTests {
    typealias E = NetlinkExpression

    func cidr(_ text: String) throws -> CIDR { try CIDR(parsing: text) }

    func expressions(_ match: RulePlan.Match) -> [E] {
        var setID: UInt32 = 0
        return RulePlan.expressions(match, nextSetID: &setID).1
    }

    @Test func applyReplacesTheTableInOneBatch() {
        let messages = RulePlan(InterceptSettings(captureInbound: false)).netlinkMessages()
        #expect(
            messages.map(\.description) == [
                "add table inet loom", "delete table inet loom", "add table inet loom", "add chain output",
                "add rule to chain output (\"not TCP\")", "add rule to chain output (\"loomd's own socket\")",
                "add rule to chain output (\"loopback\")", "add rule to chain output (\"outbound capture\")",
            ]
        )
        #expect(messages[2] == .addTable(comment: "managed by loomd"))
        #expect(messages[3] == .addChain(name: "output", type: .nat, hook: "output", priority: -100))
        #expect(RulePlan.removalMessages == [.addTable(comment: nil), .deleteTable])
    }

    @Test func failOpenAddsTheHeartbeatSetWithALiveElement() {
        let plan = RulePlan(InterceptSettings(failPolicy: .open, heartbeatSeconds: 7))
        let messages = plan.netlinkMessages()
        let set = NetlinkSet(name: "heartbeat", id: 1, keyType: .inetProto, kind: .timeout, size: 0)
        #expect(Array(messages[3...4]) == [.addSet(set), RulePlan.heartbeatElement(seconds: 7, setID: 1)])
        #expect(
            RulePlan.heartbeatMessages(seconds: 7) == [
                .flushSet("heartbeat"),
                .addElements(set: "heartbeat", setID: 0, keys: [[6]], timeoutMilliseconds: 7000),
            ]
        )
        #expect(RulePlan.heartbeatMessages(seconds: 0)[1].timeoutMilliseconds == 1000, "never an eternal heartbeat")
        #expect(
            expressions(.heartbeatExpired) == [.meta(.l4proto), .lookup(set: "heartbeat", setID: 0, inverted: true)]
        )
    }

    @Test func simpleMatchesAndVerdicts() {
        #expect(expressions(.notTCP) == [.meta(.l4proto), .compare(equal: false, [6])])
        #expect(expressions(.mark(0x4c4f)) == [.meta(.mark), .compare(equal: true, [0x4f, 0x4c, 0, 0])])
        let lo: [UInt8] = [0x6c, 0x6f] + Array(repeating: 0, count: 14)
        #expect(expressions(.outputLoopback) == [.meta(.oifname), .compare(equal: true, lo)])
        #expect(expressions(.inputLoopback) == [.meta(.iifname), .compare(equal: true, lo)])
        #expect(RulePlan.expressions(.bypass) == [.returnVerdict])
        #expect(
            RulePlan.expressions(.redirect(15001)) == [
                .meta(.l4proto), .compare(equal: true, [6]), .load([0x3a, 0x99]), .redirectToPort,
            ]
        )
    }

    @Test func portsAreOneCompareOrAnAnonymousSet() {
        let tcpDport: [E] = [.meta(.l4proto), .compare(equal: true, [6]), .payload(.transport, offset: 2, length: 2)]
        #expect(expressions(.destinationPorts([15008])) == tcpDport + [.compare(equal: true, [0x3a, 0xa0])])

        var setID: UInt32 = 4
        let (sets, matched) = RulePlan.expressions(.destinationPorts([22, 8080]), nextSetID: &setID)
        let set = NetlinkSet(name: "__set%d", id: 5, keyType: .inetService, kind: .constant, size: 2)
        #expect(
            sets == [
                .addSet(set),
                .addElements(set: "__set%d", setID: 5, keys: [[0, 22], [0x1f, 0x90]], timeoutMilliseconds: 0),
            ]
        )
        #expect(matched == tcpDport + [.lookup(set: "__set%d", setID: 5, inverted: false)])
        #expect(sets.map(\.description) == ["add anonymous set", "add elements to anonymous set"])
    }

    @Test func largePortSetsAreSplitAcrossMessages() {
        var setID: UInt32 = 0
        let ports = (1...1000).map { UInt16($0) }
        let (sets, _) = RulePlan.expressions(.destinationPorts(ports), nextSetID: &setID)
        #expect(sets.count == 3, "one set, two element messages of at most 512 keys")
        #expect(sets.compactMap(\.keyCount) == [512, 488])
    }

    @Test func everyAnonymousSetHasItsOwnID() throws {
        let plan = RulePlan(
            InterceptSettings(excludeOutboundPorts: [22, 80], excludeInboundPorts: [9090, 9091], failPolicy: .open)
        )
        let ids = plan.netlinkMessages().compactMap { message -> UInt32? in
            if case .addSet(let set) = message { return set.id }
            return nil
        }
        #expect(ids == [1, 2, 3], "heartbeat, then one set per port list")
    }

    @Test func prefixesAreBuiltAsNftBuildsThem() throws {
        func prefix(_ text: String) throws -> [E] { try RulePlan.prefixExpressions(cidr(text)) }
        let v4: [E] = [.meta(.nfproto), .compare(equal: true, [2])]
        let v6: [E] = [.meta(.nfproto), .compare(equal: true, [10])]
        // Whole bytes: load and compare only those.
        #expect(
            try prefix("10.0.0.0/8") == v4 + [.payload(.network, offset: 16, length: 1), .compare(equal: true, [10])]
        )
        #expect(
            try prefix("169.254.169.254")
                == v4 + [.payload(.network, offset: 16, length: 4), .compare(equal: true, [169, 254, 169, 254])]
        )
        #expect(
            try prefix("fd00::/8") == v6 + [.payload(.network, offset: 24, length: 1), .compare(equal: true, [0xfd])]
        )
        // Otherwise: the whole address, masked.
        #expect(
            try prefix("10.96.0.0/12")
                == v4 + [
                    .payload(.network, offset: 16, length: 4), .mask([0xff, 0xf0, 0, 0]),
                    .compare(equal: true, [10, 0x60, 0, 0]),
                ]
        )
        #expect(
            try prefix("0.0.0.0/0")
                == v4 + [
                    .payload(.network, offset: 16, length: 4), .mask([0, 0, 0, 0]),
                    .compare(equal: true, [0, 0, 0, 0]),
                ]
        )
        let mask65: [UInt8] = Array(repeating: 0xff, count: 8) + [0x80] + Array(repeating: 0, count: 7)
        let address: [UInt8] = [0x20, 0x01, 0x0d, 0xb8] + Array(repeating: 0, count: 12)
        #expect(
            try prefix("2001:db8::/65")
                == v6 + [.payload(.network, offset: 24, length: 16), .mask(mask65), .compare(equal: true, address)]
        )
    }

    @Test func errorsNameTheMessageAndWhatToCheck() {
        let perm = NetfilterError(operation: .apply, message: "add table inet loom", errno: 1)
        #expect(perm.description.hasPrefix("cannot apply Loom's rules: add table inet loom: Operation not permitted"))
        #expect(perm.description.contains("CAP_NET_ADMIN"))
        let noNat = NetfilterError(operation: .apply, message: "add chain output", errno: 2)
        #expect(noNat.description.contains("nft_chain_nat"))
        let noSet = NetfilterError(operation: .refreshHeartbeat, message: "flush set heartbeat", errno: 2)
        #expect(noSet.description.contains("heartbeat set is missing"))
        let closed = NetfilterError(operation: .remove, message: nil, errno: 9)
        #expect(closed.description.contains("socket is closed"))
    }
}

extension NetlinkMessage {
    fileprivate var timeoutMilliseconds: UInt64? {
        if case .addElements(_, _, _, let timeout) = self { return timeout }
        return nil
    }

    fileprivate var keyCount: Int? {
        if case .addElements(_, _, let keys, _) = self { return keys.count }
        return nil
    }
}
