// Trace support in the interception manager: which pods a trace covers, and the NFQUEUE
// trace table that shows the kernel's decisions for a pod while someone traces it.
import LoomIntercept
import LoomRelay
import LoomSystem
import LoomTrace

/// A trace (or access log) scope that names nothing loomd knows.
struct TraceScopeError: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
}

extension InterceptionController {
    /// Intercepted pods a trace of `namespace` and/or `netns` covers. Throws when the
    /// selector names no pod loomd knows, or none of them is intercepted.
    func tracePods(namespace: String?, netns: String?) throws(TraceScopeError) -> [PodContext] {
        lock.lock()
        defer { lock.unlock() }
        do {
            var known = state.pods
            if let netns {
                let path = NetworkNamespace.resolvePath(netns)
                guard let pod = state.pod(path) else {
                    throw TraceScopeError(
                        message: "no pod with netns \(netns) is known to loomd; see loomctl status for the pods it has"
                    )
                }
                known = [pod]
            }
            if let namespace {
                known = known.filter { $0.namespace == namespace }
                if known.isEmpty {
                    let names = Set(state.pods.map(\.namespace)).sorted().joined(separator: ", ")
                    throw TraceScopeError(
                        message: netns == nil
                            ? "namespace \(namespace) has no pods on this node (namespaces with pods: \(names.isEmpty ? "none" : names))"
                            : "pod \(netns!) is not in namespace \(namespace)"
                    )
                }
            }
            let pods = known.compactMap { runtimes[$0.netns]?.applied != nil ? runtimes[$0.netns]?.context : nil }
            if pods.isEmpty {
                let what =
                    netns.map { "pod \($0) is not intercepted" }
                    ?? namespace.map { "no pod of namespace \($0) is intercepted" } ?? "no pod is intercepted"
                throw TraceScopeError(message: "\(what): nothing to trace; switch it on with loomctl enable")
            }
            return pods
        }
    }

    /// Pods of `namespace` that are intercepted now (access logs; empty is fine).
    func interceptedPods(namespace: String) -> [PodContext] {
        podContexts().filter { $0.namespace == namespace }
    }

    /// Installs the pod's trace table and starts reading its queue. An error leaves the
    /// pod untraced by the kernel (the relay's side still shows).
    func startKernelTrace(_ pod: PodContext) -> String? {
        lock.withLock {
            guard let runtime = runtimes.values.first(where: { $0.context === pod }), let applied = runtime.applied,
                let netfilter = runtime.netfilter, let hub = traceHub
            else { return "pod \(pod.name) is not intercepted any more" }
            if runtime.kernelTraced { return nil }
            do {
                let queue = try pod.netns.withEntered { try TraceQueue(queue: TracePlan.defaultQueue) }
                do {
                    try netfilter.applyTrace(TracePlan(mark: applied.mark, queue: TracePlan.defaultQueue))
                } catch {
                    queue.close()
                    throw error
                }
                hub.addKernelSource(pod: pod, queue: queue, plan: RulePlan(applied))
                runtime.kernelTraced = true
                logger.info(
                    "pod \(pod.name): trace on (table inet \(TracePlan.table), queue \(TracePlan.defaultQueue))"
                )
                return nil
            } catch {
                logger.warning("pod \(pod.name): cannot trace the kernel's decisions: \(error)")
                return "\(error)"
            }
        }
    }

    /// Removes the pod's trace table and stops reading its queue.
    func stopKernelTrace(_ pod: PodContext) {
        lock.withLock {
            guard let runtime = runtimes.values.first(where: { $0.context === pod }) else {
                traceHub?.removeKernelSource(podId: pod.id)
                return
            }
            stopKernelTraceLocked(runtime)
        }
    }

    /// With `lock` held.
    func stopKernelTraceLocked(_ runtime: PodRuntime) {
        guard runtime.kernelTraced else { return }
        runtime.kernelTraced = false
        do {
            try runtime.netfilter?.removeTrace()
            logger.info("pod \(runtime.context.name): trace off (table inet \(TracePlan.table) removed)")
        } catch {
            logger.warning("pod \(runtime.context.name): cannot remove the trace table: \(error)")
        }
        traceHub?.removeKernelSource(podId: runtime.context.id)
    }
}

extension InterceptionController {
    /// Every intercepted pod's context (metrics).
    func podContexts() -> [PodContext] {
        lock.withLock {
            runtimes.values.filter { $0.applied != nil }.map(\.context).sorted { $0.name < $1.name }
        }
    }
}

extension InterceptionController {
    /// What the pod's rules would do with a connection to `destination` (outbound) or
    /// arriving for it (inbound), judged by the plan loomd applied after checking that
    /// its table is really in the pod's netns.
    func explainKernel(netns: String, destination: SocketAddress, inbound: Bool) -> KernelExplanation? {
        lock.withLock {
            let path = NetworkNamespace.resolvePath(netns)
            guard state.pod(path) != nil else { return nil }
            let runtime = runtimes[path]
            var inKernel = false
            var note: String?
            if let netfilter = runtime?.netfilter {
                do {
                    inKernel = try netfilter.hasLoomTable()
                } catch {
                    note = "cannot read the pod's tables: \(error)"
                }
            } else if let handle = try? NetworkNamespace.open(path) {
                defer { handle.fd.close() }
                inKernel =
                    (try? handle.withEntered {
                        let socket = try NetfilterSocket()
                        defer { socket.close() }
                        return try socket.hasLoomTable()
                    }) ?? false
            }
            let any: SocketAddress
            if case .v4 = destination { any = .v4(address: 0, port: 0) } else { any = .v6(hi: 0, lo: 0, port: 0) }
            let loopback = destination.isLoopback
            let packet = KernelPacket(
                hook: inbound ? .prerouting : .output,
                source: any,
                destination: destination,
                inInterface: inbound && loopback ? KernelPacket.loopbackInterface : 0,
                outInterface: !inbound && loopback ? KernelPacket.loopbackInterface : 0
            )
            guard let applied = runtime?.applied else {
                return KernelExplanation(
                    verdict: "bypassed",
                    rule: "not intercepted",
                    nft: "",
                    chain: inbound ? "prerouting" : "output",
                    tableInKernel: inKernel,
                    note: inKernel
                        ? "loomd has not intercepted this pod, yet a Loom table is in its netns (left by another loomd?); loomctl disable removes it"
                        : note ?? "the pod is not intercepted: no Loom table in its netns, nothing is redirected"
                )
            }
            let decision = RulePlan(applied).decide(packet)
            var port: Int?
            if case .redirect(let p) = decision.verdict { port = Int(p) }
            if !inKernel && note == nil {
                note =
                    "loomd applied generation \(generations[path] ?? 0), but table inet loom is not in the pod's netns (removed by hand?): nothing is redirected now; loomctl enable puts it back"
            }
            return KernelExplanation(
                verdict: inKernel ? (port == nil ? "bypassed" : "redirected") : "bypassed",
                port: inKernel ? port : nil,
                rule: inKernel ? decision.reason : "no Loom table",
                nft: inKernel ? decision.rule : "",
                chain: decision.chain,
                tableInKernel: inKernel,
                generation: generations[path],
                note: note
            )
        }
    }
}
