// Unsafe pointers: the copy step reads into and sends from the loop's scratch buffer,
// which is valid for the loop's life and used by one step at a time.
// Moving bytes: readiness events, the splice pump for each direction, pipes lent and
// returned, and closing a connection with a FIN or a reset as its story demands.
import Logging
import LoomSystem

/// A direction of a connection.
enum Direction: UInt64 {
    /// Client -> upstream.
    case outbound = 0
    /// Upstream -> client.
    case inbound = 1
}

extension RelayLoop {
    /// Applies one epoll event to its connection and drives it.
    func handle(token: UInt64, events: EpollEvents) {
        let (index, generation, side) = Token.decode(token)
        guard index < slots.count else { return }
        let conn = slots[index]
        // Stale: the connection closed (and maybe the slot was reused) earlier in this batch.
        guard conn.inUse, conn.generation == generation else { return }

        let readable = !events.isDisjoint(with: [.readable, .readHangup, .hangup, .error])
        let writable = !events.isDisjoint(with: [.writable, .hangup, .error])
        if events.contains(.error) {
            let fd = side == .client ? conn.client : conn.upstream
            let err = fd.pendingError()
            if err != 0 {
                if side == .upstream, case .connecting = conn.state.phase {
                    connectFailed(conn, reason: connectFailure(SystemError("connect", errno: err)))
                } else {
                    close(conn, reason: resetReason(side: side, errno: err, call: "socket"))
                }
                return
            }
        }
        let hungUp = !events.isDisjoint(with: [.readHangup, .hangup])
        switch side {
        case .client:
            if readable { conn.state.outbound.sourceReadable = true }
            if hungUp { conn.state.outbound.sourceHungUp = true }
            if writable { conn.state.inbound.sinkWritable = true }
            if case .peeking = conn.state.phase {
                if readable { peekAndRoute(conn) }
                return
            }
            if case .handshaking = conn.state.phase {
                if conn.tlsSide == .client { advanceHandshake(conn) }
                return
            }
        case .upstream:
            if readable { conn.state.inbound.sourceReadable = true }
            if hungUp { conn.state.inbound.sourceHungUp = true }
            if writable { conn.state.outbound.sinkWritable = true }
            if case .connecting = conn.state.phase {
                guard writable else { return }
                // A failed connect reports EPOLLERR (handled above) or EPOLLHUP; plain
                // EPOLLOUT means it succeeded, so SO_ERROR is read only for a hang-up.
                if events.contains(.hangup) {
                    let err = conn.upstream.pendingError()
                    connectFailed(
                        conn,
                        reason: connectFailure(SystemError("connect", errno: err != 0 ? err : Errno.connectionRefused))
                    )
                    return
                }
                upstreamConnected(conn)
            }
            if case .handshaking = conn.state.phase {
                if conn.tlsSide == .upstream { advanceHandshake(conn) }
                return
            }
        }
        drive(conn)
    }

    /// Pumps both directions within the fairness budget; closes the connection when done.
    func drive(_ conn: Connection) {
        guard case .relaying = conn.state.phase else { return }
        if conn.tls != nil {
            driveCopy(conn)
            return
        }
        var budget = Self.fairnessBudget
        if let reason = pump(conn, .outbound, budget: &budget) ?? pump(conn, .inbound, budget: &budget) {
            close(conn, reason: reason)
            return
        }
        if conn.state.isFinished {
            close(conn, reason: .finished)
        } else if budget <= 0 && !conn.scheduled {
            conn.scheduled = true
            ready.append(conn.identity)
        }
    }

    /// Drives connections that ran out of budget last time.
    func runReady() {
        guard !ready.isEmpty else { return }
        let batch = ready.count
        for i in 0..<batch {
            let (index, generation, _) = Token.decode(ready[i])
            let conn = slots[index]
            guard conn.inUse, conn.generation == generation else { continue }
            conn.scheduled = false
            drive(conn)
        }
        ready.removeFirst(batch)
    }

    /// Runs one direction's state machine until it waits, ends, or the budget runs out.
    /// Returns why the connection must close, if it must. The direction's state and pipe
    /// are worked on as local copies and written back on every exit.
    private func pump(_ conn: Connection, _ direction: Direction, budget: inout Int) -> CloseReason? {
        let outbound = direction == .outbound
        let source = outbound ? conn.client : conn.upstream
        let sink = outbound ? conn.upstream : conn.client
        let sourceSide: Side = outbound ? .client : .upstream
        let sinkSide: Side = outbound ? .upstream : .client
        var flow = outbound ? conn.state.outbound : conn.state.inbound
        var pipe = outbound ? conn.outboundPipe : conn.inboundPipe
        defer {
            if outbound {
                conn.state.outbound = flow
                conn.outboundPipe = pipe
            } else {
                conn.state.inbound = flow
                conn.inboundPipe = pipe
            }
        }
        while budget > 0 {
            switch flow.nextStep() {
            case .wait, .done:
                return nil
            case .spliceOut(let count):
                budget -= 1
                let result: Int?
                do {
                    // Safe to force: a flow with buffered bytes holds its pipe.
                    // nil is EAGAIN: the sink's send buffer is full; wait for EPOLLOUT.
                    result = try splice(from: pipe!.read, to: sink, count: count).value
                } catch {
                    // EPIPE / ECONNRESET: the sink's peer is gone; anything else is
                    // unexpected. Either way the other side must see a reset.
                    return resetReason(side: sinkSide, errno: error.errno, call: "splice")
                }
                if let n = result { relayed(n, outbound: outbound, conn) }
                flow.splicedOut(result)
            case .spliceIn(let count):
                budget -= 1
                let result: Int?
                do {
                    // n > 0: bytes now in the pipe; 0: the source sent FIN; nil (EAGAIN
                    // into an empty pipe): the source has nothing now.
                    result = try splice(from: source, to: pipe!.write, count: count).value
                } catch {
                    // ECONNRESET: the source peer reset; pass the reset on.
                    return resetReason(side: sourceSide, errno: error.errno, call: "splice")
                }
                if let n = result, n > 0 { conn.state.touched(now: now) }
                flow.splicedIn(result)
            case .copy(let count):
                budget -= 1
                let read: Int?
                var written = 0
                do {
                    read = try source.receive(into: scratch, count: count).value
                } catch {
                    return resetReason(side: sourceSide, errno: error.errno, call: "recv")
                }
                if let n = read, n > 0 {
                    do {
                        if flow.sinkWritable { written = try sink.send(from: scratch, count: n).value ?? 0 }
                    } catch {
                        return resetReason(side: sinkSide, errno: error.errno, call: "send")
                    }
                    if written < n {
                        // Park the rest in the empty pipe (at least 64 KiB, so it all fits);
                        // it leaves by splice when the sink is writable again.
                        let rest = n - written
                        do {
                            guard try pipe!.write.write(from: scratch + written, count: rest).value == rest else {
                                return .error(call: "write(pipe)", errno: Errno.noBuffers)
                            }
                        } catch {
                            return .error(call: "write(pipe)", errno: error.errno)
                        }
                    }
                    relayed(written, outbound: outbound, conn)
                }
                flow.copied(read: read, written: written)
            case .acquirePipe:
                do {
                    pipe = try pool.acquire(bulk: flow.bulk)
                } catch {
                    // Out of fds for a pipe: wait like a pool at its budget does.
                    logger.warning(
                        "cannot create a pipe: \(error); connection \(conn.clientAddress) -> \(conn.destination) waits"
                    )
                }
                guard let pipe else {
                    flow.waitingForPipe = true
                    pipeWaiters.append(conn.identity | direction.rawValue << 31)
                    counters.pipeWaits += 1
                    return nil
                }
                flow.pipeAcquired(capacity: pipe.capacity)
            case .growPipe:
                pipe = pool.grow(pipe!)
                flow.pipeGrown(capacity: pipe!.capacity)
            case .releasePipe:
                let empty = pipe!
                pipe = nil
                flow.pipeReleased()
                returnPipe(empty, empty: true)
            case .shutdownSink:
                do {
                    try sink.shutdownWrite()
                } catch  where error.errno == Errno.notConnected {
                    // The sink's peer already closed; a FIN has nowhere to go. Not an error.
                } catch {
                    return resetReason(side: sinkSide, errno: error.errno, call: "shutdown")
                }
                flow.sinkShutDown()
            }
        }
        return nil
    }

    /// Counts `n` bytes that reached the sink (spliced, copied, or decrypted and sent).
    @inline(__always)
    func relayed(_ n: Int, outbound: Bool, _ conn: Connection) {
        conn.state.touched(now: now)
        if outbound { counters.bytesOutbound &+= UInt64(n) } else { counters.bytesInbound &+= UInt64(n) }
        // Shared counters for metrics and `loomctl top`: one relaxed add each.
        if let pod = conn.pod { (outbound ? pod.stats.bytesOut : pod.stats.bytesIn).add(n) }
        if conn.countedInService, let runtime = conn.runtime {
            let counters = runtime.counters[conn.service]
            if outbound {
                counters.bytesOut.add(UInt64(n), ordering: .relaxed)
            } else {
                counters.bytesIn.add(UInt64(n), ordering: .relaxed)
            }
        }
    }

    private func give(_ pipe: Pipe, to conn: Connection, _ direction: Direction) {
        if direction == .outbound {
            conn.outboundPipe = pipe
            conn.state.outbound.pipeAcquired(capacity: pipe.capacity)
        } else {
            conn.inboundPipe = pipe
            conn.state.inbound.pipeAcquired(capacity: pipe.capacity)
        }
    }

    /// Returns a pipe to the pool, or hands it straight to a waiting direction.
    private func returnPipe(_ pipe: Pipe, empty: Bool) {
        pool.release(pipe, empty: empty)
        if pipeWaitersHead < pipeWaiters.count { servePipeWaiters() }
    }

    /// Gives free pipes to waiting directions, first come first served.
    func servePipeWaiters() {
        while pipeWaitersHead < pipeWaiters.count {
            let entry = pipeWaiters[pipeWaitersHead]
            let (index, generation, _) = Token.decode(entry & ~(1 << 31))
            let direction: Direction = entry & (1 << 31) != 0 ? .inbound : .outbound
            let conn = slots[index]
            let waiting =
                direction == .outbound ? conn.state.outbound.waitingForPipe : conn.state.inbound.waitingForPipe
            guard conn.inUse, conn.generation == generation, waiting else {
                pipeWaitersHead += 1
                continue
            }
            guard let pipe = try? pool.acquire() else { break }
            pipeWaitersHead += 1
            give(pipe, to: conn, direction)
            if !conn.scheduled {
                conn.scheduled = true
                ready.append(conn.identity)
            }
        }
        if pipeWaitersHead == pipeWaiters.count {
            pipeWaiters.removeAll(keepingCapacity: true)
            pipeWaitersHead = 0
        } else if pipeWaitersHead > 1024 && pipeWaitersHead * 2 > pipeWaiters.count {
            pipeWaiters.removeFirst(pipeWaitersHead)
            pipeWaitersHead = 0
        }
    }

    /// The close reason for an error on `side`'s socket.
    func resetReason(side: Side, errno: CInt, call: String) -> CloseReason {
        if errno == Errno.connectionReset || errno == Errno.brokenPipe {
            return side == .client ? .clientReset : .upstreamReset
        }
        return .error(call: "\(call) (\(side == .client ? "client" : "upstream") side)", errno: errno)
    }

    /// Closes both sockets and frees the slot. A reset reason, or bytes left in a pipe,
    /// make both peers see RST: a truncated stream must never look complete.
    func close(_ conn: Connection, reason: CloseReason) {
        let reset =
            reason.resets || conn.state.hasBufferedBytes || conn.tlsOut.pending > 0 || conn.tlsIn.pending > 0
        if reset {
            conn.client.setResetOnClose()
            if conn.upstream.rawValue >= 0 { conn.upstream.setResetOnClose() }
            counters.failed += 1
            conn.pod?.stats.failed.add(1, ordering: .relaxed)
        } else {
            counters.finished += 1
        }
        if let pod = conn.pod {
            pod.stats.active.subtract(1, ordering: .relaxed)
            pod.stats.closed[reason.code.rawValue].add()
            if pod.traced.load(ordering: .relaxed) != 0 {
                var closed = event(conn, .closed, pod: pod)
                closed.end = reason.code
                closed.endDetail =
                    reset && !reason.resets ? "\(reason); bytes left unsent, both sides reset" : "\(reason)"
                events.push(closed)
            }
        }
        if reset, conn.countedInService, let runtime = conn.runtime {
            runtime.counters[conn.service].failed.add(1, ordering: .relaxed)
        }
        conn.pod = nil
        if conn.tls != nil || conn.tlsOut.buffer != nil { releaseTLS(conn) }
        if case .peeking = conn.state.phase { peeking -= 1 }
        if let runtime = conn.runtime {
            if conn.countedInService { runtime.counters[conn.service].active.subtract(1, ordering: .relaxed) }
            if case .relaying = conn.state.phase, conn.endpoint >= 0, runtime === routing.runtime {
                routing.closed(service: conn.service, endpoint: conn.endpoint)
            }
        }
        conn.runtime = nil
        conn.countedInService = false
        conn.service = -1
        conn.servicePort = -1
        conn.endpoint = -1
        conn.route = -1
        conn.tried.removeAll()
        conn.client.close()
        if conn.upstream.rawValue >= 0 { conn.upstream.close() }
        conn.client = FileDescriptor(rawValue: -1)
        conn.upstream = FileDescriptor(rawValue: -1)
        conn.inUse = false
        conn.scheduled = false
        conn.generation &+= 1
        freeSlots.append(conn.index)
        // Pipes go back after the slot is free, so a waiter may be this very slot's
        // successor; a pipe with bytes left is closed, never reused.
        if let pipe = conn.outboundPipe {
            conn.outboundPipe = nil
            returnPipe(pipe, empty: conn.state.outbound.buffered == 0)
        }
        if let pipe = conn.inboundPipe {
            conn.inboundPipe = nil
            returnPipe(pipe, empty: conn.state.inbound.buffered == 0)
        }
        if reason == .finished || reason == .shutdown {
            logger.debug("\(conn.clientAddress) -> \(conn.destination) \(reason)")
        } else if reason == .upstreamRefused {
            if logBudget.allow(now: now) {
                logger.info(
                    "upstream \(conn.destination) refused the connection from \(conn.clientAddress); is the service listening? client reset"
                )
            }
        } else if reason != .connectTimeout {
            if logBudget.allow(now: now) {
                logger.info(
                    "\(conn.clientAddress) -> \(conn.destination) ended: \(reason)\(reset ? "; both sides reset" : "")"
                )
            }
        }
        if acceptPausedForLimit { updateAcceptState() }
    }
}

extension RelayLoop {
    /// A trace event describing `conn` now.
    func event(_ conn: Connection, _ kind: RelayEvent.Kind, pod: PodContext) -> RelayEvent {
        var event = RelayEvent(
            kind: kind,
            pod: pod,
            capture: conn.capture,
            client: conn.clientAddress.address,
            destination: conn.destination.address,
            openedAtMs: conn.openedAt,
            atMs: now
        )
        if conn.upstream.rawValue >= 0 || conn.connectMicros >= 0 {
            // Through a tunnel, the endpoint is the pod behind the far node's tunnel port.
            event.upstream = conn.tunnelTarget ?? conn.upstreamTarget.address
        }
        event.runtime = conn.runtime
        event.serviceRef = conn.runtime == nil ? -1 : conn.ref.service
        event.portRef = conn.runtime == nil ? -1 : conn.ref.port
        event.route = conn.route
        event.service = conn.service
        event.endpoint = conn.endpoint
        event.bytesOut = conn.tls == nil ? conn.state.outbound.bytesRelayed : conn.tlsOut.bytes
        event.bytesIn = conn.tls == nil ? conn.state.inbound.bytesRelayed : conn.tlsIn.bytes
        event.connectMicros = conn.connectMicros
        event.tls = conn.tlsSummary
        return event
    }
}
