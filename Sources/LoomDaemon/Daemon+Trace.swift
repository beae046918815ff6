// `loomctl trace` and access logs in the daemon: resolving what a trace names, switching
// the kernel side on for the pods it covers (and off when the tracer goes), and keeping
// namespace-wide scopes current as pods come and go.
import LoomMesh
import LoomRelay
import LoomSystem
import LoomTrace
import Synchronization

/// A trace scope as asked for: the pods it covers are resolved again every tick, so a
/// namespace-wide trace (or one of every pod) takes in pods enabled later, and a pod's
/// trace follows it through disable and enable.
struct TraceScope: Sendable {
    var namespace: String?
    var netns: String?
}

/// One live trace, as the admin server polls it.
final class TraceStream: AdminStream {
    let subscription: TraceSubscription
    private let onCancel: @Sendable (TraceSubscription) -> Void
    private let cancelled = Atomic<Bool>(false)

    init(_ subscription: TraceSubscription, onCancel: @escaping @Sendable (TraceSubscription) -> Void) {
        self.subscription = subscription
        self.onCancel = onCancel
    }

    func poll() -> (lines: [String], ended: Bool) { subscription.poll() }

    func cancel() {
        guard !cancelled.exchange(true, ordering: .relaxed) else { return }
        onCancel(subscription)
    }
}

extension Daemon {
    /// Starts a trace for an admin request's query (`namespace`, `netns`, `service`,
    /// `port`). Errors name what matched nothing.
    func startTrace(query: [String: String]) -> AdminAnswer {
        guard let controller, let hub = traceHub else { return .error(503, "loomd is starting; try again") }
        let scope = TraceScope(namespace: query["namespace"], netns: query["netns"])
        var service: String?
        if let wanted = query["service"] {
            let snapshot = mesh.runtime.snapshot
            let names = snapshot.services.map(\.qualifiedName)
            guard names.contains(wanted) || names.contains(where: { $0.hasSuffix("/" + wanted) }) else {
                let known = names.prefix(10).joined(separator: ", ")
                return .error(
                    404,
                    "no service \(wanted) in configuration version \(mesh.runtime.version) (services: \(known.isEmpty ? "none" : known)\(names.count > 10 ? ", ..." : ""))"
                )
            }
            service = wanted
        }
        var port: UInt16?
        if let text = query["port"] {
            guard let p = UInt16(text), p > 0 else { return .error(400, "port must be 1-65535, not \(text)") }
            port = p
        }
        let pods: [PodContext]
        do {
            pods = try controller.tracePods(namespace: scope.namespace, netns: scope.netns)
        } catch {
            return .error(404, error.description)
        }
        let filter = TraceFilter(pods: Set(pods.map(\.id)), service: service, port: port)
        let (subscription, start) = hub.subscribe(filter: filter, pods: pods, wantsKernel: true)
        for pod in start {
            if let error = controller.startKernelTrace(pod) {
                logger.warning("trace of pod \(pod.name) shows the proxy's side only: \(error)")
            }
        }
        traces.withLock { $0[subscription.id] = (subscription, scope) }
        logger.info(
            "trace \(subscription.id) started: \(pods.count) pod(s)\(service.map { ", service \($0)" } ?? "")\(port.map { ", port \($0)" } ?? "")"
        )
        return .stream(TraceStream(subscription) { [weak self] in self?.endTrace($0) })
    }

    /// The tracer went away: its pods stop being traced by the kernel if nobody else
    /// traces them (their trace tables are removed).
    func endTrace(_ subscription: TraceSubscription) {
        guard let hub = traceHub else { return }
        traces.withLock { _ = $0.removeValue(forKey: subscription.id) }
        for pod in hub.unsubscribe(subscription) { controller?.stopKernelTrace(pod) }
        logger.info("trace \(subscription.id) ended (\(subscription.droppedTotal) event(s) dropped for it)")
    }

    /// Makes the access logs match the configuration (namespaces with `accessLog`):
    /// at start and on every reload.
    func syncAccessLogs(_ config: MeshConfig) {
        guard let hub = traceHub, let controller else { return }
        let wanted = Set(config.namespaces.filter { $0.value.accessLog == true }.map(\.key))
        let current = accessLogs.withLock { $0 }
        for (namespace, subscription) in current where !wanted.contains(namespace) {
            _ = hub.unsubscribe(subscription)
            accessLogs.withLock { _ = $0.removeValue(forKey: namespace) }
            logger.info("access log off for namespace \(namespace)")
        }
        for namespace in wanted.sorted() where current[namespace] == nil {
            let pods = controller.interceptedPods(namespace: namespace)
            let (subscription, _) = hub.subscribe(
                filter: TraceFilter(pods: Set(pods.map(\.id))),
                pods: pods,
                wantsKernel: false
            )
            accessLogs.withLock { $0[namespace] = subscription }
            logger.info("access log on for namespace \(namespace) (\(pods.count) pod(s) now)")
        }
    }

    /// Every tick: namespace-wide traces and access logs follow pods that were
    /// enabled, disabled or deleted since.
    func refreshTraceScopes() {
        guard let hub = traceHub, let controller else { return }
        for (subscription, scope) in traces.withLock({ Array($0.values) }) {
            // A pod disabled and enabled again has a new context: the trace follows it.
            let pods = (try? controller.tracePods(namespace: scope.namespace, netns: scope.netns)) ?? []
            let (start, stop) = hub.updatePods(subscription, pods: pods)
            for pod in stop { controller.stopKernelTrace(pod) }
            for pod in start { _ = controller.startKernelTrace(pod) }
        }
        for (namespace, subscription) in accessLogs.withLock({ Array($0) }) {
            _ = hub.updatePods(subscription, pods: controller.interceptedPods(namespace: namespace))
        }
    }
}
