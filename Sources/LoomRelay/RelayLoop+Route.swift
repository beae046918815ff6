// Unsafe pointers: the peek reads into the loop's scratch buffer, valid for the loop's
// life and used by one step at a time.
// Routing a connection: peek at its first bytes if a route needs them, choose the route
// and endpoint, connect, and on a failed connect try another endpoint. The client's
// bytes stay unread in its socket until the upstream is connected, so a retry is
// invisible to the client.
import Logging
import LoomMesh
import LoomSystem

extension RelayLoop {
    /// The client is readable while the connection peeks: look at what it sent.
    func peekAndRoute(_ conn: Connection) {
        let limit = FlowState.copyChunk
        let result: Int?
        do {
            result = try conn.client.peek(into: scratch, count: limit).value
        } catch {
            close(conn, reason: resetReason(side: .client, errno: error.errno, call: "recv"))
            return
        }
        guard let n = result else { return }  // spurious wake-up: wait for the next edge
        let outcome =
            n == 0 ? .opaque : Sniffer.sniff(UnsafeRawBufferPointer(start: scratch, count: n), limit: limit)
        switch outcome {
        case .needMore:
            return  // more bytes raise a new edge; the sweep ends the wait at the timeout
        case .malformed(let why):
            let refuse = conn.runtime?.snapshot.services[conn.ref.service].policy.malformed == .refuse
            if logBudget.allow(now: now) {
                logger.info(
                    "\(conn.clientAddress) -> \(conn.destination): first bytes are malformed (\(why)); \(refuse ? "refusing" : "routing without them")"
                )
            }
            if refuse {
                metrics.decided(.malformed)
                close(conn, reason: .malformedRequest)
            } else {
                route(conn, outcome: .opaque)
            }
        default:
            route(conn, outcome: outcome)
        }
    }

    /// Chooses the route and the destination service, applies its circuit breaker, and
    /// connects to one of its endpoints.
    func route(_ conn: Connection, outcome: SniffOutcome?) {
        if case .peeking = conn.state.phase { peeking -= 1 }
        conn.state.startConnecting(now: now)
        guard let runtime = conn.runtime else { return }
        // The loop may have moved to a newer snapshot while this connection peeked; it
        // stays with the one it started with.
        let selection = runtime.snapshot.selectRoute(conn.ref, outcome)
        let target: (service: Int, port: Int, route: Int?)
        if runtime === routing.runtime {
            target = routing.target(conn.ref, selection)
        } else {
            var old = LoopRouting(runtime: runtime, seed: UInt64(now))
            target = old.target(conn.ref, selection)
        }
        conn.service = target.service
        conn.servicePort = target.port
        conn.route = target.route ?? -1
        let service = runtime.snapshot.services[target.service]
        let counters = runtime.counters[target.service]
        if let max = service.policy.maxConnections, counters.active.load(ordering: .relaxed) >= max {
            counters.rejected.add(1, ordering: .relaxed)
            metrics.decided(.circuitOpen)
            close(conn, reason: .circuitOpen)
            return
        }
        counters.active.add(1, ordering: .relaxed)
        counters.total.add(1, ordering: .relaxed)
        conn.countedInService = true
        metrics.decided(.service)
        conn.connectTimeoutMs = service.policy.connectTimeoutMs
        conn.retriesLeft = service.policy.retries
        connectToEndpoint(conn)
    }

    /// Picks an endpoint not tried yet and connects to it. After a reload the loop's
    /// balancers belong to the new snapshot, so a connection still routed by the old one
    /// (it peeked across the reload) takes that snapshot's first untried endpoint.
    private func connectToEndpoint(_ conn: Connection) {
        guard let runtime = conn.runtime else { return }
        let picked: Int?
        if runtime === routing.runtime {
            let hash = Balancer.clientHash(conn.clientAddress.address)
            picked = routing.pickEndpoint(service: conn.service, clientHash: hash, tried: conn.tried, now: now)
        } else {
            picked = runtime.snapshot.services[conn.service].endpoints.indices.first { !conn.tried.contains($0) }
        }
        guard let endpoint = picked else {
            metrics.decided(.noEndpoint)
            close(conn, reason: .noEndpoint)
            return
        }
        conn.endpoint = endpoint
        conn.tried.insert(endpoint)
        let address = runtime.snapshot.address(service: conn.service, port: conn.servicePort, endpoint: endpoint)
        if let peer = tunnelPeer(conn, runtime, endpoint: endpoint) {
            // A meshed pod: through its node's mTLS tunnel port, not its app port.
            conn.tunnelTarget = address
            conn.expectedPeer = peer
            if conn.tried.count == 1 { metrics.decided(.tunnel) }
            connectUpstream(conn, to: UpstreamAddress(address.with(port: config.tunnelPort)))
        } else {
            conn.tunnelTarget = nil
            conn.expectedPeer = nil
            connectUpstream(conn, to: UpstreamAddress(address))
        }
    }

    /// Creates the upstream socket in the pod's netns (the pod's own source address),
    /// marked so the pod's rules let it pass, and starts a non-blocking connect.
    func connectUpstream(_ conn: Connection, to target: UpstreamAddress) {
        conn.upstreamTarget = target
        conn.connectStartedMicros = SystemProcess.nowMicroseconds()
        do {
            if let pod = conn.pod, currentPod != pod.id {
                // The thread stays in this pod's netns until another pod needs it.
                try pod.netns.enter()
                currentPod = pod.id
            }
            let upstream = try FileDescriptor.tcpSocket(family: target.address.family)
            conn.upstream = upstream
            try upstream.setMark(config.socketMark)
            try upstream.setNoDelay()
            let immediate = try upstream.connect(to: target.address)
            let interest: EpollEvents = [.readable, .writable, .readHangup, .edgeTriggered]
            try epoll.add(upstream, interest: interest, token: conn.token(.upstream))
            if case .processed = immediate { upstreamConnected(conn) }
        } catch {
            connectFailed(conn, reason: connectFailure(error))
        }
    }

    /// The upstream connect completed: relay, or first the tunnel's handshake.
    func upstreamConnected(_ conn: Connection) {
        conn.connectMicros = SystemProcess.nowMicroseconds() - conn.connectStartedMicros
        metrics.connectLatency.observe(micros: conn.connectMicros)
        if conn.tunnelTarget != nil && conn.tls == nil {
            startHandshake(conn, side: .upstream)
            return
        }
        relayStarted(conn)
    }

    /// Both sides are up (and, for a tunnel, handshaken): bytes may flow.
    func relayStarted(_ conn: Connection) {
        conn.state.connected(now: now)
        if let pod = conn.pod, pod.traced.load(ordering: .relaxed) != 0 {
            events.push(event(conn, .opened, pod: pod))
        }
        if conn.endpoint >= 0, conn.runtime === routing.runtime {
            routing.opened(service: conn.service, endpoint: conn.endpoint)
        }
    }

    /// A connect failed (refused, unreachable, timed out): count it for outlier
    /// detection and try another endpoint while retries last; otherwise close.
    func connectFailed(_ conn: Connection, reason: CloseReason) {
        guard conn.endpoint >= 0, let runtime = conn.runtime else {
            close(conn, reason: reason)
            return
        }
        let counters = runtime.counters[conn.service]
        counters.connectFailures.add(1, ordering: .relaxed)
        if runtime === routing.runtime, routing.failed(service: conn.service, endpoint: conn.endpoint, now: now) {
            counters.ejections.add(1, ordering: .relaxed)
            if logBudget.allow(now: now) {
                logger.notice(
                    "endpoint \(conn.upstreamTarget) of \(runtime.snapshot.services[conn.service].qualifiedName) ejected after consecutive connect failures (\(reason))"
                )
            }
        }
        guard conn.retriesLeft > 0, conn.tried.count < TriedEndpoints.capacity else {
            close(conn, reason: reason)
            return
        }
        conn.retriesLeft -= 1
        if conn.upstream.rawValue >= 0 {
            conn.upstream.setResetOnClose()
            conn.upstream.close()
            conn.upstream = FileDescriptor(rawValue: -1)
        }
        // New generation: events already queued for the old upstream socket are stale.
        // Re-arming the client reports its readiness again under the new token.
        conn.generation &+= 1
        let interest: EpollEvents = [.readable, .writable, .readHangup, .edgeTriggered]
        do {
            try epoll.modify(conn.client, interest: interest, token: conn.token(.client))
        } catch {
            close(conn, reason: reason)
            return
        }
        conn.state.startConnecting(now: now)
        connectToEndpoint(conn)
    }
}
