// loomd's wiring: lock, configuration, budget, relay loops, interception, admin socket,
// signals, drain.
import Dispatch
import Foundation
import Logging
import LoomIntercept
import LoomMesh
import LoomRelay
import LoomSystem
import LoomTLS
import LoomTrace
import Synchronization

/// Everything loomd needs to start.
public struct DaemonSettings: Sendable {
    public var relay: RelayConfiguration
    /// Ports, mark and heartbeat every pod's rules use.
    public var intercept: InterceptSettings
    /// Configuration file (YAML); nil: the embedded default (no pods).
    public var configPath: String?
    /// Pods given on the command line (`--netns`): added to namespace `default` and
    /// intercepted.
    public var netns: [String]
    /// Where the lock and the persisted interception state live; nil: nothing persisted.
    public var stateDirectory: String?
    /// Unix socket of the admin API.
    public var adminSocket: String
    /// On SIGTERM, wait this long for connections to finish before resetting them.
    public var drainTimeoutMs: Int64
    /// Pipe pages loomd may use; nil: `fs.pipe-user-pages-soft`.
    public var pipePages: Int?
    /// Where Prometheus scrapes `GET /metrics` over TCP; nil: no TCP listener.
    public var metricsAddress: MetricsAddress?
    /// Where access-log lines go (`-`: standard output); namespaces opt in (`accessLog`).
    public var accessLog: String = "-"
    /// Trace records queued per tracer before it loses some (it is told how many).
    public var traceBuffer: Int = 4096
    /// Once set up, keep only the capabilities the steady state needs (`--keep-capabilities`: all).
    public var dropCapabilities: Bool = true
    /// If another loomd holds the state directory, take its listeners over (hitless
    /// upgrade) instead of refusing to start.
    public var takeover = false
    /// After handing over, wait for SIGTERM instead of exiting (a Kubernetes pod whose
    /// container would otherwise be restarted, and take over again).
    public var lingerAfterHandOver = false
    /// The mesh CA and workload certificate lifetime; nil: no mTLS (plaintext everywhere,
    /// no tunnel listener).
    public var tls: MeshTLSSettings?

    public init(
        relay: RelayConfiguration,
        intercept: InterceptSettings = InterceptSettings(),
        configPath: String? = nil,
        netns: [String] = [],
        stateDirectory: String? = "/run/loom",
        adminSocket: String = "/run/loom/admin.sock",
        drainTimeoutMs: Int64 = 5000,
        pipePages: Int? = nil,
        metricsAddress: MetricsAddress? = nil
    ) {
        self.relay = relay
        self.intercept = intercept
        self.configPath = configPath
        self.netns = netns
        self.stateDirectory = stateDirectory
        self.adminSocket = adminSocket
        self.drainTimeoutMs = drainTimeoutMs
        self.pipePages = pipePages
        self.metricsAddress = metricsAddress
    }
}

/// Another loomd owns the state directory.
public struct DaemonLockError: Error, CustomStringConvertible {
    public let path: String
    public let error: SystemError
    public var description: String {
        if error.errno == EWOULDBLOCK {
            return
                "another loomd is running on this node (it holds \(path)); stop it first, or give this one its own --state-dir and --admin-socket"
        }
        return "cannot lock \(path): \(error)"
    }
}

/// The running daemon.
public final class Daemon: @unchecked Sendable {
    // @unchecked: `loops`, `admin`, `controller` and `ticker` are set in `start()` before
    // other threads read them and not changed afterwards (`stopping` is atomic).
    public let settings: DaemonSettings
    public private(set) var loops: [RelayLoop] = []
    public private(set) var budget: ResourceBudget?
    var admin: AdminServer?
    private(set) var controller: InterceptionController?
    var ticker: SystemThread?
    let stopping = Atomic<Bool>(false)
    /// The ticker stops (shutdown, or a hand-over to a new loomd).
    let tickerStop = Atomic<Bool>(false)
    /// Listeners and lock went to a new loomd: drain and exit.
    let handedOver = Atomic<Bool>(false)
    /// Where a new loomd asks for a takeover, and the thread serving it.
    var upgradeSocket: PacketSocket?
    var upgradeThread: SystemThread?
    var lockFile: FileDescriptor?
    /// Mesh snapshots for the loops.
    public let mesh = MeshPublisher()
    /// Serialises reloads (signal, admin command, file watcher).
    private let reloading = Mutex<Void>(())
    /// The configuration file as last read (a change triggers a reload).
    private var configStamp: FileStamp?
    /// Joins kernel verdicts and relay events for tracers and access logs.
    private(set) var traceHub: TraceHub?
    /// What the loomd this one replaces handed over (until acknowledged).
    private var handOff: HandOff?
    /// Live traces and their scopes; access logs by namespace.
    let traces = Mutex<[Int: (TraceSubscription, TraceScope)]>([:])
    let accessLogs = Mutex<[String: TraceSubscription]>([:])
    /// The mesh configuration last loaded (access-log settings).
    private var meshConfig: MeshConfig?
    let logger: Logger
    let startedAt = SystemProcess.nowMilliseconds()
    /// Whether encrypted connections could be spliced (kTLS); probed once at start.
    private(set) var kernelTLS = KernelTLS.Availability.unavailable(errno: 0)
    /// Issues and rotates workload certificates (nil: no mesh CA).
    private(set) var certificates: WorkloadCertificates?

    public init(settings: DaemonSettings, logger: Logger) {
        self.settings = settings
        self.logger = logger
    }

    /// Locks the state directory, reads the configuration, computes the budget, starts
    /// the loops, intercepts the pods asked for, and opens the admin socket.
    public func start() throws {
        SystemProcess.blockSignals()
        // The CA first: a bad key or certificate stops loomd before it touches anything.
        let authority = try settings.tls?.loadAuthority()
        var statePath: String?
        var saved: NodeState?
        if let dir = settings.stateDirectory {
            makeDirectories(dir, mode: 0o700)
            let lockPath = dir + "/loomd.lock"
            do {
                lockFile = try SystemProcess.lockFile(lockPath)
                if settings.takeover { logger.notice("--takeover: no loomd runs on \(dir); starting fresh") }
            } catch {
                guard settings.takeover, error.errno == EWOULDBLOCK else {
                    throw DaemonLockError(path: lockPath, error: error)
                }
                let handOff = try HandOff.request(path: dir + "/upgrade.sock", logger: logger)
                // Its listeners must be on this loomd's capture ports, or its rules would
                // redirect to ports nobody listens on.
                let ports = [
                    settings.intercept.outboundPort, settings.intercept.inboundPort, settings.relay.tunnelPort,
                ]
                if let other = handOff.pods.values.joined().first(where: { !ports.contains($0.port) }) {
                    handOff.abandon()
                    throw TakeoverError(
                        message:
                            "the running loomd listens on port \(other.port); a takeover needs the same --outbound-port and --inbound-port (this loomd has \(ports[0]) and \(ports[1])); it carries on"
                    )
                }
                lockFile = handOff.lock
                self.handOff = handOff
            }
            statePath = dir + "/state.json"
            if let data = FileManager.default.contents(atPath: dir + "/state.json") {
                do {
                    saved = try JSONDecoder().decode(NodeState.self, from: data)
                } catch {
                    logger.warning("ignoring unreadable \(dir)/state.json: \(error)")
                }
            }
        }
        var config = NodeState()
        if let path = settings.configPath {
            let loaded = try NodeConfig.load(path: path)
            config = loaded.state
            mesh.publish(loaded.mesh.snapshot)
            meshConfig = loaded.mesh
            SystemProcess.releaseFreedMemory()
            configStamp = FileStamp(path: path)
            for warning in loaded.mesh.warnings { logger.warning("\(warning)") }
            logger.info("configuration \(path): \(Self.summary(loaded.mesh.snapshot))")
        }
        for netns in settings.netns {
            try? config.addPod(
                PodEntry(netns: netns, namespace: NodeState.defaultNamespace, intercept: true, fromConfig: true)
            )
        }
        for netns in settings.netns {
            // Fail fast on a pod named on the command line that does not exist.
            let handle = try NetworkNamespace.open(netns)
            handle.fd.close()
        }
        let state = NodeConfig.merge(config: config, saved: saved)

        let fileLimit = SystemProcess.raiseOpenFilesLimit()
        let pipePages =
            settings.pipePages ?? SystemProcess.readInteger(path: "/proc/sys/fs/pipe-user-pages-soft") ?? 16384
        let relay = settings.relay
        let budget = ResourceBudget(
            fileLimit: fileLimit,
            pipePages: pipePages > 0 ? pipePages : Int.max / 2,
            pageSize: SystemProcess.pageSize,
            loops: relay.loops,
            requestedConnections: relay.maxConnections
        )
        self.budget = budget
        if budget.clamped {
            logger.warning(
                "--max-connections \(relay.maxConnections ?? 0) does not fit the fd budget; using \(budget.maxConnections)"
            )
        }
        logger.info("budget: \(budget)")

        // The admin socket first: a loomd that would orphan a live one's socket must stop
        // before it touches any pod.
        do {
            admin = try makeAdminServer()
        } catch {
            handOff.map { h in for l in h.pods.values.joined() { l.fd.close() } }
            throw error
        }
        kernelTLS = KernelTLS.probe()
        logger.info(
            "kernel TLS: \(kernelTLS)\(kernelTLS.isAvailable ? "" : "; encrypted connections will copy through user space")"
        )
        if let authority, let tls = settings.tls {
            certificates = WorkloadCertificates(
                authority: authority,
                lifetimeSeconds: tls.certificateSeconds,
                kernelTLS: kernelTLS.isAvailable,
                logger: logger
            )
            logger.info(
                "mesh CA \(authority.subject) (trust domain \(authority.trustDomain), sha256 \(authority.fingerprint.prefix(16))…); workload certificates live \(tls.certificateSeconds) s; mTLS tunnel on :\(relay.tunnelPort)"
            )
        } else {
            logger.info("no mesh CA (--ca-dir): mTLS off; endpoints are reached in plaintext")
        }
        let home = try NetworkNamespace.current()
        let perLoopConnections = max(1, (budget.maxConnections + relay.loops - 1) / relay.loops)
        var started: [RelayLoop] = []
        do {
            for id in 0..<relay.loops {
                let loop = try RelayLoop(
                    id: id,
                    config: relay,
                    homeNetns: home,
                    mesh: mesh,
                    maxConnections: perLoopConnections,
                    pipePages: budget.pipePagesPerLoop(loops: relay.loops),
                    logger: logger
                )
                try loop.start()
                started.append(loop)
            }
            // Published before the admin thread exists, so it never sees a partial list.
            loops = started
            let hub = try TraceHub(
                loops: started,
                mesh: mesh,
                accessLogPath: settings.accessLog,
                tracerCapacity: settings.traceBuffer,
                logger: logger
            )
            try hub.start()
            traceHub = hub
            let controller = InterceptionController(
                loops: started,
                base: settings.intercept,
                relay: relay,
                state: state,
                statePath: statePath,
                logger: logger
            )
            controller.traceHub = hub
            controller.certificates = certificates
            if let handOff {
                let adopted = controller.adopt(handOff.pods)
                logger.notice("takeover: adopted \(adopted) listener(s); re-applying tables in place")
            }
            controller.start()
            self.controller = controller
            if let meshConfig { syncAccessLogs(meshConfig) }
            // Pods named on the command line are the point of this loomd: failing them fails it.
            let named = Set(settings.netns.map(NetworkNamespace.resolvePath))
            if let failed = controller.podStatuses().first(where: { named.contains($0.netns) && $0.error != nil }) {
                throw PodError(netns: failed.netns, message: failed.error ?? "")
            }
            try startTicker()
            // Least privilege once set up, in every thread: nf_tables, NFQUEUE and SO_MARK
            // (NET_ADMIN), setns into pods (SYS_ADMIN), /proc/PID/ns/net of processes that
            // have other capabilities or another user (SYS_PTRACE).
            if settings.dropCapabilities {
                let before = Capabilities.current()
                try Capabilities.restrict(keeping: [.netAdmin, .sysAdmin, .sysPtrace])
                logger.info("capabilities: \(Capabilities.summary(before: before, after: Capabilities.current()))")
            }
        } catch {
            controller?.shutDown()
            traceHub?.stop()
            for loop in started { loop.stop() }
            loops = []
            admin?.stop()
            throw error
        }
        if let handOff {
            // The old loomd stops accepting now; what it has in flight it finishes.
            handOff.acknowledge(adopted: handOff.pods.values.reduce(0) { $0 + $1.count })
            self.handOff = nil
        }
        if let dir = settings.stateDirectory { startUpgradeServer(path: dir + "/upgrade.sock") }
        let pods = controller?.podStatuses() ?? []
        let intercepted = pods.filter { $0.state == "intercepted" }.count
        for pod in pods where pod.error != nil { logger.error("pod \(pod.netns): \(pod.error!)") }
        ServiceNotify.send(
            "READY=1\nSTATUS=\(intercepted) of \(pods.count) pod(s) intercepted\nMAINPID=\(SystemProcess.id)"
        )
        logger.info(
            "ready: \(relay.loops) relay loop(s); \(intercepted) of \(pods.count) pod(s) intercepted (outbound :\(settings.intercept.outboundPort), inbound :\(settings.intercept.inboundPort)); admin socket \(settings.adminSocket)"
        )
    }

    /// Blocks until SIGTERM or SIGINT, then drains and stops.
    public func runUntilSignalled() {
        while true {
            let signal = SystemProcess.waitForSignal()
            if signal == SystemProcess.sigusr1 && handedOver.load(ordering: .relaxed) {
                finishAfterHandOver()
                return
            }
            if signal == SystemProcess.sigterm || signal == SystemProcess.sigint { break }
            if signal == SystemProcess.sigusr2 {
                spawnSuccessor()
            } else if signal == SystemProcess.sighup {
                _ = reload(trigger: "SIGHUP")
            } else {
                logger.info("signal \(signal) ignored")
            }
        }
        stop()
    }

    /// Stops accepting, waits for connections to end (up to the drain timeout), stops
    /// loops. Pods' rules stay: their fail policy decides what happens while loomd is
    /// gone, and the next loomd replaces them.
    public func stop() {
        logger.info("stopping: no new connections; draining up to \(settings.drainTimeoutMs) ms")
        ServiceNotify.send("STOPPING=1")
        stopping.store(true, ordering: .relaxed)
        tickerStop.store(true, ordering: .relaxed)
        ticker?.join()
        stopUpgradeServer()
        for loop in loops { loop.stopAccepting() }
        drainConnections(after: "")
        admin?.stop()
        for (subscription, _) in traces.withLock({ Array($0.values) }) { endTrace(subscription) }
        controller?.shutDown()
        traceHub?.stop()
        for loop in loops { loop.stop() }
        lockFile?.close()
        logger.info("stopped")
    }

    /// Waits up to the drain timeout for the loops' connections to end; what is left is
    /// reset when the loops stop.
    func drainConnections(after what: String) {
        let deadline = SystemProcess.nowMilliseconds() + settings.drainTimeoutMs
        while SystemProcess.nowMilliseconds() < deadline && totals().active > 0 {
            usleepMilliseconds(50)
        }
        let left = totals().active
        if left > 0 { logger.warning("drain time over\(what): resetting \(left) connection(s)") }
    }

    /// Sum of every loop's counters.
    public func totals() -> LoopCounters {
        loops.map { $0.stats.snapshot() }.reduce(LoopCounters(), +)
    }

    /// The admin API's routes. Over TCP only `GET /metrics` gets here.
    func route(_ request: AdminHTTPRequest) -> AdminAnswer {
        switch (request.method, request.path) {
        case ("POST", "/v1/command"): return .response(AdminHTTPResponse(body: answer(request.text.trimmingSpaces())))
        case ("GET", "/v1/status"): return .response(AdminHTTPResponse(body: answer("status")))
        case ("GET", "/v1/routes"): return .response(AdminHTTPResponse(body: answer(AdminRequest(op: .routes).line())))
        case ("GET", "/metrics"):
            let prometheus = "text/plain; version=0.0.4; charset=utf-8"
            return .response(AdminHTTPResponse(contentType: prometheus, body: metricsText()))
        case ("GET", "/v1/trace"): return startTrace(query: request.query)
        case ("GET", "/v1/top"): return .response(AdminHTTPResponse(body: topReport().json()))
        case (_, "/v1/command"): return .error(405, "use POST for /v1/command")
        case (_, "/v1/status"), (_, "/v1/routes"), (_, "/v1/trace"), (_, "/v1/top"), (_, "/metrics"):
            return .error(405, "use GET for \(request.path)")
        default:
            return .error(
                404,
                "unknown path \(request.path); try /v1/status, /v1/routes, /v1/top, /v1/command, /v1/trace, /metrics"
            )
        }
    }

    private func answer(_ line: String) -> String {
        var request: AdminRequest
        if line.hasPrefix("{") {
            do {
                request = try JSONDecoder().decode(AdminRequest.self, from: Data(line.utf8))
            } catch {
                return AdminReply(error: "malformed request: \(error)").line()
            }
        } else if line == "status" {
            request = AdminRequest(op: .status)
        } else {
            return AdminReply(error: "unknown command '\(line)'; try status").line()
        }
        guard let controller else { return AdminReply(error: "loomd is starting; try again").line() }
        switch request.op {
        case .reload:
            switch reload(trigger: "loomctl reload") {
            case .success(let message): return AdminReply(message: message).line()
            case .failure(let error): return AdminReply(error: error.message).line()
            }
        case .routes:
            return RoutesReport(mesh.runtime).json()
        case .explain:
            return explain(request, controller: controller).line()
        default:
            break
        }
        if request.op == .status {
            var report = StatusReport(
                config: settings.relay,
                budget: budget,
                loops: loops.map { $0.stats.snapshot() },
                pods: controller.podStatuses(),
                uptimeMs: SystemProcess.nowMilliseconds() - startedAt,
                pid: Int(SystemProcess.id)
            )
            let runtime = mesh.runtime
            report.meshVersion = runtime.version
            report.meshSource = runtime.snapshot.source
            report.meshServices = runtime.snapshot.services.count
            report.kernelTLS = kernelTLS.description
            report.mtls = mtlsStatus()
            return report.json()
        }
        return controller.handle(request).line()
    }
}

extension Daemon {
    /// The mesh CA, certificate lifetime and handshake counters for `loomctl status`.
    func mtlsStatus() -> String {
        guard let certificates else { return "null" }
        let ca = certificates.authority
        let client = loops.reduce(0) { $0 + $1.metrics.handshakesClient.value }
        let server = loops.reduce(0) { $0 + $1.metrics.handshakesServer.value }
        let resumed = loops.reduce(0) { $0 + $1.metrics.handshakesResumed.value }
        let buffers = loops.reduce(0) { $0 + $1.stats.snapshot().copyBuffers }
        return "{\"trust_domain\":\"\(jsonEscape(ca.trustDomain))\",\"ca\":\"\(jsonEscape(ca.subject))\","
            + "\"ca_sha256\":\"\(ca.fingerprint)\",\"ca_expires\":\(ca.notAfter),"
            + "\"certificate_seconds\":\(certificates.lifetimeSeconds),\"certificates_issued\":\(certificates.issuedCount),"
            + "\"rotation_failures\":\(certificates.failures),\"tunnel_port\":\(settings.relay.tunnelPort),"
            + "\"handshakes_client\":\(client),\"handshakes_server\":\(server),\"handshakes_resumed\":\(resumed),\"copy_buffers\":\(buffers)}"
    }

    /// A reload that was refused; the running snapshot stays.
    struct ReloadError: Error {
        let message: String
    }

    /// Reads the configuration file again and publishes its mesh: new connections use
    /// it, connections in flight keep theirs. An invalid file changes nothing.
    func reload(trigger: String) -> Result<String, ReloadError> {
        reloading.withLock { _ in
            guard let path = settings.configPath else {
                return .failure(ReloadError(message: "loomd runs without --config; there is nothing to reload"))
            }
            let started = SystemProcess.nowMicroseconds()
            let stamp = FileStamp(path: path)
            let loaded: (state: NodeState, mesh: MeshConfig)
            do {
                loaded = try NodeConfig.load(path: path)
            } catch {
                configStamp = stamp
                logger.error(
                    "reload (\(trigger)) refused; keeping configuration version \(mesh.runtime.version):\n\(error)"
                )
                return .failure(ReloadError(message: "\(error)"))
            }
            configStamp = stamp
            let runtime = mesh.publish(loaded.mesh.snapshot)
            meshConfig = loaded.mesh
            SystemProcess.releaseFreedMemory()
            controller?.configChanged(loaded.state)
            syncAccessLogs(loaded.mesh)
            for warning in loaded.mesh.warnings { logger.warning("\(warning)") }
            let ms = Double(SystemProcess.nowMicroseconds() - started) / 1000
            let message =
                "configuration \(path) version \(runtime.version): \(Self.summary(loaded.mesh.snapshot)); loaded in \(String(format: "%.1f", ms)) ms"
            logger.info("reload (\(trigger)): \(message)")
            return .success(message)
        }
    }

    /// The ticker's file watch: a rewritten configuration file is reloaded.
    func reloadIfFileChanged() {
        guard let path = settings.configPath else { return }
        let stamp = FileStamp(path: path)
        guard stamp != nil, stamp != reloading.withLock({ _ in configStamp }) else { return }
        _ = reload(trigger: "file changed")
    }

    static func summary(_ snapshot: MeshSnapshot) -> String {
        let endpoints = snapshot.services.reduce(0) { $0 + $1.endpoints.count }
        let routes = snapshot.services.reduce(0) { $0 + $1.ports.reduce(0) { $0 + $1.routes.count } }
        return "\(snapshot.services.count) service(s), \(endpoints) endpoint(s), \(routes) route(s)"
    }

    private func explain(_ request: AdminRequest, controller: InterceptionController) -> AdminReply {
        guard let to = request.to, let destination = SocketAddress(parsing: to) else {
            return AdminReply(error: "--to must be IP:PORT, such as 10.96.0.10:80 or [fd96::10]:443")
        }
        var namespace = NodeState.defaultNamespace
        if let netns = request.selector?.netns {
            guard let known = controller.namespace(of: netns) else {
                return AdminReply(error: NodeStateError.unknownPod(NetworkNamespace.resolvePath(netns)).description)
            }
            namespace = known
        }
        var outcome: SniffOutcome?
        if let sni = request.sni {
            outcome = .tls(serverName: sni.lowercased())
        } else if request.host != nil || request.path != nil || !(request.headers ?? [:]).isEmpty {
            outcome = .http(
                HTTPRequestHead(
                    method: "GET",
                    path: request.path ?? "/",
                    host: request.host?.lowercased(),
                    headers: (request.headers ?? [:]).sorted { $0.key < $1.key }.map { ($0.key.lowercased(), $0.value) }
                )
            )
        }
        var reply = AdminReply()
        if let netns = request.selector?.netns {
            reply.kernel = controller.explainKernel(
                netns: netns,
                destination: destination,
                inbound: request.inbound ?? false
            )
        }
        reply.explanation = mesh.runtime.snapshot.explain(
            destination: destination,
            namespace: namespace,
            outcome: outcome
        )
        return reply
    }
}

func usleepMilliseconds(_ ms: Int) {
    let semaphore = DispatchSemaphore(value: 0)
    _ = semaphore.wait(timeout: .now() + .milliseconds(ms))
}
