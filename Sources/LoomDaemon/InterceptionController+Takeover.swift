// Handing pods over to a new loomd (hitless upgrade): the listening sockets move, the
// tables stay. The old loomd exports every pod's listeners; the new one adopts them into
// its own loops before it programs anything, so the kernel's accept queues never lose
// their owner and no connection is refused.
import LoomIntercept
import LoomRelay
import LoomSystem

/// A listening socket as handed over: its descriptor and what it listens for.
struct HandedListener: Sendable {
    let fd: FileDescriptor
    let family: CInt
    let port: UInt16
    let kind: CaptureKind
}

extension InterceptionController {
    /// Every intercepted pod's listeners (the loops keep using them until the new loomd
    /// has adopted them).
    func exportListeners() -> [(path: String, listeners: [PodListener])] {
        lock.withLock {
            runtimes.filter { !$0.value.listenerSet.isEmpty }.map { ($0.key, $0.value.listenerSet) }
                .sorted { $0.path < $1.path }
        }
    }

    /// Takes over listeners from the loomd this one replaces, before `start()`: the pods'
    /// runtimes are built around them, so reconciling only re-applies their tables (one
    /// atomic replace with the same rules). Listeners of pods the state no longer
    /// intercepts are closed. Returns how many listeners were adopted.
    func adopt(_ pods: [String: [HandedListener]]) -> Int {
        lock.withLock {
            var adopted = 0
            for (path, handed) in pods.sorted(by: { $0.key < $1.key }) {
                guard let entry = state.pod(path), state.effectiveOptions(entry) != nil, runtimes[path] == nil else {
                    for listener in handed { listener.fd.close() }
                    logger.warning(
                        "takeover: pod \(path) is not intercepted here; closed its \(handed.count) listener(s)"
                    )
                    continue
                }
                do {
                    let context = try openPod(entry)
                    let runtime = PodRuntime(context: context)
                    runtime.netfilter = try context.netns.withEntered { try NetfilterSocket() }
                    var perLoop: [[PodListener]] = Array(repeating: [], count: loops.count)
                    for (i, listener) in handed.enumerated() {
                        perLoop[i % loops.count].append(
                            PodListener(
                                fd: listener.fd,
                                family: listener.family,
                                port: listener.port,
                                kind: listener.kind,
                                pod: context
                            )
                        )
                    }
                    for (loop, listeners) in zip(loops, perLoop) where !listeners.isEmpty {
                        loop.send(.addListeners(listeners))
                    }
                    runtime.listenerSet = perLoop.flatMap { $0 }
                    runtimes[path] = runtime
                    adopted += handed.count
                    // The loomd handed over had no CA: this one opens the tunnel port.
                    if certificates != nil && !handed.contains(where: { $0.kind == .tunnel }) {
                        try openListeners(runtime, only: [.tunnel])
                    }
                } catch {
                    for listener in handed { listener.fd.close() }
                    logger.warning("takeover: cannot adopt pod \(path): \(error); it gets new listeners")
                }
            }
            return adopted
        }
    }
}
