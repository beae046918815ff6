// The running loomd's side of a takeover (see Takeover.swift for the protocol), and the
// pieces of start-up it restarts if a takeover fails half-way.
import Foundation
import LoomRelay
import LoomSystem
import LoomTrace

extension Daemon {
    func makeAdminServer() throws -> AdminServer {
        try AdminServer(
            path: settings.adminSocket,
            metricsAddress: settings.metricsAddress.map { ($0.host, $0.port) },
            logger: logger
        ) { [weak self] request in
            self?.route(request) ?? .error(503, "loomd is shutting down")
        }
    }

    func startTicker() throws {
        tickerStop.store(false, ordering: .relaxed)
        ticker = try SystemThread.spawn(name: "loom-ticker") { [weak self] in
            while let self, !self.tickerStop.load(ordering: .relaxed) {
                usleepMilliseconds(1000)
                if self.tickerStop.load(ordering: .relaxed) { break }
                self.controller?.tick()
                self.reloadIfFileChanged()
                self.refreshTraceScopes()
            }
        }
    }

    /// Listens for a new loomd's takeover request.
    func startUpgradeServer(path: String) {
        do {
            upgradeSocket = try PacketSocket.listen(path: path)
            upgradeThread = try SystemThread.spawn(name: "loom-upgrade") { [weak self] in
                // The socket is read again each time: a failed takeover replaces it.
                while let self, let socket = self.upgradeSocket, let connection = try? socket.accept() {
                    if self.serveTakeover(connection, path: path) { return }
                }
            }
        } catch {
            logger.warning("no hitless upgrade for this loomd: cannot listen on \(path): \(error)")
        }
    }

    func stopUpgradeServer() {
        guard let socket = upgradeSocket else { return }
        upgradeSocket = nil
        socket.fd.shutdownBoth()
        if let thread = upgradeThread, !handedOver.load(ordering: .relaxed) { thread.join() }
        upgradeThread = nil
        socket.close()
        if !handedOver.load(ordering: .relaxed), let dir = settings.stateDirectory {
            removeFile(dir + "/upgrade.sock")
        }
    }

    /// Answers one connection on the upgrade socket. True once this loomd has handed
    /// everything over (the server thread then ends).
    private func serveTakeover(_ connection: PacketSocket, path: String) -> Bool {
        defer { connection.close() }
        let received = try? connection.receive(timeoutMs: 5000)
        for fd in received?.descriptors ?? [] { fd.close() }
        guard let text = received?.text, let request = TakeoverMessage.parse(text), let pid = request.takeover
        else {
            try? connection.send(TakeoverMessage(error: "expected {\"takeover\": PID}").json())
            return false
        }
        guard let controller, let lockFile, !stopping.load(ordering: .relaxed) else {
            try? connection.send(TakeoverMessage(error: "this loomd is stopping").json())
            return false
        }
        logger.notice("takeover requested by loomd pid \(pid): handing over listeners and the state lock")
        // From here on the new loomd owns the control plane: no more heartbeats, reloads,
        // admin requests or state writes from this one. The upgrade socket's path is its.
        removeFile(path)
        tickerStop.store(true, ordering: .relaxed)
        ticker?.join()
        ticker = nil
        for (subscription, _) in traces.withLock({ Array($0.values) }) { endTrace(subscription) }
        admin?.stop()
        admin = nil
        do {
            for (pod, listeners) in controller.exportListeners() {
                var start = 0
                while start < listeners.count {
                    let chunk = listeners[start..<min(listeners.count, start + PacketSocket.maxDescriptors)]
                    let message = TakeoverMessage(
                        pod: .init(
                            netns: pod,
                            listeners: chunk.map { .init(port: $0.port, family: $0.family, kind: $0.kind.rawValue) }
                        )
                    )
                    try connection.send(message.json(), descriptors: chunk.map(\.fd))
                    start += chunk.count
                }
            }
            try connection.send(TakeoverMessage(end: true).json(), descriptors: [lockFile])
            guard let (answer, _) = try connection.receive(timeoutMs: 60_000),
                let adopted = TakeoverMessage.parse(answer)?.adopted
            else { throw TakeoverError(message: "the new loomd did not confirm") }
            logger.notice(
                "takeover: loomd pid \(pid) adopted \(adopted) listener(s); no longer accepting; draining up to \(settings.drainTimeoutMs) ms"
            )
        } catch {
            logger.error("takeover by pid \(pid) failed (\(error)); this loomd carries on")
            resumeAfterFailedTakeover(path: path)
            return false
        }
        // The loops close their copies of the listeners (the sockets live on in the new
        // loomd); connections in flight stay here until they end.
        controller.shutDown()
        handedOver.store(true, ordering: .relaxed)
        SystemProcess.signalSelf(SystemProcess.sigusr1)
        return true
    }

    private func resumeAfterFailedTakeover(path: String) {
        do {
            admin = try makeAdminServer()
            try startTicker()
        } catch {
            logger.critical("cannot resume after a failed takeover: \(error)")
        }
        // Its path was given to the new loomd: listen again (the server thread, which
        // runs this, accepts on the new socket next).
        let old = upgradeSocket
        upgradeSocket = try? PacketSocket.listen(path: path)
        old?.close()
    }

    /// After a hand-over: the connections in flight finish (up to the drain timeout),
    /// then the loops stop. Tables, listeners and the lock belong to the new loomd.
    func finishAfterHandOver() {
        drainConnections(after: " after the hand-over")
        stopping.store(true, ordering: .relaxed)
        traceHub?.stop()
        for loop in loops { loop.stop() }
        upgradeSocket?.close()
        lockFile?.close()
        if settings.lingerAfterHandOver {
            logger.notice("handed over to the new loomd; waiting for SIGTERM (--linger-after-handover)")
            while true {
                let signal = SystemProcess.waitForSignal()
                if signal == SystemProcess.sigterm || signal == SystemProcess.sigint { break }
            }
        }
        logger.notice("handed over to the new loomd; exiting")
    }

    /// SIGUSR2 (as nginx's binary upgrade): starts the program at this loomd's own path
    /// (argv[0], which now names the newly installed binary) with the same arguments
    /// plus `--takeover`. The child is in this service's cgroup, so systemd
    /// (`NotifyAccess=all`) follows its `MAINPID` once it is READY.
    func spawnSuccessor() {
        var arguments = CommandLine.arguments
        guard let program = arguments.first else { return }
        let path = program.contains("/") ? program : (Self.lookUp(program) ?? program)
        if !arguments.contains("--takeover") { arguments.append("--takeover") }
        do {
            let pid = try SystemProcess.spawn(path: path, arguments: arguments)
            logger.notice("SIGUSR2: started \(path) (pid \(pid)) to take over from this loomd")
        } catch {
            logger.error("SIGUSR2: cannot start \(path): \(error); this loomd carries on")
        }
    }

    private static func lookUp(_ name: String) -> String? {
        let paths = (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin").split(
            separator: ":"
        )
        return paths.map { "\($0)/\(name)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }
}
