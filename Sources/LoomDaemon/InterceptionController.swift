// The interception manager: turns NodeState (what the operator asked for) into listeners
// in each pod's netns and one nf_tables table per pod, keeps fail-open heartbeats alive,
// notices deleted namespaces, and persists the state so a restarted loomd rebuilds it.
//
// Order matters for users: enabling opens the listeners before the rules redirect
// anything to them; disabling removes the rules before it closes the listeners. Either
// way no connection meets a redirect with nobody listening.
import Foundation
import Logging
import LoomIntercept
import LoomRelay
import LoomSystem
import LoomTrace

/// What loomd holds for one pod whose netns is open.
final class PodRuntime {
    let context: PodContext
    var netfilter: NetfilterSocket?
    /// The settings of the table in the kernel (nil: no table).
    var applied: InterceptSettings?
    /// The listening sockets the loops hold for this pod (a takeover hands them over).
    var listenerSet: [PodListener] = []
    var listeners: Int { listenerSet.count }
    /// The NFQUEUE trace table is installed (a tracer watches this pod).
    var kernelTraced = false
    var changeMs: Double?
    var error: String?

    init(context: PodContext) { self.context = context }
}

/// A pod that could not be switched to the state asked for.
struct PodError: Error, CustomStringConvertible {
    let netns: String
    let message: String
    var description: String { "pod \(netns): \(message)" }
}

/// Owns every pod's runtime. All entry points take `lock`: the admin thread and the
/// ticker thread call in; relay loops never do (they get `LoopCommand`s).
final class InterceptionController: @unchecked Sendable {
    // @unchecked: every mutable field is touched only with `lock` held.
    let lock = NSLock()
    let loops: [RelayLoop]
    let base: InterceptSettings
    private let ipv6: Bool
    private let backlog: Int32
    private let tunnelPort: UInt16
    /// Workload certificates (set once by the daemon before `start`; nil: no mesh CA,
    /// no mTLS and no tunnel listener).
    var certificates: WorkloadCertificates?
    private let statePath: String?
    let logger: Logger
    private(set) var state: NodeState
    var runtimes: [String: PodRuntime] = [:]
    /// Tables applied per pod over loomd's life (kept across disable and enable, so a
    /// generation number is never reused for a different table).
    var generations: [String: Int] = [:]
    private var nextPodID = 1

    /// A pod id not used before in this loomd (with `lock` held).
    func nextPodIdentifier() -> Int {
        defer { nextPodID += 1 }
        return nextPodID
    }
    /// How long each table change took in the kernel (metrics).
    let programming = LatencyHistogram()
    /// Where kernel trace queues are read (set once by the daemon before `start`).
    var traceHub: TraceHub?

    init(
        loops: [RelayLoop],
        base: InterceptSettings,
        relay: RelayConfiguration,
        state: NodeState,
        statePath: String?,
        logger: Logger
    ) {
        self.loops = loops
        self.base = base
        self.ipv6 = relay.ipv6
        self.backlog = relay.backlog
        self.tunnelPort = relay.tunnelPort
        self.state = state
        self.statePath = statePath
        self.logger = logger
    }

    // MARK: - Entry points

    /// Brings every known pod to its asked-for state; removes tables left by an earlier
    /// loomd in pods that are not intercepted any more.
    func start() {
        lock.withLock {
            for pod in state.pods {
                if let error = reconcile(pod.netns, cleanOrphan: true) { logger.warning("\(error)") }
                // A trace table a killed loomd left behind (harmless: its queue rule
                // bypasses when nobody reads, but nothing is left behind).
                if let runtime = runtimes[pod.netns] { try? runtime.netfilter?.removeTrace() }
            }
        }
    }

    /// Once a second: heartbeats for `open` pods, deleted namespaces, pods that appeared.
    func tick() {
        lock.withLock {
            certificates?.rotateDue(runtimes.values.map(\.context))
            for (path, runtime) in runtimes {
                if !runtime.context.netns.isStillNamed {
                    podGone(path, runtime)
                } else if let applied = runtime.applied, applied.failPolicy == .open {
                    do {
                        try runtime.netfilter?.refreshHeartbeat(seconds: applied.heartbeatSeconds)
                    } catch {
                        logger.warning("pod \(path): heartbeat refresh failed: \(error)")
                    }
                }
            }
            // Configured pods whose netns exists now (created after loomd started).
            for pod in state.pods where runtimes[pod.netns] == nil && state.effectiveOptions(pod) != nil {
                if FileIdentity(path: pod.netns) != nil, let error = reconcile(pod.netns, cleanOrphan: false) {
                    logger.warning("\(error)")
                }
            }
        }
    }

    /// Answers one admin request.
    func handle(_ request: AdminRequest) -> AdminReply {
        let started = SystemProcess.nowMicroseconds()
        var reply = lock.withLock { perform(request) }
        reply.elapsedMs = Double(SystemProcess.nowMicroseconds() - started) / 1000
        return reply
    }

    /// The mesh namespace of a known pod.
    func namespace(of netns: String) -> String? {
        lock.withLock { state.pod(netns)?.namespace }
    }

    /// A reloaded configuration: pods it lists that loomd does not know yet are added
    /// (and intercepted if their namespace is); namespaces it switches that loomctl has
    /// not changed take its setting. Pods and namespaces loomctl changed keep theirs.
    func configChanged(_ config: NodeState) {
        lock.withLock {
            var changed: [String] = []
            for pod in config.pods where state.pod(pod.netns) == nil {
                state.pods.append(pod)
                changed.append(pod.netns)
            }
            for (name, policy) in config.namespaces where state.namespaces[name] == nil {
                state.namespaces[name] = policy
                changed += state.pods.filter { $0.namespace == name }.map(\.netns)
            }
            guard !changed.isEmpty else { return }
            save()
            for path in changed {
                if let error = reconcile(path, cleanOrphan: false) { logger.warning("\(error)") }
            }
        }
    }

    /// One row per known pod.
    func podStatuses() -> [PodStatus] {
        lock.withLock { state.pods.map(status) }
    }

    /// Closes every listener and netlink socket; leaves the rules as the fail policy
    /// says (they stay: `closed` pods refuse, `open` pods go direct once the heartbeat
    /// expires).
    func shutDown() {
        lock.withLock {
            for (_, runtime) in runtimes { release(runtime, resetConnections: false) }
            runtimes.removeAll()
        }
    }

    // MARK: - Commands

    private func perform(_ request: AdminRequest) -> AdminReply {
        let selector = request.selector ?? Selector()
        var next = state
        do {
            switch request.op {
            case .status:
                return AdminReply(pods: state.pods.map(status))
            case .enable:
                try next.enable(selector, options: request.options)
            case .disable:
                try next.disable(selector)
            case .podAdd:
                guard var pod = request.pod else { return AdminReply(error: "pod add needs --netns") }
                pod.fromConfig = false
                try next.addPod(pod)
            case .podRemove:
                try next.removePod(selector.netns ?? "")
            case .uninstall:
                return uninstall()
            case .reload, .routes, .explain:
                return AdminReply(error: "\(request.op) is answered by the daemon, not the interception controller")
            }
        } catch {
            return AdminReply(error: "\(error)")
        }
        let affected = affectedPods(request, selector, next)
        let added = request.op == .podAdd ? request.pod?.netns : request.op == .enable ? selector.netns : nil
        if let netns = added {
            // The netns must exist before anything is recorded for it.
            if FileIdentity(path: NetworkNamespace.resolvePath(netns)) == nil {
                let error = NetworkNamespaceError(
                    selector: netns,
                    path: NetworkNamespace.resolvePath(netns),
                    errno: Errno.noEntry
                )
                return AdminReply(error: "\(error)")
            }
            // The same netns under another name (a PID and a name, say) would get a
            // second set of listeners on ports the first already holds.
            let path = NetworkNamespace.resolvePath(netns)
            if state.pod(path) == nil, let identity = FileIdentity(path: path),
                let twin = state.pods.first(where: { FileIdentity(path: $0.netns) == identity })
            {
                return AdminReply(error: "\(path) is the same network namespace as pod \(twin.netns)")
            }
        }
        if request.dryRun == true { return dryRun(next, affected) }
        state = next
        save()
        var errors: [String] = []
        for path in affected {
            if let error = reconcile(path, cleanOrphan: request.op == .disable) { errors.append("\(error)") }
        }
        if request.op == .podRemove, let netns = selector.netns {
            let path = NetworkNamespace.resolvePath(netns)
            if let runtime = runtimes.removeValue(forKey: path) { teardown(runtime, path: path) }
        }
        var reply = AdminReply(pods: affected.compactMap { path in state.pod(path).map(status) })
        if !errors.isEmpty { reply.error = errors.joined(separator: "; ") }
        reply.message = summary(request, affected)
        return reply
    }

    private func affectedPods(_ request: AdminRequest, _ selector: Selector, _ next: NodeState) -> [String] {
        if request.op == .podAdd, let pod = request.pod { return [pod.netns] }
        if let netns = selector.netns { return [NetworkNamespace.resolvePath(netns)] }
        guard let ns = selector.namespace else { return [] }
        return next.pods.filter { $0.namespace == ns }.map(\.netns)
    }

    private func summary(_ request: AdminRequest, _ affected: [String]) -> String {
        let what =
            request.selector?.netns.map { "pod \($0)" }
            ?? request.selector?.namespace.map { "namespace \($0)" } ?? "node"
        switch request.op {
        case .enable: return "interception enabled for \(what) (\(affected.count) pod(s))"
        case .disable: return "interception disabled for \(what) (\(affected.count) pod(s))"
        case .podAdd: return "pod added"
        case .podRemove: return "pod removed"
        case .status, .uninstall, .reload, .routes, .explain: return ""
        }
    }

    private func dryRun(_ next: NodeState, _ affected: [String]) -> AdminReply {
        var reply = AdminReply(message: "dry run: nothing changed")
        var plans: [String: String] = [:]
        for path in affected {
            guard let pod = next.pod(path) else { continue }
            if let options = next.effectiveOptions(pod) {
                plans[path] = RulePlan(options.settings(base: base)).nftText()
            } else {
                plans[path] = "# \(path): interception off; Loom's table would be removed\n"
            }
        }
        reply.plans = plans
        return reply
    }

    /// Removes every Loom table and listener loomd knows of, forgets all pods and
    /// namespaces, then sweeps the node's named namespaces for tables left by others.
    private func uninstall() -> AdminReply {
        var removed = 0
        for (path, runtime) in runtimes {
            teardown(runtime, path: path)
            removed += 1
        }
        runtimes.removeAll()
        state = NodeState()
        save()
        let swept = NodeSweep.removeLoomTables(logger: logger)
        return AdminReply(
            message: "uninstalled: \(removed) pod(s) released; \(swept.removed) leftover table(s) removed"
                + (swept.errors.isEmpty ? "" : "; errors: " + swept.errors.joined(separator: "; "))
        )
    }

    // MARK: - Reconciling one pod

    /// Makes the kernel and the loops match what `state` asks for this pod. Returns an
    /// error to report (also kept in the pod's status).
    @discardableResult
    private func reconcile(_ path: String, cleanOrphan: Bool) -> PodError? {
        let started = SystemProcess.nowMicroseconds()
        guard let pod = state.pod(path) else { return nil }
        let desired = state.effectiveOptions(pod).map { $0.settings(base: base) }
        var runtime = runtimes[path]
        guard let desired else {
            if let runtime {
                teardown(runtime, path: path)
                runtimes[path] = nil
            } else if cleanOrphan {
                removeOrphanTable(path)
            }
            return nil
        }
        if runtime == nil {
            do {
                runtime = PodRuntime(context: try openPod(pod))
                runtimes[path] = runtime
            } catch {
                return PodError(netns: path, message: "\(error)")
            }
        }
        guard let runtime else { return nil }
        do {
            if runtime.listeners == 0 { try openListeners(runtime) }
            if runtime.applied != desired {
                let applyStarted = SystemProcess.nowMicroseconds()
                try runtime.netfilter?.apply(RulePlan(desired))
                programming.observe(micros: SystemProcess.nowMicroseconds() - applyStarted)
                if runtime.kernelTraced {
                    traceHub?.updateKernelPlan(podId: runtime.context.id, plan: RulePlan(desired))
                }
                runtime.applied = desired
                generations[path, default: 0] += 1
                logger.info(
                    "pod \(path): interception on (generation \(generations[path] ?? 1), fail \(desired.failPolicy))"
                )
            }
            runtime.error = nil
        } catch {
            runtime.error = "\(error)"
            runtime.changeMs = Double(SystemProcess.nowMicroseconds() - started) / 1000
            return PodError(netns: path, message: "\(error)")
        }
        runtime.changeMs = Double(SystemProcess.nowMicroseconds() - started) / 1000
        return nil
    }

    /// Opens the pod's netns as the loops will see it, with its workload certificate when
    /// loomd has a CA.
    func openPod(_ entry: PodEntry) throws -> PodContext {
        let context = PodContext(
            id: nextPodIdentifier(),
            name: entry.netns,
            netns: try NetworkNamespace.open(entry.netns),
            namespace: entry.namespace,
            serviceAccount: entry.serviceAccount
        )
        try certificates?.issue(for: context)
        return context
    }

    /// Opens the pod's netlink socket and every loop's listeners inside its netns, then
    /// hands the listeners to the loops.
    func openListeners(_ runtime: PodRuntime, only: Set<CaptureKind>? = nil) throws {
        let pod = runtime.context
        var perLoop: [[PodListener]] = Array(repeating: [], count: loops.count)
        var opened: [FileDescriptor] = []
        do {
            try pod.netns.withEntered {
                if runtime.netfilter == nil { runtime.netfilter = try NetfilterSocket() }
                var families: [SocketAddress] = [.v4(address: 0, port: 0)]
                if ipv6 { families.append(.v6(hi: 0, lo: 0, port: 0)) }
                var ports = [(base.outboundPort, CaptureKind.outbound), (base.inboundPort, .inbound)]
                // The mTLS tunnel from other nodes, where this loomd can speak mTLS.
                if certificates != nil { ports.append((tunnelPort, .tunnel)) }
                for (port, kind) in ports where only?.contains(kind) ?? true {
                    for any in families {
                        let address = any.with(port: port)
                        do {
                            // Nobody else may hold the port: SO_REUSEPORT would let a
                            // second loomd (or the app) share it silently.
                            try FileDescriptor.checkPortFree(address)
                            for loop in 0..<loops.count {
                                let fd = try FileDescriptor.tcpSocket(family: address.family)
                                opened.append(fd)
                                try fd.listen(on: address, reusePort: true, backlog: backlog)
                                perLoop[loop].append(
                                    PodListener(fd: fd, family: address.family, port: port, kind: kind, pod: pod)
                                )
                            }
                        } catch let error as SystemError {
                            let unsupported =
                                error.errno == Errno.addressNotAvailable || error.errno == Errno.familyNotSupported
                            if case .v6 = address, unsupported {
                                logger.info("pod \(pod.name): no IPv6 in this netns; listening on IPv4 only")
                                continue
                            }
                            let hint =
                                error.errno == Errno.addressInUse
                                ? "; another process (a second loomd, or the application) holds the port" : ""
                            throw PodError(netns: pod.name, message: "cannot listen on \(address): \(error)\(hint)")
                        }
                    }
                }
            }
        } catch {
            for fd in opened { fd.close() }
            throw error
        }
        for (loop, listeners) in zip(loops, perLoop) { loop.send(.addListeners(listeners)) }
        runtime.listenerSet += perLoop.flatMap { $0 }
    }

    /// Removes the pod's rules, then its listeners; connections in flight go on.
    private func teardown(_ runtime: PodRuntime, path: String) {
        stopKernelTraceLocked(runtime)
        if runtime.applied != nil {
            do {
                try runtime.netfilter?.remove()
                logger.info("pod \(path): interception off (table inet loom removed)")
            } catch {
                logger.warning("pod \(path): cannot remove Loom's table: \(error)")
            }
            runtime.applied = nil
        }
        release(runtime, resetConnections: false)
    }

    /// Takes the pod's listeners back from the loops and closes its netlink socket.
    private func release(_ runtime: PodRuntime, resetConnections: Bool) {
        let done = CompletionSignal(expected: loops.count)
        for loop in loops {
            loop.send(.removePod(id: runtime.context.id, resetConnections: resetConnections, done: done))
        }
        if !done.wait(timeoutMs: 2000) { logger.warning("pod \(runtime.context.name): a relay loop is slow to let go") }
        runtime.listenerSet = []
        certificates?.forget(runtime.context)
        runtime.netfilter?.close()
        runtime.netfilter = nil
    }

    /// The pod's netns file is gone (or names another namespace now): free everything.
    private func podGone(_ path: String, _ runtime: PodRuntime) {
        logger.notice(
            "pod \(path): network namespace deleted (the file no longer names the namespace loomd holds); releasing its listeners and connections"
        )
        stopKernelTraceLocked(runtime)
        release(runtime, resetConnections: true)
        runtimes[path] = nil
        if let pod = state.pod(path), !pod.fromConfig {
            try? state.removePod(path)
            save()
        }
    }

    /// A pod not intercepted may still hold a table from a loomd that died mid-change.
    private func removeOrphanTable(_ path: String) {
        guard let netns = try? NetworkNamespace.open(path) else { return }
        defer { netns.fd.close() }
        do {
            try netns.withEntered {
                let socket = try NetfilterSocket()
                defer { socket.close() }
                try socket.remove()
            }
        } catch {
            logger.warning("pod \(path): cannot check for a leftover Loom table: \(error)")
        }
    }

    // MARK: - Status and persistence

    private func status(_ pod: PodEntry) -> PodStatus {
        let runtime = runtimes[pod.netns]
        let options = state.effectiveOptions(pod)
        let stats = runtime?.context.stats.snapshot() ?? PodStats.Snapshot()
        let stateText: String
        if let error = runtime?.error {
            stateText = "error: " + error
        } else if runtime?.applied != nil {
            stateText = "intercepted"
        } else if options != nil {
            stateText = FileIdentity(path: pod.netns) == nil ? "netns-missing" : "pending"
        } else {
            stateText = pod.intercept == false ? "opted-out" : "off"
        }
        return PodStatus(
            netns: pod.netns,
            namespace: pod.namespace,
            serviceAccount: pod.serviceAccount,
            state: stateText,
            fail: runtime?.applied?.failPolicy.rawValue ?? options?.fail,
            generation: generations[pod.netns] ?? 0,
            listeners: runtime?.listeners ?? 0,
            active: stats.active,
            accepted: stats.accepted,
            refused: stats.refused,
            error: runtime?.error,
            changeMs: runtime?.changeMs,
            identity: runtime?.context.tls.context?.certificate.identity.uri,
            certificateSerial: runtime?.context.tls.context?.certificate.serial,
            certificateExpires: runtime?.context.tls.context?.certificate.notAfter
        )
    }

    private func save() {
        guard let statePath else { return }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        do {
            let data = try encoder.encode(state)
            let temporary = statePath + ".tmp"
            try data.write(to: URL(fileURLWithPath: temporary))
            if rename(temporary, statePath) != 0 { throw SystemError("rename", errno: errno) }
        } catch {
            logger.error("cannot save interception state to \(statePath): \(error)")
        }
    }
}
