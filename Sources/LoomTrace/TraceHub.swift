// The trace hub: one thread that joins what the kernel decided (NFQUEUE packets of traced
// pods, judged against the pod's rule plan) with what the relay did (events the loops
// queue for traced pods), and hands the records to tracers and access logs.
//
// Nothing here can slow the relay: loops push into their own bounded queues (dropping and
// counting when full) and only for pods with a subscriber; each tracer has a bounded
// queue too, and a tracer that stops reading loses events (counted, then reported to it
// as a `dropped` record), never blocks anyone.
import Foundation
import Logging
import LoomIntercept
import LoomMesh
import LoomRelay
import LoomSystem
import Synchronization

/// What a tracer wants to see. Pods are resolved by the daemon (namespace, netns);
/// service and port filter records.
public struct TraceFilter: Sendable, Equatable {
    /// Pod ids covered (nil: every pod the daemon resolved for a namespace-wide filter).
    public var pods: Set<Int>
    /// `namespace/name` or `name` of a service.
    public var service: String?
    /// Destination port.
    public var port: UInt16?

    public init(pods: Set<Int>, service: String? = nil, port: UInt16? = nil) {
        self.pods = pods
        self.service = service
        self.port = port
    }
}

/// One tracer's (or access log's) view: a bounded queue of JSON lines.
public final class TraceSubscription: Sendable {
    public let id: Int
    /// Tracers get the kernel's side too; access logs only proxied connections.
    public let wantsKernel: Bool
    private struct State {
        var filter: TraceFilter
        var lines: [String] = []
        var dropped = 0
        var droppedTotal = 0
        var ended = false
    }
    private let state: Mutex<State>
    private let capacity: Int

    init(id: Int, filter: TraceFilter, wantsKernel: Bool, capacity: Int) {
        self.id = id
        self.wantsKernel = wantsKernel
        self.capacity = capacity
        state = Mutex(State(filter: filter))
    }

    public var filter: TraceFilter { state.withLock { $0.filter } }

    func setPods(_ pods: Set<Int>) { state.withLock { $0.filter.pods = pods } }

    /// Queues a line; false (and counted) when the queue is full.
    @discardableResult
    func offer(_ line: String) -> Bool {
        state.withLock { s in
            guard s.lines.count < capacity else {
                s.dropped += 1
                s.droppedTotal += 1
                return false
            }
            s.lines.append(line)
            return true
        }
    }

    /// Takes the queued lines (with a `dropped` record first if some were lost) and
    /// whether the subscription has ended.
    public func poll() -> (lines: [String], ended: Bool) {
        state.withLock { s in
            var out: [String] = []
            if s.dropped > 0 {
                var record = TraceRecord(event: "dropped", time: TraceClock.shared.now())
                record.dropped = s.dropped
                out.append(record.json())
                s.dropped = 0
            }
            out.append(contentsOf: s.lines)
            s.lines.removeAll(keepingCapacity: true)
            return (out, s.ended)
        }
    }

    /// Events this subscription lost because it did not keep up.
    public var droppedTotal: Int { state.withLock { $0.droppedTotal } }

    func end() { state.withLock { $0.ended = true } }
}

/// Converts monotonic milliseconds to wall-clock RFC 3339 strings.
final class TraceClock: Sendable {
    static let shared = TraceClock()
    private let offsetMs: Int64

    init() {
        let wall = Int64(Date().timeIntervalSince1970 * 1000)
        offsetMs = wall - SystemProcess.nowMilliseconds()
    }

    func now() -> String { format(monotonicMs: SystemProcess.nowMilliseconds()) }

    func format(monotonicMs: Int64) -> String {
        let wall = monotonicMs + offsetMs
        var seconds = time_t(wall / 1000)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        return String(
            format: "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
            Int(parts.tm_year) + 1900,
            Int(parts.tm_mon) + 1,
            Int(parts.tm_mday),
            Int(parts.tm_hour),
            Int(parts.tm_min),
            Int(parts.tm_sec),
            Int(wall % 1000)
        )
    }
}

/// Counts the hub publishes (metrics, status).
public struct TraceHubStats: Sendable, Equatable {
    public var tracers = 0
    public var accessLogs = 0
    public var kernelPods = 0
    public var records = 0
    /// Lost because a loop's queue was full (the hub fell behind).
    public var droppedAtRelay = 0
    /// Lost because a tracer did not read.
    public var droppedAtTracers = 0
    public var kernelPackets = 0
    public var accessLogLines = 0
}

/// Joins kernel decisions and relay events and fans them out.
public final class TraceHub: @unchecked Sendable {
    // @unchecked: `pending`, `deferred`, `sources` and `accessLogFile` are touched only by
    // the hub thread; everything else is behind `shared` or immutable.
    private let loops: [RelayLoop]
    private let mesh: MeshPublisher
    private let logger: Logger
    private let epoll: Epoll
    private let bell: EventNotifier
    private var thread: SystemThread?
    private let stopping = Atomic<Bool>(false)

    private enum Command {
        case addKernel(pod: PodContext, queue: TraceQueue, plan: RulePlan)
        case removeKernel(podId: Int)
        case updatePlan(podId: Int, plan: RulePlan)
    }

    private struct Shared {
        var subscriptions: [Int: TraceSubscription] = [:]
        var nextId = 1
        var commands: [Command] = []
        var stats = TraceHubStats()
        /// Subscriptions covering each pod (what `PodContext.traced` mirrors), and how many
        /// of them want the kernel's side.
        var podRefs: [Int: (pod: PodContext, all: Int, kernel: Int)] = [:]
    }
    private let shared = Mutex(Shared())

    // Hub thread only.
    private struct Source {
        let pod: PodContext
        let queue: TraceQueue
        let plan: RulePlan
    }
    private var sources: [Int: Source] = [:]
    private struct JoinKey: Hashable {
        let pod: Int
        let client: SocketAddress
        let destination: SocketAddress
    }
    private struct Pending {
        var verdict: KernelVerdict
        let seenAt: Int64
    }
    /// Kernel decisions waiting for (or joined to) the relay's record of the connection.
    private var pending: [JoinKey: Pending] = [:]
    /// Relay events of kernel-traced pods held one round for a late kernel record.
    private var deferred: [RelayEvent] = []
    private var accessLog: AccessLogWriter?
    private var events: [RelayEvent] = []

    public static let pendingLimit = 65536

    /// Records a tracer may have queued before it loses some.
    private let tracerCapacity: Int

    public init(
        loops: [RelayLoop],
        mesh: MeshPublisher,
        accessLogPath: String?,
        tracerCapacity: Int = 4096,
        logger: Logger
    ) throws {
        self.loops = loops
        self.tracerCapacity = max(1, tracerCapacity)
        self.mesh = mesh
        self.logger = logger
        epoll = try Epoll(capacity: 64)
        bell = try EventNotifier()
        try epoll.add(bell.fd, interest: [.readable], token: UInt64.max)
        if let accessLogPath {
            do {
                accessLog = try AccessLogWriter(path: accessLogPath)
            } catch {
                throw AccessLogError(path: accessLogPath, error: error)
            }
        }
    }

    public func start() throws {
        thread = try SystemThread.spawn(name: "loom-trace") { [self] in run() }
    }

    public func stop() {
        stopping.store(true, ordering: .relaxed)
        bell.signal()
        thread?.join()
        thread = nil
        for (_, source) in sources { source.queue.close() }
        sources.removeAll()
        let subs = shared.withLock { s in
            let all = Array(s.subscriptions.values)
            s.subscriptions.removeAll()
            for (_, ref) in s.podRefs { ref.pod.traced.store(0, ordering: .relaxed) }
            s.podRefs.removeAll()
            return all
        }
        for sub in subs { sub.end() }
        accessLog?.close()
    }

    public var stats: TraceHubStats {
        var s = shared.withLock { shared in
            var stats = shared.stats
            stats.tracers = shared.subscriptions.values.filter(\.wantsKernel).count
            stats.accessLogs = shared.subscriptions.count - stats.tracers
            return stats
        }
        s.droppedAtRelay = loops.reduce(0) { $0 + $1.events.dropped.value }
        return s
    }

    // MARK: Subscriptions

    /// Adds a subscriber for the pods in `filter`. Returns it and the pods whose kernel
    /// tracing must start now (the first kernel-wanting subscriber of each).
    public func subscribe(
        filter: TraceFilter,
        pods: [PodContext],
        wantsKernel: Bool
    ) -> (subscription: TraceSubscription, startKernel: [PodContext]) {
        shared.withLock { s in
            let sub = TraceSubscription(
                id: s.nextId,
                filter: filter,
                wantsKernel: wantsKernel,
                capacity: tracerCapacity
            )
            s.nextId += 1
            s.subscriptions[sub.id] = sub
            let start = Self.retain(&s, pods, kernel: wantsKernel)
            return (sub, start)
        }
    }

    /// Removes a subscriber. Returns the pods whose kernel tracing must stop now.
    public func unsubscribe(_ sub: TraceSubscription) -> [PodContext] {
        sub.end()
        return shared.withLock { s in
            guard s.subscriptions.removeValue(forKey: sub.id) != nil else { return [] }
            let pods = s.podRefs.values.filter { sub.filter.pods.contains($0.pod.id) }.map(\.pod)
            return Self.release(&s, pods, kernel: sub.wantsKernel)
        }
    }

    /// Re-resolves a subscription's pods (a namespace-wide trace picks up new pods).
    /// Returns kernel tracing to start and to stop.
    public func updatePods(_ sub: TraceSubscription, pods: [PodContext]) -> (start: [PodContext], stop: [PodContext]) {
        shared.withLock { s in
            guard s.subscriptions[sub.id] != nil else { return ([], []) }
            let old = sub.filter.pods
            let new = Set(pods.map(\.id))
            guard old != new else { return ([], []) }
            let added = pods.filter { !old.contains($0.id) }
            let removed = s.podRefs.values.filter { old.contains($0.pod.id) && !new.contains($0.pod.id) }.map(\.pod)
            sub.setPods(new)
            return (
                Self.retain(&s, added, kernel: sub.wantsKernel), Self.release(&s, removed, kernel: sub.wantsKernel)
            )
        }
    }

    public var subscriptions: [TraceSubscription] { shared.withLock { Array($0.subscriptions.values) } }

    private static func retain(_ s: inout Shared, _ pods: [PodContext], kernel: Bool) -> [PodContext] {
        var start: [PodContext] = []
        for pod in pods {
            var ref = s.podRefs[pod.id] ?? (pod, 0, 0)
            ref.all += 1
            if kernel {
                ref.kernel += 1
                if ref.kernel == 1 { start.append(pod) }
            }
            s.podRefs[pod.id] = ref
            pod.traced.store(ref.all, ordering: .relaxed)
        }
        return start
    }

    private static func release(_ s: inout Shared, _ pods: [PodContext], kernel: Bool) -> [PodContext] {
        var stop: [PodContext] = []
        for pod in pods {
            guard var ref = s.podRefs[pod.id] else { continue }
            ref.all -= 1
            if kernel {
                ref.kernel -= 1
                if ref.kernel == 0 { stop.append(pod) }
            }
            pod.traced.store(ref.all, ordering: .relaxed)
            s.podRefs[pod.id] = ref.all > 0 ? ref : nil
        }
        return stop
    }

    // MARK: Kernel sources

    /// Starts reading a pod's trace queue (opened in its netns by the controller).
    public func addKernelSource(pod: PodContext, queue: TraceQueue, plan: RulePlan) {
        shared.withLock { $0.commands.append(.addKernel(pod: pod, queue: queue, plan: plan)) }
        bell.signal()
    }

    /// Stops reading a pod's trace queue and closes it (after its table is gone).
    public func removeKernelSource(podId: Int) {
        shared.withLock { $0.commands.append(.removeKernel(podId: podId)) }
        bell.signal()
    }

    /// The pod's rules changed (enable with new options): judge its packets by these.
    public func updateKernelPlan(podId: Int, plan: RulePlan) {
        shared.withLock { $0.commands.append(.updatePlan(podId: podId, plan: plan)) }
        bell.signal()
    }

    // MARK: The hub thread

    private func run() {
        var lastFlush: Int64 = 0
        while !stopping.load(ordering: .relaxed) {
            let ready = (try? epoll.wait(timeoutMs: 25)) ?? 0
            for i in 0..<ready {
                let token = epoll.event(i).token
                if token == UInt64.max {
                    bell.drain()
                    applyCommands()
                } else if let source = sources[Int(token)] {
                    readKernel(source)
                }
            }
            let now = SystemProcess.nowMilliseconds()
            if now - lastFlush >= 25 {
                lastFlush = now
                processRelayEvents(now: now)
                expirePending(now: now)
                accessLog?.flush()
            }
        }
    }

    private func applyCommands() {
        let commands = shared.withLock { s in
            let c = s.commands
            s.commands.removeAll()
            return c
        }
        for command in commands {
            switch command {
            case .addKernel(let pod, let queue, let plan):
                if let old = sources.removeValue(forKey: pod.id) { old.queue.close() }
                do {
                    try epoll.add(queue.fd, interest: [.readable], token: UInt64(pod.id))
                    sources[pod.id] = Source(pod: pod, queue: queue, plan: plan)
                } catch {
                    logger.warning("trace: cannot watch the queue of pod \(pod.name): \(error)")
                    queue.close()
                }
            case .removeKernel(let podId):
                // Closing the socket also takes it out of the epoll set.
                sources.removeValue(forKey: podId)?.queue.close()
                pending = pending.filter { $0.key.pod != podId }
            case .updatePlan(let podId, let plan):
                if let old = sources[podId] { sources[podId] = Source(pod: old.pod, queue: old.queue, plan: plan) }
            }
        }
        let count = sources.count
        shared.withLock { $0.stats.kernelPods = count }
    }

    private func readKernel(_ source: Source) {
        let packets = source.queue.receive(max: 256)
        guard !packets.isEmpty else { return }
        shared.withLock { $0.stats.kernelPackets += packets.count }
        for packet in packets {
            let decision = source.plan.decide(packet)
            var port: Int?
            var verdict = "bypassed"
            if case .redirect(let p) = decision.verdict {
                verdict = "redirected"
                port = Int(p)
            }
            let kernel = KernelVerdict(
                verdict: verdict,
                rule: decision.reason,
                nft: decision.rule,
                chain: decision.chain,
                port: port
            )
            let key = JoinKey(pod: source.pod.id, client: packet.source, destination: packet.destination)
            if verdict == "redirected" {
                // A retransmitted SYN finds the entry already there.
                if pending[key] == nil, pending.count < Self.pendingLimit {
                    pending[key] = Pending(verdict: kernel, seenAt: packet.receivedAtMs)
                }
                continue
            }
            var record = Self.record(
                "bypass",
                at: packet.receivedAtMs,
                pod: source.pod,
                outbound: packet.hook == .output,
                client: packet.source,
                destination: packet.destination
            )
            record.kernel = kernel
            let snapshot = mesh.runtime.snapshot
            if let ref = snapshot.lookup(packet.destination) {
                record.service = snapshot.services[ref.service].qualifiedName
            }
            dispatch(record, podId: source.pod.id, port: packet.destination.port, kernelOnly: true)
        }
    }

    private func processRelayEvents(now: Int64) {
        events.removeAll(keepingCapacity: true)
        // Held events first: their kernel record had a round to arrive.
        let held = deferred
        deferred.removeAll(keepingCapacity: true)
        for loop in loops { loop.events.drain(into: &events) }
        for event in held { emit(event, mayDefer: false) }
        for event in events { emit(event, mayDefer: true) }
    }

    private func emit(_ event: RelayEvent, mayDefer: Bool) {
        let key = JoinKey(pod: event.pod.id, client: event.client, destination: event.destination)
        let kernel = pending[key]?.verdict
        if kernel == nil, mayDefer, sources[event.pod.id] != nil {
            deferred.append(event)
            return
        }
        if event.kind == .closed {
            pending.removeValue(forKey: key)
        }
        var record = Self.record(
            event.kind == .opened ? "open" : "close",
            at: event.atMs,
            pod: event.pod,
            outbound: event.capture == .outbound,
            client: event.client,
            destination: event.destination
        )
        record.kernel = kernel
        if let runtime = event.runtime {
            let services = runtime.snapshot.services
            if event.serviceRef >= 0 {
                let service = services[event.serviceRef]
                record.service = service.qualifiedName
                if event.route >= 0, event.portRef >= 0 {
                    record.route = service.ports[event.portRef].routes[event.route].name
                }
            }
            if event.service >= 0, event.service != event.serviceRef {
                record.target = services[event.service].qualifiedName
            }
        }
        record.endpoint = event.upstream?.description
        record.tls = event.tls == nil ? "none" : "mtls"
        if let tls = event.tls {
            record.mtls = MTLSDetail(
                role: tls.role,
                local: tls.localIdentity,
                serial: tls.localSerial,
                peer: tls.peerIdentity,
                version: tls.version,
                cipher: tls.cipher,
                dataPath: tls.dataPath
            )
            record.mtls?.tunnel = tls.tunnel
            record.mtls?.resumed = tls.resumed
        }
        record.bytesOut = event.bytesOut
        record.bytesIn = event.bytesIn
        if event.connectMicros >= 0 { record.connectMs = Double(event.connectMicros) / 1000 }
        if event.kind == .closed {
            record.durationMs = Double(event.atMs - event.openedAtMs)
            record.end = event.end?.label
            record.detail = event.endDetail
        }
        dispatch(record, podId: event.pod.id, port: event.destination.port, kernelOnly: false)
    }

    /// A record's common part: what happened, when, in which pod, between whom.
    private static func record(
        _ event: String,
        at monotonicMs: Int64,
        pod: PodContext,
        outbound: Bool,
        client: SocketAddress,
        destination: SocketAddress
    ) -> TraceRecord {
        var record = TraceRecord(event: event, time: TraceClock.shared.format(monotonicMs: monotonicMs))
        record.pod = pod.name
        record.namespace = pod.namespace
        record.direction = outbound ? "outbound" : "inbound"
        record.client = client.description
        record.destination = destination.description
        return record
    }

    private func dispatch(_ record: TraceRecord, podId: Int, port: UInt16, kernelOnly: Bool) {
        let subs = shared.withLock { s in
            s.stats.records += 1
            return Array(s.subscriptions.values)
        }
        var line: String?
        var lost = 0
        for sub in subs {
            if kernelOnly && !sub.wantsKernel { continue }
            let filter = sub.filter
            guard filter.pods.contains(podId) else { continue }
            if let p = filter.port, p != port { continue }
            if let wanted = filter.service {
                guard let service = record.service else { continue }
                if service != wanted && !service.hasSuffix("/" + wanted) && record.target != wanted { continue }
            }
            let text = line ?? record.json()
            line = text
            if sub.wantsKernel {
                if !sub.offer(text) { lost += 1 }
            } else if let accessLog {
                // Access logs write closes only: one line per connection.
                if record.event == "close" {
                    accessLog.write(text)
                    shared.withLock { $0.stats.accessLogLines += 1 }
                }
            }
        }
        if lost > 0 { shared.withLock { $0.stats.droppedAtTracers += lost } }
    }

    private func expirePending(now: Int64) {
        guard !pending.isEmpty else { return }
        // A redirected SYN the relay never reported (the client gave up before the
        // handshake finished, or the connection is still connecting): forget it after
        // a minute; the relay's record then goes out without the kernel's part.
        pending = pending.filter { now - $0.value.seenAt < 60_000 }
    }
}

/// The access log cannot be opened.
public struct AccessLogError: Error, CustomStringConvertible {
    public let path: String
    public let error: any Error
    public var description: String {
        "cannot open the access log \(path): \(error); pass --access-log PATH (a writable file, or - for standard output)"
    }
}

/// Appends access-log lines to a file (or stdout for `-`), buffered and flushed by the hub.
final class AccessLogWriter {
    private let fd: FileDescriptor
    private let ownsFd: Bool
    private var buffer = ""

    init(path: String) throws {
        if path == "-" {
            fd = FileDescriptor(rawValue: 1)
            ownsFd = false
        } else {
            fd = try FileDescriptor.openAppend(path: path)
            ownsFd = true
        }
    }

    func write(_ line: String) {
        buffer += line
        buffer += "\n"
        if buffer.utf8.count >= 65536 { flush() }
    }

    func flush() {
        guard !buffer.isEmpty else { return }
        try? fd.writeAll(buffer)
        buffer.removeAll(keepingCapacity: true)
    }

    func close() {
        flush()
        if ownsFd { fd.close() }
    }
}
