// Unsafe pointers: `scratch`, the loop's copy buffer, used only in RelayLoop+Relay.swift.
// A relay loop: one plain thread with its own epoll set, listeners (SO_REUSEPORT), pipe
// pool and connections. A connection never changes loops; nothing here takes a lock.
// Sockets are edge-triggered (readiness is remembered in FlowState until EAGAIN);
// listeners are level-triggered so that pausing and resuming accept is one epoll_ctl.
import Dispatch
import Logging
import LoomMesh
import LoomSystem
import LoomTLS
import Synchronization

/// One event loop of the relay core.
public final class RelayLoop: @unchecked Sendable {
    // @unchecked: all mutable state below is touched only by the loop's own thread after
    // `start()`; other threads use only `stats` and the atomic stop flags.

    /// The loop's number (0-based), for logs.
    public let id: Int
    /// Published counters, readable from any thread.
    public let stats = LoopStats()
    /// Connect latency and routing decisions, readable from any thread.
    public let metrics = RelayMetrics()
    /// Connection events of traced pods, for the trace hub.
    public let events = RelayEventQueue()
    let config: RelayConfiguration
    /// Where mesh snapshots are published; `routing` is this loop's state for the last one.
    let mesh: MeshPublisher
    var routing: LoopRouting
    /// Connections waiting for their first bytes (the sweep runs more often meanwhile).
    var peeking = 0
    /// The namespace the loop's thread starts in (the node's), to return to when the pod
    /// it last created a socket in goes away (a thread inside a netns keeps it alive).
    let homeNetns: NetworkNamespace?
    var logger: Logger
    /// This loop's share of the connection budget.
    let maxConnections: Int

    private let stopAcceptingFlag = Atomic<Bool>(false)
    private let stopFlag = Atomic<Bool>(false)
    private var thread: SystemThread?

    var epoll: Epoll!
    /// Listener table; a closed listener leaves a hole (its token is never reused while
    /// an event for it could still be pending, as removals happen between batches).
    var listeners: [PodListener?] = []
    var freeListenerSlots: [Int] = []
    /// The pod whose netns this thread is in (-1: the node's).
    var currentPod = -1
    /// Control messages from the controller, and the bell that announces them.
    private let mailbox = Mutex<[LoopCommand]>([])
    private let bell: EventNotifier
    var slots: [Connection] = []
    var freeSlots: [Int] = []
    /// Connections with work left after their fairness budget ran out.
    var ready: [UInt64] = []
    /// Directions waiting for a pipe: connection identity | direction bit (0 out, 1 in).
    var pipeWaiters: [UInt64] = []
    var pipeWaitersHead = 0
    var pool: PipePool
    var counters = LoopCounters()
    /// The loop's one copy buffer for small messages (`FlowState.copyChunk` bytes).
    /// Allocated once; a copy step fills and empties it within one call, so no
    /// connection ever owns bytes here.
    let scratch = UnsafeMutableRawPointer.allocate(byteCount: FlowState.copyChunk, alignment: 64)
    /// Free copy buffers of mTLS connections (`copyBufferSize` bytes each).
    var copyBuffers: [UnsafeMutableRawPointer] = []
    /// TLS session tickets from endpoints this loop's tunnels verified, with the context
    /// they belong to (a rotated context starts afresh).
    var sessions: [SessionKey: (context: TLSContext, session: TLSSession)] = [:]
    var now: Int64 = 0
    /// Accept is paused until this time (fd exhaustion), or while at the connection limit.
    var acceptPausedUntil: Int64 = 0
    var acceptPausedForLimit = false
    var listenersEnabled = true
    var lastAcceptErrorLog: Int64 = -1_000_000
    /// Caps per-connection log lines so that a storm of resets cannot flood the log.
    var logBudget = LogBudget(linesPerSecond: 20)

    /// Splice calls one connection may make before others get a turn.
    static let fairnessBudget = 32

    public init(
        id: Int,
        config: RelayConfiguration,
        homeNetns: NetworkNamespace?,
        mesh: MeshPublisher = MeshPublisher(),
        maxConnections: Int,
        pipePages: Int,
        logger: Logger
    ) throws(SystemError) {
        self.id = id
        self.config = config
        self.mesh = mesh
        self.routing = LoopRouting(runtime: mesh.runtime, seed: UInt64(id + 1) &* 0x9E37_79B9_7F4A_7C15)
        self.homeNetns = homeNetns
        self.bell = try EventNotifier()
        self.maxConnections = maxConnections
        self.pool = PipePool(bulkSize: config.pipeSize, pageLimit: pipePages, pageSize: SystemProcess.pageSize)
        self.logger = logger
        self.logger[metadataKey: "loop"] = "\(id)"
    }

    deinit {
        scratch.deallocate()
        for buffer in copyBuffers { buffer.deallocate() }
        bell.close()
    }

    /// Queues a control message; the loop applies it after its current event batch.
    public func send(_ command: LoopCommand) {
        mailbox.withLock { $0.append(command) }
        bell.signal()
    }

    /// Starts the loop's thread. It accepts nothing until listeners arrive by `send`.
    public func start() throws {
        let opened = DispatchSemaphore(value: 0)
        let outcome = StartOutcome()
        thread = try SystemThread.spawn(name: "loom-relay-\(id)") { [self] in
            let error = self.setUpReportingError()
            outcome.error.withLock { $0 = error }
            opened.signal()
            if error == nil { self.run() }
        }
        opened.wait()
        if let error = outcome.error.withLock({ $0 }) {
            thread?.join()
            thread = nil
            throw error
        }
    }

    /// Stops accepting new connections (listeners close); connections in flight go on.
    public func stopAccepting() {
        stopAcceptingFlag.store(true, ordering: .relaxed)
        bell.signal()
    }

    /// Ends the loop: connections still open are reset. Joins the thread.
    public func stop() {
        stopFlag.store(true, ordering: .relaxed)
        thread?.join()
        thread = nil
    }

    // MARK: - Loop thread

    private func setUpReportingError() -> RelayError? {
        do {
            epoll = try Epoll(capacity: 512)
            try epoll.add(bell.fd, interest: [.readable], token: Token.mailbox)
        } catch {
            return .epoll(error)
        }
        return nil
    }

    private func run() {
        now = SystemProcess.nowMilliseconds()
        var nextSweep = now + 500
        while !stopFlag.load(ordering: .relaxed) {
            if stopAcceptingFlag.load(ordering: .relaxed) && listeners.contains(where: { $0 != nil }) {
                closeListeners()
            }
            var count: Int
            do {
                if config.busyPollMicroseconds > 0 && ready.isEmpty {
                    // Busy polling: right after work, poll without sleeping for a few
                    // microseconds; the next event of a request/response exchange
                    // usually arrives within that window and is handled without a
                    // scheduler wake-up.
                    count = try epoll.wait(timeoutMs: 0)
                    let until = SystemProcess.nowMicroseconds() + config.busyPollMicroseconds
                    while count == 0 && SystemProcess.nowMicroseconds() < until {
                        count = try epoll.wait(timeoutMs: 0)
                    }
                    if count == 0 { count = try epoll.wait(timeoutMs: 250) }
                } else {
                    count = try epoll.wait(timeoutMs: ready.isEmpty ? 250 : 0)
                }
            } catch {
                logger.critical("epoll_wait failed: \(error); relay loop stops")
                break
            }
            now = SystemProcess.nowMilliseconds()
            var mail = false
            for i in 0..<count {
                let (token, events) = epoll.event(i)
                if token == Token.mailbox {
                    mail = true
                } else if Token.isListener(token) {
                    acceptBatch(listener: Int(token & 0xffff))
                } else {
                    handle(token: token, events: events)
                }
            }
            runReady()
            if mail { readMailbox() }
            if now >= nextSweep {
                sweep()
                nextSweep = now + (peeking > 0 ? 50 : 500)
            }
            publish()
        }
        shutDown()
    }

    private func shutDown() {
        closeListeners()
        mailbox.withLock { queue in
            for case .removePod(_, _, let done?) in queue { done.signal() }
            for case .addListeners(let added) in queue { for listener in added { listener.fd.close() } }
            queue.removeAll()
        }
        for conn in slots where conn.inUse { close(conn, reason: .shutdown) }
        pool.drain()
        publish()
    }

    func closeListeners() {
        for case let listener? in listeners { listener.fd.close() }
        listeners.removeAll()
        freeListenerSlots.removeAll()
    }

    /// Applies the controller's messages (between event batches, so no event of this
    /// batch can refer to a listener or connection they remove).
    private func readMailbox() {
        bell.drain()
        let commands = mailbox.withLock { queue in
            let taken = queue
            queue.removeAll()
            return taken
        }
        for command in commands {
            switch command {
            case .addListeners(let added):
                for listener in added { addListener(listener) }
            case .removePod(let pod, let resetConnections, let done):
                removePod(pod, resetConnections: resetConnections)
                done?.signal()
            }
        }
    }

    private func addListener(_ listener: PodListener) {
        if stopAcceptingFlag.load(ordering: .relaxed) {
            listener.fd.close()
            return
        }
        let slot = freeListenerSlots.popLast() ?? listeners.count
        if slot == listeners.count { listeners.append(nil) }
        do {
            try epoll.add(listener.fd, interest: listenersEnabled ? [.readable] : [], token: Token.listener(slot))
            listeners[slot] = listener
        } catch {
            freeListenerSlots.append(slot)
            listener.fd.close()
            logger.error("cannot watch a listener of pod \(listener.pod.name): \(error)")
        }
    }

    private func removePod(_ pod: Int, resetConnections: Bool) {
        for (slot, listener) in listeners.enumerated() where listener?.pod.id == pod {
            listener?.fd.close()
            listeners[slot] = nil
            freeListenerSlots.append(slot)
        }
        if resetConnections {
            for conn in slots where conn.inUse && conn.pod?.id == pod { close(conn, reason: .podGone) }
        }
        if currentPod == pod { returnHome() }
    }

    /// Moves the thread back to the node's netns.
    func returnHome() {
        guard let homeNetns else { return }
        do {
            try homeNetns.enter()
            currentPod = -1
        } catch {
            logger.error("cannot return to the node's network namespace: \(error)")
        }
    }

    func publish() {
        counters.active = slots.count - freeSlots.count
        counters.pipesInUse = pool.inUse
        counters.pipesCached = pool.cachedCount
        counters.pipeWaiters = pipeWaiters.count - pipeWaitersHead
        counters.acceptPaused = !listenersEnabled
        stats.publish(counters)
    }

    /// Periodic work: timeouts, retrying pipe waiters, resuming a paused accept.
    private func sweep() {
        for conn in slots where conn.inUse {
            if case .peeking(let since) = conn.state.phase {
                // The client has not said enough within the peek timeout: route without
                // its bytes (routes that need none, or the service's own endpoints).
                if now - since >= config.peekTimeoutMs { route(conn, outcome: .opaque) }
                continue
            }
            if let reason = conn.state.timeoutCheck(
                now: now,
                connectTimeoutMs: conn.connectTimeoutMs,
                idleTimeoutMs: config.idleTimeoutMs,
                handshakeTimeoutMs: config.handshakeTimeoutMs
            ) {
                if reason == .connectTimeout {
                    if logBudget.allow(now: now) {
                        logger.info(
                            "upstream \(conn.upstreamTarget) did not answer within \(conn.connectTimeoutMs) ms (client \(conn.clientAddress))"
                        )
                    }
                    connectFailed(conn, reason: reason)
                } else {
                    close(conn, reason: reason)
                }
            }
        }
        servePipeWaiters()
        updateAcceptState()
        if let suppressed = logBudget.takeSuppressed(now: now) {
            logger.info(
                "\(suppressed) more connection log lines suppressed (at most \(logBudget.linesPerSecond) a second per loop)"
            )
        }
    }
}

/// Where a starting loop reports its outcome to `start()`.
private final class StartOutcome: Sendable {
    let error = Mutex<RelayError?>(nil)
}

/// Errors that stop a relay loop from starting.
public enum RelayError: Error, CustomStringConvertible, Sendable {
    case epoll(SystemError)

    public var description: String {
        switch self {
        case .epoll(let error): return "cannot create an epoll set: \(error)"
        }
    }
}
