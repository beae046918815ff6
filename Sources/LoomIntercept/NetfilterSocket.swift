// Loom's tables through netlink: a NETLINK_NETFILTER socket bound to one pod's network
// namespace, and the batches loomd sends through it (apply, remove, heartbeat; and while a
// trace runs, applyTrace and removeTrace for the trace table).
// Each batch is one nf_tables transaction: the kernel applies all of it or none of it.
// What the batches contain is decided in RulePlan+Netlink.swift; CLoomNetfilter builds
// the bytes.
import CLoomNetfilter
import LoomSystem
import Synchronization

/// A netfilter socket in the network namespace of the thread that opened it.
///
/// A socket stays in the namespace it was created in, so loomd opens one per pod on a
/// thread that has entered the pod's namespace, then uses it from anywhere. Calls are
/// serialised; `close()` (or deinit) releases it.
public final class NetfilterSocket: Sendable {
    private struct State {
        var handle: OpaquePointer?
        /// Sequence number of the next message; batches number their messages from it.
        var sequence: UInt32 = 1
    }

    private let state: Mutex<State>

    /// Opens a socket in the calling thread's current network namespace.
    public init() throws(NetfilterError) {
        var err: CInt = 0
        guard let handle = cloom_nft_socket_open(&err) else {
            throw NetfilterError(operation: .open, message: nil, errno: -err)
        }
        state = Mutex(State(handle: handle))
    }

    deinit { close() }

    /// Closes the socket; later calls fail with EBADF. Closing twice is harmless.
    public func close() {
        state.withLock { state in
            if let handle = state.handle { cloom_nft_socket_close(handle) }
            state.handle = nil
        }
    }

    /// Installs `plan`, replacing Loom's table (`inet loom`) if there is one, in one
    /// transaction: for fail open, with a live heartbeat of `heartbeatSeconds`.
    public func apply(_ plan: RulePlan) throws(NetfilterError) {
        try send(plan.netlinkMessages(), .apply)
    }

    /// Deletes Loom's table and the trace table (`inet loom_trace`), those that exist, in
    /// one transaction: a pod that is not intercepted is not traced either. Touches no
    /// other table.
    public func remove() throws(NetfilterError) {
        try send([(RulePlan.table, RulePlan.removalMessages), (TracePlan.table, TracePlan.removalMessages)], .remove)
    }

    /// Installs the trace table (`inet loom_trace`), replacing it if there is one, in one
    /// transaction. Loom's table is not touched. Returns the plan as installed: a kernel
    /// without nft_queue refuses the `queue` statement (ENOENT), and then the plan's
    /// xtables form is installed instead (its `nftText()` is what `nft list` shows).
    @discardableResult
    public func applyTrace(_ plan: TracePlan) throws(NetfilterError) -> TracePlan {
        do {
            try send([(TracePlan.table, plan.netlinkMessages())], .applyTrace)
            return plan
        } catch let error where plan.statement == .native && error.errno == CLOOM_NFT_ENOENT {
            let fallback = plan.with(statement: .xtables)
            do {
                try send([(TracePlan.table, fallback.netlinkMessages())], .applyTrace)
            } catch let second where second.errno == CLOOM_NFT_ENOENT {
                throw error  // neither form: the first error names the queue statement
            }
            return fallback
        }
    }

    /// Deletes the trace table if it exists. Touches no other table.
    public func removeTrace() throws(NetfilterError) {
        try send([(TracePlan.table, TracePlan.removalMessages)], .removeTrace)
    }

    /// Renews the fail-open heartbeat: the `tcp` element of set `heartbeat` now expires
    /// `seconds` from now. ENOENT if the table or the set (fail closed) is missing.
    public func refreshHeartbeat(seconds: Int) throws(NetfilterError) {
        try send(RulePlan.heartbeatMessages(seconds: seconds), .refreshHeartbeat)
    }

    /// Whether table `inet loom` exists, and its comment (`RulePlan.tableComment` when
    /// loomd or `loomctl rules` made it).
    public func loomTable() throws(NetfilterError) -> (exists: Bool, comment: String?) {
        try table(RulePlan.table, .query)
    }

    /// Whether table `inet loom` exists, whatever its comment.
    public func hasLoomTable() throws(NetfilterError) -> Bool {
        try loomTable().exists
    }

    /// Whether the trace table `inet loom_trace` exists, and its comment.
    public func traceTable() throws(NetfilterError) -> (exists: Bool, comment: String?) {
        try table(TracePlan.table, .queryTrace)
    }

    /// Whether the trace table `inet loom_trace` exists, whatever its comment.
    public func hasTraceTable() throws(NetfilterError) -> Bool {
        try traceTable().exists
    }

    /// Whether table `inet NAME` exists, and its comment.
    private func table(
        _ name: String,
        _ operation: NetfilterError.Operation
    ) throws(NetfilterError) -> (exists: Bool, comment: String?) {
        let capacity = 256
        var comment = [CChar](repeating: 0, count: capacity)
        var hasComment: CInt = 0
        let result = try withHandle(operation) { handle, sequence in
            let rc = cloom_nft_get_table(
                handle,
                sequence,
                CLOOM_NFPROTO_INET,
                name,
                &comment,
                capacity,
                &hasComment
            )
            return (rc, 1)
        }
        if result < 0 { throw NetfilterError(operation: operation, message: nil, errno: -result) }
        let text = comment.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        return (result == 1, hasComment != 0 ? text : nil)
    }

    /// Sends `messages` (in Loom's table) as one batch; an error names the message the
    /// kernel refused.
    func send(_ messages: [NetlinkMessage], _ operation: NetfilterError.Operation) throws(NetfilterError) {
        try send([(RulePlan.table, messages)], operation)
    }

    /// Sends the messages of each table, in order, as one batch.
    func send(
        _ tables: [(table: String, messages: [NetlinkMessage])],
        _ operation: NetfilterError.Operation
    ) throws(NetfilterError) {
        let messages = tables.flatMap { table in table.messages.map { (table: table.table, message: $0) } }
        var failed: UInt32 = CLOOM_NFT_BATCH_INDEX
        let rc = try withHandle(operation) { handle, sequence in
            guard let batch = cloom_nft_batch_new(CLOOM_NFPROTO_INET, sequence) else {
                return (-CLOOM_NFT_ENOMEM, 0)
            }
            defer { cloom_nft_batch_free(batch) }
            for (index, (table, message)) in messages.enumerated() {
                let rc = Self.add(message, in: table, to: batch)
                if rc < 0 {
                    failed = UInt32(index)
                    return (rc, 0)
                }
            }
            // BEGIN, the messages, END.
            return (cloom_nft_batch_send(handle, batch, &failed), UInt32(messages.count) + 2)
        }
        if rc < 0 {
            var message: String?
            if failed < messages.count {
                let refused = messages[Int(failed)]
                message = refused.message.description(table: refused.table)
            }
            throw NetfilterError(operation: operation, message: message, errno: -rc)
        }
    }

    /// Runs `body` with the open socket and the first free sequence number; `body`
    /// returns its result and how many sequence numbers it used.
    private func withHandle(
        _ operation: NetfilterError.Operation,
        _ body: (OpaquePointer, UInt32) -> (CInt, UInt32)
    ) throws(NetfilterError) -> CInt {
        let result: CInt? = state.withLock { state in
            guard let handle = state.handle else { return nil }
            let (rc, used) = body(handle, state.sequence)
            state.sequence &+= used
            return rc
        }
        guard let result else { throw NetfilterError(operation: operation, message: nil, errno: CLOOM_NFT_EBADF) }
        return result
    }

    // MARK: - Messages to CLoomNetfilter calls

    private static func add(_ message: NetlinkMessage, in table: String, to batch: OpaquePointer) -> CInt {
        switch message {
        case .addTable(let comment): return cloom_nft_add_table(batch, table, comment)
        case .deleteTable: return cloom_nft_delete_table(batch, table)
        case .addChain(let name, let type, let hook, let priority):
            return cloom_nft_add_chain(batch, table, name, type.rawValue, hookNumber(hook), priority)
        case .addSet(let set):
            let (type, length, byteOrder) = keyFormat(set.keyType)
            let flags =
                set.kind == .constant
                ? CLOOM_NFT_SET_ANONYMOUS | CLOOM_NFT_SET_CONSTANT : CLOOM_NFT_SET_TIMEOUT
            return cloom_nft_add_set(batch, table, set.name, set.id, flags, type, length, byteOrder, set.size)
        case .addElements(let set, let setID, let keys, let timeout):
            let length = UInt32(keys.first?.count ?? 0)
            let flat = keys.flatMap { $0 }
            return cloom_nft_add_elements(batch, table, set, setID, flat, length, UInt32(keys.count), timeout)
        case .flushSet(let set): return cloom_nft_flush_set(batch, table, set)
        case .addRule(let chain, let expressions, let comment):
            guard let rule = cloom_nft_rule_new(table, chain, comment) else { return -CLOOM_NFT_ENOMEM }
            defer { cloom_nft_rule_free(rule) }
            for expression in expressions {
                let rc = add(expression, to: rule)
                if rc < 0 { return rc }
            }
            return cloom_nft_add_rule(batch, rule)
        }
    }

    /// A rule's expressions as libnftnl prints them, the form of `nft --debug=netlink`
    /// (`  [ meta load l4proto => reg 1 ]`, one per line), for tests.
    static func describe(_ expressions: [NetlinkExpression], chain: String) -> String? {
        guard let rule = cloom_nft_rule_new(TracePlan.table, chain, nil) else { return nil }
        defer { cloom_nft_rule_free(rule) }
        for expression in expressions where add(expression, to: rule) < 0 { return nil }
        var buffer = [CChar](repeating: 0, count: 8192)
        let length = cloom_nft_rule_describe(rule, &buffer, buffer.count)
        guard length >= 0, Int(length) < buffer.count else { return nil }
        return buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }

    private static func add(_ expression: NetlinkExpression, to rule: OpaquePointer) -> CInt {
        let reg = CLOOM_NFT_REG_1
        switch expression {
        case .meta(let key): return cloom_nft_expr_meta(rule, metaKey(key), reg)
        case .compare(let equal, let data):
            let op = equal ? CLOOM_NFT_CMP_EQ : CLOOM_NFT_CMP_NEQ
            return cloom_nft_expr_cmp(rule, op, reg, data, UInt32(data.count))
        case .payload(let base, let offset, let length):
            let header = base == .network ? CLOOM_NFT_PAYLOAD_NETWORK_HEADER : CLOOM_NFT_PAYLOAD_TRANSPORT_HEADER
            return cloom_nft_expr_payload(rule, header, offset, length, reg)
        case .mask(let mask):
            let zero = [UInt8](repeating: 0, count: mask.count)
            return cloom_nft_expr_bitwise(rule, reg, reg, mask, zero, UInt32(mask.count))
        case .lookup(let set, let setID, let inverted):
            return cloom_nft_expr_lookup(rule, reg, set, setID, inverted ? 1 : 0)
        case .load(let data): return cloom_nft_expr_immediate(rule, reg, data, UInt32(data.count))
        case .returnVerdict: return cloom_nft_expr_verdict(rule, CLOOM_NFT_RETURN)
        case .redirectToPort: return cloom_nft_expr_redir(rule, reg)
        case .queue(let number, let bypass):
            return cloom_nft_expr_queue(rule, number, bypass ? CLOOM_NFT_QUEUE_FLAG_BYPASS : 0)
        case .xtQueue(let number, let bypass):
            return cloom_nft_expr_xt_queue(rule, number, bypass ? CLOOM_NFT_QUEUE_FLAG_BYPASS : 0)
        }
    }

    private static func metaKey(_ key: NetlinkExpression.MetaKey) -> UInt32 {
        switch key {
        case .l4proto: return CLOOM_NFT_META_L4PROTO
        case .nfproto: return CLOOM_NFT_META_NFPROTO
        case .mark: return CLOOM_NFT_META_MARK
        case .iifname: return CLOOM_NFT_META_IIFNAME
        case .oifname: return CLOOM_NFT_META_OIFNAME
        }
    }

    private static func hookNumber(_ hook: String) -> UInt32 {
        switch hook {
        case "prerouting": return CLOOM_NF_INET_PRE_ROUTING
        case "input": return CLOOM_NF_INET_LOCAL_IN
        case "forward": return CLOOM_NF_INET_FORWARD
        case "output": return CLOOM_NF_INET_LOCAL_OUT
        case "postrouting": return CLOOM_NF_INET_POST_ROUTING
        default: preconditionFailure("RulePlan made a chain on unknown hook '\(hook)'")
        }
    }

    /// nft's datatype number, key length and key byte order (kept in the set's userdata;
    /// nft lists elements with them).
    private static func keyFormat(_ type: NetlinkSet.KeyType) -> (UInt32, UInt32, UInt32) {
        switch type {
        case .inetProto: return (12, 1, 0)  // TYPE_INET_PROTOCOL, 1 byte, no byte order
        case .inetService: return (13, 2, 2)  // TYPE_INET_SERVICE, 2 bytes, BYTEORDER_BIG_ENDIAN
        }
    }
}

/// A netfilter operation that failed: which, the message the kernel refused, and why.
public struct NetfilterError: Error, Equatable, CustomStringConvertible, Sendable {
    public enum Operation: String, Sendable {
        case open = "open a netfilter socket"
        case apply = "apply Loom's rules"
        case remove = "remove Loom's table"
        case refreshHeartbeat = "refresh the heartbeat"
        case query = "look up table inet loom"
        case queryTrace = "look up table inet loom_trace"
        case applyTrace = "apply the trace table"
        case removeTrace = "remove the trace table"
        case openQueue = "open the trace queue"
    }

    public let operation: Operation
    /// The refused message, e.g. `add rule to chain output ("loopback")`; nil when the
    /// socket or the batch as a whole failed.
    public let message: String?
    public let errno: CInt

    public var description: String {
        var text = "cannot \(operation.rawValue)"
        if let message { text += ": \(message)" }
        text += ": \(Errno.describe(errno)) (errno \(errno))"
        if let hint { text += "; \(hint)" }
        return text
    }

    /// What to check, for the errors an operator can do something about.
    var hint: String? {
        if operation == .openQueue { return queueHint }
        switch errno {
        case CLOOM_NFT_EPERM:
            return "changing nf_tables needs CAP_NET_ADMIN in the pod's network namespace (run loomd as root)"
        case CLOOM_NFT_EOPNOTSUPP, CLOOM_NFT_EPROTONOSUPPORT, CLOOM_NFT_EAFNOSUPPORT:
            return "the kernel lacks nf_tables (CONFIG_NF_TABLES, CONFIG_NF_TABLES_INET)"
        case CLOOM_NFT_ENOENT where operation == .refreshHeartbeat:
            return "Loom's table or its heartbeat set is missing (not applied, or applied with fail policy closed)"
        case CLOOM_NFT_ENOENT where operation == .applyTrace:
            return
                "the kernel lacks both nft_queue (CONFIG_NFT_QUEUE) and xtables' NFQUEUE target (CONFIG_NETFILTER_XT_TARGET_NFQUEUE with CONFIG_NFT_COMPAT)"
        case CLOOM_NFT_ENOENT:
            return "the kernel lacks nf_tables NAT support (modules nft_chain_nat, nft_redir)"
        case CLOOM_NFT_EBADF where message == nil:
            return "the netfilter socket is closed"
        default: return nil
        }
    }

    private var queueHint: String? {
        switch errno {
        // The kernel answers EPERM both without CAP_NET_ADMIN and for a queue another socket holds.
        case CLOOM_NFT_EPERM:
            return
                "another socket holds this queue in the pod's network namespace (another trace, or another program using NFQUEUE), or loomd lacks CAP_NET_ADMIN there"
        case CLOOM_NFT_EBUSY: return "this socket is already bound to the queue"
        case CLOOM_NFT_EOPNOTSUPP, CLOOM_NFT_EPROTONOSUPPORT:
            return "the kernel lacks nfnetlink_queue (CONFIG_NETFILTER_NETLINK_QUEUE)"
        case CLOOM_NFT_EBADF: return "the trace queue is closed"
        default: return nil
        }
    }
}
