// loomd's wiring: budget, relay loops in the pod's netns, admin socket, signals, drain.
import Dispatch
import Logging
import LoomRelay
import LoomSystem

/// Everything loomd needs to start.
public struct DaemonSettings: Sendable {
    /// The pod network namespace to serve (name, path or PID); nil: loomd's own.
    public var netns: String?
    public var relay: RelayConfiguration
    /// Unix socket of the admin API.
    public var adminSocket: String
    /// On SIGTERM, wait this long for connections to finish before resetting them.
    public var drainTimeoutMs: Int64
    /// Pipe pages loomd may use; nil: `fs.pipe-user-pages-soft`.
    public var pipePages: Int?

    public init(
        netns: String?,
        relay: RelayConfiguration,
        adminSocket: String = "/run/loom/admin.sock",
        drainTimeoutMs: Int64 = 5000,
        pipePages: Int? = nil
    ) {
        self.netns = netns
        self.relay = relay
        self.adminSocket = adminSocket
        self.drainTimeoutMs = drainTimeoutMs
        self.pipePages = pipePages
    }
}

/// The running daemon.
public final class Daemon: @unchecked Sendable {
    // @unchecked: `loops` and `admin` are set in `start()` before other threads read them
    // and not changed afterwards.
    public let settings: DaemonSettings
    public private(set) var loops: [RelayLoop] = []
    public private(set) var budget: ResourceBudget?
    private var admin: AdminServer?
    private let logger: Logger
    private let startedAt = SystemProcess.nowMilliseconds()

    public init(settings: DaemonSettings, logger: Logger) {
        self.settings = settings
        self.logger = logger
    }

    /// Computes the budget, opens the netns, starts the loops and the admin socket.
    public func start() throws {
        SystemProcess.blockSignals()
        let fileLimit = SystemProcess.raiseOpenFilesLimit()
        let pipePages =
            settings.pipePages ?? SystemProcess.readInteger(path: "/proc/sys/fs/pipe-user-pages-soft") ?? 16384
        let config = settings.relay
        let budget = ResourceBudget(
            fileLimit: fileLimit,
            pipePages: pipePages > 0 ? pipePages : Int.max / 2,
            pageSize: SystemProcess.pageSize,
            loops: config.loops,
            requestedConnections: config.maxConnections
        )
        self.budget = budget
        if budget.clamped {
            logger.warning(
                "--max-connections \(config.maxConnections ?? 0) does not fit the fd budget; using \(budget.maxConnections)"
            )
        }
        logger.info("budget: \(budget)")

        let netns = try settings.netns.map { selector throws in try NetworkNamespace.open(selector) }
        let perLoopConnections = max(1, (budget.maxConnections + config.loops - 1) / config.loops)
        var started: [RelayLoop] = []
        do {
            for id in 0..<config.loops {
                let loop = RelayLoop(
                    id: id,
                    config: config,
                    netns: netns,
                    maxConnections: perLoopConnections,
                    pipePages: budget.pipePagesPerLoop(loops: config.loops),
                    logger: logger
                )
                try loop.start()
                started.append(loop)
            }
            // Published before the admin thread exists, so it never sees a partial list.
            loops = started
            admin = try AdminServer(path: settings.adminSocket, logger: logger) { [weak self] command in
                self?.answer(command) ?? "{\"error\":\"shutting down\"}"
            }
        } catch {
            for loop in started { loop.stop() }
            loops = []
            throw error
        }
        let v6 = config.ipv6 ? " and [::]:\(config.outboundPort)" : ""
        logger.info(
            "ready: \(config.loops) relay loop(s) listening on 0.0.0.0:\(config.outboundPort)\(v6) in netns \(settings.netns ?? "(node)"); admin socket \(settings.adminSocket)"
        )
    }

    /// Blocks until SIGTERM or SIGINT, then drains and stops.
    public func runUntilSignalled() {
        while true {
            let signal = SystemProcess.waitForSignal()
            if signal == SystemProcess.sigterm || signal == SystemProcess.sigint { break }
            logger.info("signal \(signal) ignored (reload arrives with the configuration issue)")
        }
        stop()
    }

    /// Stops accepting, waits for connections to end (up to the drain timeout), stops loops.
    public func stop() {
        logger.info("stopping: no new connections; draining up to \(settings.drainTimeoutMs) ms")
        for loop in loops { loop.stopAccepting() }
        let deadline = SystemProcess.nowMilliseconds() + settings.drainTimeoutMs
        while SystemProcess.nowMilliseconds() < deadline && totals().active > 0 {
            usleepMilliseconds(50)
        }
        let left = totals().active
        if left > 0 { logger.warning("drain time over: resetting \(left) connection(s)") }
        for loop in loops { loop.stop() }
        admin?.stop()
        logger.info("stopped")
    }

    /// Sum of every loop's counters.
    public func totals() -> LoopCounters {
        loops.map { $0.stats.snapshot() }.reduce(LoopCounters(), +)
    }

    private func answer(_ command: String) -> String {
        switch command {
        case "status":
            return StatusReport(
                netns: settings.netns,
                config: settings.relay,
                budget: budget,
                loops: loops.map { $0.stats.snapshot() },
                uptimeMs: SystemProcess.nowMilliseconds() - startedAt,
                pid: Int(SystemProcess.id)
            ).json()
        default:
            return "{\"error\":\"unknown command \(jsonEscape(command)); try status\"}"
        }
    }
}

func usleepMilliseconds(_ ms: Int) {
    let semaphore = DispatchSemaphore(value: 0)
    _ = semaphore.wait(timeout: .now() + .milliseconds(ms))
}
