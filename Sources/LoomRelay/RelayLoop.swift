// Unsafe pointers: `scratch`, the loop's copy buffer, used only in RelayLoop+Relay.swift.
// A relay loop: one plain thread with its own epoll set, listeners (SO_REUSEPORT), pipe
// pool and connections. A connection never changes loops; nothing here takes a lock.
// Sockets are edge-triggered (readiness is remembered in FlowState until EAGAIN);
// listeners are level-triggered so that pausing and resuming accept is one epoll_ctl.
import Dispatch
import Logging
import LoomSystem
import Synchronization

/// One event loop of the relay core.
public final class RelayLoop: @unchecked Sendable {
    // @unchecked: all mutable state below is touched only by the loop's own thread after
    // `start()`; other threads use only `stats` and the atomic stop flags.

    /// The loop's number (0-based), for logs.
    public let id: Int
    /// Published counters, readable from any thread.
    public let stats = LoopStats()
    let config: RelayConfiguration
    let netns: NetworkNamespace?
    var logger: Logger
    /// This loop's share of the connection budget.
    let maxConnections: Int

    private let stopAcceptingFlag = Atomic<Bool>(false)
    private let stopFlag = Atomic<Bool>(false)
    private var thread: SystemThread?

    var epoll: Epoll!
    var listeners: [(fd: FileDescriptor, family: CInt)] = []
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
        netns: NetworkNamespace?,
        maxConnections: Int,
        pipePages: Int,
        logger: Logger
    ) {
        self.id = id
        self.config = config
        self.netns = netns
        self.maxConnections = maxConnections
        self.pool = PipePool(bulkSize: config.pipeSize, pageLimit: pipePages, pageSize: SystemProcess.pageSize)
        self.logger = logger
        self.logger[metadataKey: "loop"] = "\(id)"
    }

    deinit { scratch.deallocate() }

    /// Starts the loop's thread: it enters the netns, opens its listeners, and runs.
    /// Returns once the listeners are open, or throws why they could not be.
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
    public func stopAccepting() { stopAcceptingFlag.store(true, ordering: .relaxed) }

    /// Ends the loop: connections still open are reset. Joins the thread.
    public func stop() {
        stopFlag.store(true, ordering: .relaxed)
        thread?.join()
        thread = nil
    }

    // MARK: - Loop thread

    private func setUpReportingError() -> RelayError? {
        if let netns {
            do {
                try netns.enter()
            } catch {
                return .enterNetns(netns: netns.name, error: error)
            }
        }
        do {
            epoll = try Epoll(capacity: 512)
        } catch {
            return .epoll(error)
        }
        var addresses: [SocketAddress] = [.v4(address: 0, port: config.outboundPort)]
        if config.ipv6 { addresses.append(.v6(hi: 0, lo: 0, port: config.outboundPort)) }
        if id == 0 {
            // The first loop makes sure nobody else holds the port before the loops
            // bind with SO_REUSEPORT (which would let a second loomd share it silently).
            do {
                try FileDescriptor.checkPortFree(addresses[0])
            } catch {
                return .listen(address: addresses[0], netns: netns?.name, error: error)
            }
        }
        for address in addresses {
            let isV6 = address.family != addresses[0].family
            var opened: FileDescriptor?
            var failure: SystemError?
            do {
                let fd = try FileDescriptor.tcpSocket(family: address.family)
                opened = fd
                try fd.listen(on: address, reusePort: true, backlog: config.backlog)
                try epoll.add(fd, interest: [.readable], token: Token.listener(listeners.count))
            } catch {
                failure = error
            }
            if let failure {
                opened?.close()
                let unsupported =
                    failure.errno == Errno.addressNotAvailable || failure.errno == Errno.familyNotSupported
                if isV6 && unsupported {
                    logger.warning("IPv6 is not available in this network namespace; listening on IPv4 only")
                    continue
                }
                closeListeners()
                return .listen(address: address, netns: netns?.name, error: failure)
            }
            listeners.append((opened!, address.family))
        }
        return nil
    }

    private func run() {
        now = SystemProcess.nowMilliseconds()
        var nextSweep = now + 500
        while !stopFlag.load(ordering: .relaxed) {
            if stopAcceptingFlag.load(ordering: .relaxed) && !listeners.isEmpty { closeListeners() }
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
            for i in 0..<count {
                let (token, events) = epoll.event(i)
                if Token.isListener(token) {
                    acceptBatch(listener: Int(token & 0xffff))
                } else {
                    handle(token: token, events: events)
                }
            }
            runReady()
            if now >= nextSweep {
                sweep()
                nextSweep = now + 500
            }
            publish()
        }
        shutDown()
    }

    private func shutDown() {
        closeListeners()
        for conn in slots where conn.inUse { close(conn, reason: .shutdown) }
        pool.drain()
        publish()
    }

    func closeListeners() {
        for listener in listeners { listener.fd.close() }
        listeners.removeAll()
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
            if let reason = conn.state.timeoutCheck(
                now: now,
                connectTimeoutMs: config.connectTimeoutMs,
                idleTimeoutMs: config.idleTimeoutMs
            ) {
                if reason == .connectTimeout && logBudget.allow(now: now) {
                    logger.info(
                        "upstream \(conn.destination) did not answer within \(config.connectTimeoutMs) ms; resetting client \(conn.clientAddress)"
                    )
                }
                close(conn, reason: reason)
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
    case enterNetns(netns: String, error: SystemError)
    case epoll(SystemError)
    case listen(address: SocketAddress, netns: String?, error: SystemError)

    public var description: String {
        switch self {
        case .enterNetns(let netns, let error):
            return "cannot enter network namespace \(netns): \(error); loomd needs root (CAP_SYS_ADMIN)"
        case .epoll(let error):
            return "cannot create an epoll set: \(error)"
        case .listen(let address, let netns, let error):
            let hint = error.errno == Errno.addressInUse ? "; is another loomd (or proxy) already listening there?" : ""
            return "cannot listen on \(address) in network namespace \(netns ?? "(node)"): \(error)\(hint)"
        }
    }
}
