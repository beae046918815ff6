// The trace table and TraceQueue against the real kernel, as root, in network namespaces of
// their own (`lttrace<pid>`, and `lttracepeer<pid>` for a client outside the pod; deleted on
// every exit path). Sockets and the queue are opened on threads that entered the pod's
// namespace; `nft` and `ip` run under `ip netns exec` / `ip -n`. Nothing touches the root
// namespace.
import Foundation
import LoomSystem
import Synchronization
import Testing

@testable import LoomIntercept

#if canImport(Glibc)
    import Glibc
#endif

@Suite(
    .serialized,
    .enabled(
        if: canRun,
        "needs root, ip and nft: creates network namespaces lttrace<pid>, lttracepeer<pid> with nf_tables tables and an NFQUEUE queue"
    )
)
struct TraceKernelTests {
    static let prefix = "lttrace"
    static let mark = LoomPorts.socketMark

    @Test func traceTableListsAsItsTextBesideLoomsTable() throws {
        try ScratchNamespace.with(prefix: Self.prefix) { ns in
            try ns.nft("-f", "-", input: NetfilterKernelTests.userTables)
            let userOnly = try ns.nft("list", "ruleset")
            let socket = try ns.socket()
            let plan = RulePlan(InterceptSettings(failPolicy: .closed))
            try socket.apply(plan)
            let before = try ns.nft("list", "ruleset")
            #expect(try socket.traceTable() == (false, nil))
            try socket.removeTrace()  // nothing there yet: fine
            #expect(try ns.nft("list", "ruleset") == before)

            let trace = TracePlan(mark: Self.mark)
            let applied = try socket.applyTrace(trace)
            #expect(applied.mark == Self.mark && applied.queue == TracePlan.defaultQueue)
            #expect(try ns.nft("list", "table", "inet", "loom_trace") == applied.nftText())
            #expect(try socket.applyTrace(trace) == applied, "applied twice: the same form")
            #expect(try ns.nft("list", "table", "inet", "loom_trace") == applied.nftText(), "replaced, not doubled")
            #expect(try socket.traceTable() == (true, "managed by loomd"))
            #expect(try ns.nft("list", "table", "inet", "loom") == plan.nftText(), "Loom's table is untouched")
            #expect(try ns.nft("list", "ruleset") == before + "\(applied.nftText())", "only the trace table was added")

            try socket.removeTrace()
            try socket.removeTrace()
            #expect(try ns.nft("list", "ruleset") == before, "removeTrace takes only the trace table")
            #expect(try socket.loomTable() == (true, "managed by loomd"))
            #expect(try !socket.hasTraceTable())

            // Both forms list as their own text, whichever the kernel has.
            let xtables = try socket.applyTrace(trace.with(statement: .xtables))
            #expect(xtables.statement == .xtables)
            #expect(try ns.nft("list", "table", "inet", "loom_trace") == xtables.nftText())

            // Disabling (and uninstall's sweep) removes the trace table with Loom's.
            try socket.remove()
            #expect(try !socket.hasLoomTable() && !socket.hasTraceTable())
            #expect(try ns.nft("list", "ruleset") == userOnly, "every other table as it was")

            // The trace table alone (Loom's removed meanwhile by someone else) goes too.
            try socket.applyTrace(trace)
            try socket.remove()
            #expect(try ns.nft("list", "ruleset") == userOnly)
        }
    }

    /// The native rule's expressions are nft's own for the same text, checked even on a kernel
    /// without nft_queue: nft prints what it builds before the kernel answers.
    @Test func nativeRuleIsWhatNftBuilds() throws {
        try ScratchNamespace.with(prefix: Self.prefix) { ns in
            let plan = TracePlan(mark: Self.mark)
            let result = try runProgram(
                [tools.ip!, "netns", "exec", ns.name, tools.nft!, "--debug=netlink", "-f", "-"],
                input: plan.nftText()
            )
            for chain in plan.chains {
                let ours = try #require(NetfilterSocket.describe(plan.expressions(chain), chain: chain.name))
                let nft = Self.expressionLines(of: "inet loom_trace \(chain.name)", in: result.output)
                #expect(!nft.isEmpty, "nft printed the rule of chain \(chain.name)\n\(result.output)")
                #expect(Self.expressionLines(in: ours) == nft, "chain \(chain.name)")
            }
        }
    }

    /// The `  [ ... ]` lines nft --debug=netlink prints under the header `heading`.
    static func expressionLines(of heading: String, in output: String) -> [String] {
        let lines = output.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        guard let start = lines.firstIndex(where: { $0.trimmingCharacters(in: .whitespaces) == heading }) else {
            return []
        }
        return Array(lines[(start + 1)...].prefix { $0.hasPrefix("  [") })
    }

    static func expressionLines(in text: String) -> [String] {
        text.split(separator: "\n").map(String.init).filter { $0.hasPrefix("  [") }
    }

    @Test func queueSeesFirstSYNsAndAcceptsThem() throws {
        try ScratchNamespace.with(prefix: Self.prefix) { ns in
            try ScratchNamespace.with(prefix: Self.prefix + "peer") { peer in
                try ns.ip("link", "set", "lo", "up")
                // A veth pair to a second namespace: a way out of the pod (to 10.78.0.2, and to
                // addresses nobody has, such as 10.78.0.3) and connections arriving from outside.
                try ns.ip("link", "add", "v0", "type", "veth", "peer", "name", "v1", "netns", peer.name)
                try ns.ip("addr", "add", "10.78.0.1/24", "dev", "v0")
                try ns.ip("link", "set", "v0", "up")
                try peer.ip("addr", "add", "10.78.0.2/24", "dev", "v1")
                try peer.ip("link", "set", "v1", "up")
                try peer.ip("link", "set", "lo", "up")
                try runTrace(ns, peer)
            }
        }
    }

    private func runTrace(_ ns: ScratchNamespace, _ peer: ScratchNamespace) throws {
        let settings = InterceptSettings(excludeOutboundPorts: [8080])
        let plan = RulePlan(settings)
        let socket = try ns.socket()
        try socket.apply(plan)
        let applied = try socket.applyTrace(TracePlan(mark: settings.mark))
        #expect(try ns.nft("list", "table", "inet", "loom_trace") == applied.nftText())

        let queue = try ns.run { try TraceQueue(queue: TracePlan.defaultQueue) }
        // The kernel says EPERM for a queue another socket holds.
        #expect(throws: NetfilterError(operation: .openQueue, message: "queue 15000", errno: 1)) {
            try ns.run { try TraceQueue(queue: TracePlan.defaultQueue) }
        }
        // Listeners: an application on 9000, loomd's outbound and inbound ports.
        let listeners = try ns.run {
            try [
                listener("0.0.0.0:9000"), listener("0.0.0.0:15001"), listener("0.0.0.0:15006"),
                listener("[::1]:9000"),
            ]
        }
        defer { for listener in listeners { listener.close() } }
        let (app, outboundPort, inboundPort, app6) = (listeners[0], listeners[1], listeners[2], listeners[3])
        let veth = try ns.run { if_nametoindex("v0") }

        // 1. 127.0.0.1: seen once, on output through lo (not again on prerouting), bypassed.
        let local = try ns.run { try connect("127.0.0.1:9000") }
        defer { local.close() }
        let localPackets = receive(queue, count: 1)
        try #require(localPackets.count == 1, "\(localPackets)")
        let syn = localPackets[0]
        #expect(syn.hook == .output)
        #expect(syn.source == local.localAddress())
        #expect(syn.destination == SocketAddress(parsing: "127.0.0.1:9000"))
        #expect(syn.outInterface == 1 && syn.inInterface == 0 && syn.mark == 0)
        #expect(abs(syn.receivedAtMs - SystemProcess.nowMilliseconds()) < 5000)
        let decision = plan.decide(syn)
        #expect(decision.verdict == .bypass && decision.reason == "loopback" && decision.chain == "output")
        #expect(completes(local), "accepted: the connection goes on")
        #expect(accepted(app))

        // 2. ::1 the same, in IPv6.
        let local6 = try ns.run { try connect("[::1]:9000") }
        defer { local6.close() }
        let local6Packets = receive(queue, count: 1)
        #expect(local6Packets.map(\.destination) == [SocketAddress(parsing: "[::1]:9000")])
        #expect(local6Packets.map { plan.decide($0).reason } == ["loopback"])
        #expect(completes(local6))
        #expect(accepted(app6))

        // 3. Out through the veth, to an address nobody has: the original destination in the
        // queue, then Loom's redirect to its listener.
        let captured = try ns.run { try connect("10.78.0.3:80") }
        defer { captured.close() }
        let capturedPackets = receive(queue, count: 1)
        try #require(capturedPackets.count == 1, "\(capturedPackets)")
        #expect(capturedPackets[0].destination == SocketAddress(parsing: "10.78.0.3:80"), "before nat: original")
        #expect(capturedPackets[0].source.with(port: 0) == SocketAddress(parsing: "10.78.0.1:0"))
        #expect(capturedPackets[0].outInterface == veth && capturedPackets[0].inInterface == 0)
        let capture = plan.decide(capturedPackets[0])
        #expect(capture.verdict == .redirect(15001) && capture.reason == "outbound capture")
        #expect(completes(captured), "redirected to the listener on 15001")
        #expect(accepted(outboundPort))

        // 4. An excluded port: bypassed (and unanswered: nobody has 10.78.0.3). Closed at
        // once, before TCP retransmits the SYN (which would be queued again).
        let excluded = try ns.run { try connect("10.78.0.3:8080") }
        #expect(receive(queue, count: 1).map { plan.decide($0).reason } == ["excluded outbound port"])
        excluded.close()

        // 5. loomd's own socket (Loom's mark): not queued at all.
        let own = try ns.run { try connect("127.0.0.1:9000", mark: Self.mark) }
        defer { own.close() }
        #expect(completes(own))
        #expect(accepted(app))

        // 6. From outside the pod, through the veth: prerouting, inbound capture.
        let remote = try peer.run { try connect("10.78.0.1:9000") }
        defer { remote.close() }
        let remotePackets = receive(queue, count: 1)
        try #require(remotePackets.count == 1, "\(remotePackets)")
        #expect(remotePackets[0].hook == .prerouting)
        #expect(remotePackets[0].destination == SocketAddress(parsing: "10.78.0.1:9000"))
        #expect(remotePackets[0].source.with(port: 0) == SocketAddress(parsing: "10.78.0.2:0"))
        #expect(remotePackets[0].inInterface == veth)
        let inbound = plan.decide(remotePackets[0])
        #expect(inbound.verdict == .redirect(15006) && inbound.chain == "prerouting")
        #expect(completes(remote))
        #expect(accepted(inboundPort))

        // Nothing else was queued: no second sightings, no SYN-ACKs, not the marked socket.
        Thread.sleep(forTimeInterval: 0.2)
        #expect(queue.receive(max: 16) == [])
        let counters = queue.counters
        #expect(counters.read == 5 && counters.returned == 5, "\(counters)")
        #expect(counters.unanswered == 0 && counters.kernelErrors == 0 && counters.unparsed == 0, "\(counters)")

        // With nobody reading, the bypass flag lets connections through.
        queue.close()
        queue.close()
        #expect(queue.receive(max: 16) == [])
        let unread = try ns.run { try connect("127.0.0.1:9000") }
        defer { unread.close() }
        #expect(completes(unread), "queue closed: accepted without a reader")
        #expect(accepted(app))

        try socket.removeTrace()
        let ruleset = try ns.nft("list", "ruleset")
        #expect(!ruleset.contains("loom_trace"))
        #expect(try ns.nft("list", "table", "inet", "loom") == plan.nftText())
        socket.close()
    }

    /// Waits up to 2 s for `count` packets.
    private func receive(_ queue: TraceQueue, count: Int) -> [KernelPacket] {
        var packets: [KernelPacket] = []
        let deadline = SystemProcess.nowMilliseconds() + 2000
        while packets.count < count && SystemProcess.nowMilliseconds() < deadline {
            if wait(queue.fd, events: Int16(POLLIN), ms: 100) { packets += queue.receive(max: 16) }
        }
        return packets
    }

    /// Whether a non-blocking connect completes within 2 s.
    private func completes(_ fd: FileDescriptor) -> Bool {
        wait(fd, events: Int16(POLLOUT), ms: 2000) && fd.pendingError() == 0
    }

    /// Whether `listener` has a connection to accept (within 2 s); closes it.
    private func accepted(_ listener: FileDescriptor) -> Bool {
        guard wait(listener, events: Int16(POLLIN), ms: 2000), case .processed(let (fd, _))? = try? listener.accept()
        else { return false }
        fd.close()
        return true
    }

    private func wait(_ fd: FileDescriptor, events: Int16, ms: Int32) -> Bool {
        var entry = pollfd(fd: fd.rawValue, events: events, revents: 0)
        return poll(&entry, 1, ms) == 1 && entry.revents & events != 0
    }
}

private func listener(_ address: String) throws -> FileDescriptor {
    let address = SocketAddress(parsing: address)!
    let fd = try FileDescriptor.tcpSocket(family: address.family)
    do {
        try fd.listen(on: address, reusePort: false, backlog: 16)
    } catch {
        fd.close()
        throw error
    }
    return fd
}

/// Starts a non-blocking connect from the calling thread's namespace.
private func connect(_ address: String, mark: UInt32? = nil) throws -> FileDescriptor {
    let address = SocketAddress(parsing: address)!
    let fd = try FileDescriptor.tcpSocket(family: address.family)
    do {
        if let mark { try fd.setMark(mark) }
        _ = try fd.connect(to: address)
    } catch {
        fd.close()
        throw error
    }
    return fd
}
