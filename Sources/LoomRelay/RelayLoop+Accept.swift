// Accepting: read the original destination, refuse loops, connect upstream with the mark.
import Logging
import LoomMesh
import LoomSystem

extension RelayLoop {
    /// Accepts up to a batch of connections from one listener (level-triggered: what is
    /// left wakes the loop again, after other work had its turn).
    func acceptBatch(listener number: Int) {
        guard number < listeners.count, listenersEnabled, let listener = listeners[number] else { return }
        for _ in 0..<64 {
            if slots.count - freeSlots.count >= maxConnections {
                updateAcceptState()
                return
            }
            do {
                switch try listener.fd.accept() {
                case .wouldBlock:
                    return
                case .processed(let (fd, peer)):
                    counters.accepted += 1
                    listener.pod.stats.accepted.add(1, ordering: .relaxed)
                    open(client: fd, peer: peer, listener: listener)
                }
            } catch {
                handleAcceptError(error)
                return
            }
        }
    }

    private func handleAcceptError(_ error: SystemError) {
        switch error.errno {
        case Errno.connectionAborted:
            return  // The client gave up while queued; nothing to do.
        case Errno.tooManyFiles, Errno.tooManyFilesSystem, Errno.noBuffers, Errno.noMemory:
            // Out of fds or memory: waiting is the only fix. Pause for a second instead of
            // spinning on a listener that stays readable.
            acceptPausedUntil = now + 1000
            updateAcceptState()
            if now - lastAcceptErrorLog >= 5000 {
                lastAcceptErrorLog = now
                logger.warning(
                    "accept failed: \(error); pausing accept for 1 s",
                    metadata: ["open_connections": "\(slots.count - freeSlots.count)", "open_pipes": "\(pool.open)"]
                )
            }
        default:
            logger.warning("accept failed: \(error)")
        }
    }

    /// Pauses or resumes the listeners to match the connection limit and any timed pause.
    func updateAcceptState() {
        let atLimit = slots.count - freeSlots.count >= maxConnections
        let shouldListen = !atLimit && now >= acceptPausedUntil
        if atLimit && !acceptPausedForLimit {
            acceptPausedForLimit = true
            logger.warning(
                "connection limit reached (\(maxConnections) on this loop); pausing accept until a connection closes"
            )
        } else if !atLimit && acceptPausedForLimit {
            acceptPausedForLimit = false
            logger.info("below the connection limit again; accepting")
        }
        guard shouldListen != listenersEnabled else { return }
        listenersEnabled = shouldListen
        for (number, listener) in listeners.enumerated() {
            guard let listener else { continue }
            try? epoll.modify(listener.fd, interest: shouldListen ? [.readable] : [], token: Token.listener(number))
        }
    }

    /// Sets up a new connection: original destination, loop check, upstream connect.
    private func open(client fd: FileDescriptor, peer: SocketAddress?, listener: PodListener) {
        let clientAddress = ClientAddress(peer ?? .v4(address: 0, port: 0))
        let pod = listener.pod
        if listener.kind == .tunnel {
            openTunnel(client: fd, peer: clientAddress, listener: listener)
            return
        }
        let destination: OriginalDestination
        do {
            destination = try fd.originalDestination(family: listener.family)
        } catch {
            refuse(
                fd,
                listener,
                clientAddress.address,
                fd.localAddress() ?? clientAddress.address,
                .refusedNoDestination,
                "connection from \(clientAddress) has no original destination (\(error)); was it redirected by nf_tables? refusing"
            )
            return
        }
        // A connection aimed at Loom's own listener would relay to itself forever. Only
        // the listener's port can be that, so other ports skip the getsockname call.
        let target = destination.address
        if target.port == listener.port
            && (target.isLoopback || target.isUnspecified || target == fd.localAddress())
        {
            refuse(
                fd,
                listener,
                clientAddress.address,
                target,
                .refusedLoop,
                "connection from \(clientAddress) to \(destination) targets Loom's own listener; refusing (no loops)"
            )
            return
        }

        guard let conn = admit(fd, clientAddress, destination, listener) else { return }
        refreshRouting()
        if listener.kind == .inbound, let reason = inboundRefusal(pod, destination.address) {
            metrics.decided(.deniedPolicy)
            close(conn, reason: reason)
            return
        }
        guard let ref = routing.snapshot.lookup(destination.address) else {
            // Not a service: pass through to the original destination, or refuse.
            if routing.snapshot.unmatchedPolicy(namespace: pod.namespace) == .refuse {
                metrics.decided(.refusedUnmatched)
                close(conn, reason: .unmatchedRefused)
            } else {
                metrics.decided(.passthrough)
                connectUpstream(conn, to: UpstreamAddress(destination.address))
            }
            return
        }
        conn.runtime = routing.runtime
        conn.ref = ref
        if routing.snapshot.needsPeek(ref) {
            conn.state.startPeeking(now: now)
            peeking += 1
            // The client's readable edge (now or later) triggers the peek.
            return
        }
        route(conn, outcome: nil)
    }

    /// Picks up the newest mesh snapshot if one was published since the last connection.
    func refreshRouting() {
        if mesh.version != routing.runtime.version {
            routing = LoopRouting(runtime: mesh.runtime, seed: UInt64(id + 1) &* 0x9E37_79B9_7F4A_7C15 &+ UInt64(now))
        }
    }

    /// Plaintext inbound (15006): refused when the pod's namespace is STRICT, or when
    /// the authorization policy denies a source without identity.
    private func inboundRefusal(_ pod: PodContext, _ destination: SocketAddress) -> CloseReason? {
        let snapshot = routing.snapshot
        if !snapshot.mtlsMode(namespace: pod.namespace).acceptsPlaintext { return .plaintextRefused }
        let decision = snapshot.authorize(
            sourceIdentity: nil,
            sourceNamespace: nil,
            destinationNamespace: pod.namespace,
            destination: destination
        )
        return decision.allowed ? nil : .denied(decision.reason)
    }

    /// A connection on the tunnel port (15008) from another Loom node: the TLS handshake
    /// comes first; the tunnel header then says where it goes (RelayLoop+TLS.swift).
    private func openTunnel(client fd: FileDescriptor, peer: ClientAddress, listener: PodListener) {
        // Until the tunnel header names it, the destination is where the tunnel arrived.
        let local = OriginalDestination(fd.localAddress() ?? .v4(address: 0, port: 0))
        guard let conn = admit(fd, peer, local, listener) else { return }
        startHandshake(conn, side: .client)
    }

    /// Takes a slot for an accepted client socket and watches it; nil if watching failed
    /// (the connection is closed then).
    private func admit(
        _ fd: FileDescriptor,
        _ client: ClientAddress,
        _ destination: OriginalDestination,
        _ listener: PodListener
    ) -> Connection? {
        let conn = takeSlot()
        conn.pod = listener.pod
        listener.pod.stats.active.add(1, ordering: .relaxed)
        conn.client = fd
        conn.clientAddress = client
        conn.destination = destination
        conn.state = ConnectionState(now: now)
        conn.connectTimeoutMs = config.connectTimeoutMs
        conn.capture = listener.kind
        conn.openedAt = now
        conn.connectMicros = -1
        conn.route = -1
        do {
            try fd.setNoDelay()
            let interest: EpollEvents = [.readable, .writable, .readHangup, .edgeTriggered]
            try epoll.add(fd, interest: interest, token: conn.token(.client))
        } catch {
            close(conn, reason: connectFailure(error))
            return nil
        }
        return conn
    }

    /// Maps a failed connect to a close reason, logging what to check.
    func connectFailure(_ error: SystemError) -> CloseReason {
        switch error.errno {
        case Errno.connectionRefused:
            return .upstreamRefused
        case Errno.hostUnreachable, Errno.networkUnreachable, Errno.timedOut:
            return .upstreamUnreachable(errno: error.errno)
        default:
            return .error(call: error.call.description, errno: error.errno)
        }
    }

    private func refuse(
        _ fd: FileDescriptor,
        _ listener: PodListener,
        _ client: SocketAddress,
        _ destination: SocketAddress,
        _ code: EndCode,
        _ message: @autoclosure () -> String
    ) {
        let pod = listener.pod
        counters.refused += 1
        pod.stats.refused.add(1, ordering: .relaxed)
        pod.stats.closed[code.rawValue].add()
        fd.setResetOnClose()
        fd.close()
        let text = message()
        if pod.traced.load(ordering: .relaxed) != 0 {
            var event = RelayEvent(
                kind: .closed,
                pod: pod,
                capture: listener.kind,
                client: client,
                destination: destination,
                openedAtMs: now,
                atMs: now
            )
            event.end = code
            event.endDetail = text
            events.push(event)
        }
        logger.info("\(text)")
    }

    private func takeSlot() -> Connection {
        let conn: Connection
        if let index = freeSlots.popLast() {
            conn = slots[index]
        } else {
            conn = Connection(index: slots.count)
            slots.append(conn)
        }
        conn.inUse = true
        return conn
    }
}
