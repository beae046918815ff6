// Unsafe pointers: copy buffers from the loop's pool, each owned by one direction of one
// connection between a read and the write that empties it.
// The node-to-node mTLS tunnel on the relay loops.
//
// Outbound (the client's node): routing picked an endpoint that carries a workload
// identity, the service's `mtls` is on and the pod has a certificate: the upstream socket
// connects to the endpoint pod's tunnel port (15008), the loop drives a non-blocking TLS
// 1.3 handshake, checks that the server's SPIFFE ID is the endpoint's, and sends the
// tunnel header (PROXY v2: the client's address and the endpoint address) as the first
// bytes inside TLS. Inbound (the server's node): a connection accepted on 15008 is
// handshaken (the client's chain verified against the mesh CA), its tunnel header read,
// the destination checked to be this pod, the authorization policy applied, and the
// application connected to from inside the pod.
//
// Encrypted bytes cannot be spliced without kernel TLS, so an mTLS connection copies
// through one buffer per direction, taken from the loop's pool only while bytes are in
// flight. Half-close is TLS close_notify followed by the TCP FIN; a TLS stream that ends
// without close_notify is a truncation and becomes a reset on the plaintext side.
import Logging
import LoomMesh
import LoomSystem
import LoomTLS

/// The outcome of one read or write on either kind of socket.
enum CopyResult {
    case bytes(Int)
    /// Would block: the readiness flag it needs has been cleared.
    case blocked
    /// End of stream (FIN, or TLS close_notify).
    case ended
    case failed(CloseReason)
}

extension RelayLoop {
    /// Bytes per copy buffer: four TLS records, so one plaintext read feeds several
    /// records and one write call.
    static let copyBufferSize = 65536
    /// Buffers kept for reuse; more are freed when returned.
    static let copyBufferCache = 256
    /// Session tickets kept per loop (pod x endpoint); beyond it the cache starts afresh.
    static let sessionCache = 4096

    func takeCopyBuffer() -> UnsafeMutableRawPointer {
        counters.copyBuffers += 1
        return copyBuffers.popLast() ?? UnsafeMutableRawPointer.allocate(byteCount: Self.copyBufferSize, alignment: 64)
    }

    func returnCopyBuffer(_ buffer: UnsafeMutableRawPointer) {
        counters.copyBuffers -= 1
        if copyBuffers.count < Self.copyBufferCache {
            copyBuffers.append(buffer)
        } else {
            buffer.deallocate()
        }
    }

    // MARK: - Outbound: choosing the tunnel

    /// The identity the endpoint's certificate must carry if this connection goes through
    /// the tunnel; nil for plaintext (no identity, `mtls: false`, or no certificate).
    func tunnelPeer(_ conn: Connection, _ runtime: MeshRuntime, endpoint: Int) -> String? {
        let service = runtime.snapshot.services[conn.service]
        let target = service.endpoints[endpoint]
        // The identity first: a plaintext endpoint costs no lock.
        guard let identity = target.identity, let context = conn.pod?.tls.context,
            service.usesMTLS(to: target, nodeHasCA: true)
        else { return nil }
        return SpiffeID.resolve(identity, trustDomain: context.certificate.identity.trustDomain)?.uri
    }

    // MARK: - Handshake

    /// Starts the TLS handshake on `side`'s socket (`.upstream`: client role, after the
    /// tunnel connect; `.client`: server role, after accept on the tunnel port).
    func startHandshake(_ conn: Connection, side: Side) {
        guard let context = conn.pod?.tls.context else {
            close(conn, reason: .noCertificate)
            return
        }
        let fd = side == .upstream ? conn.upstream : conn.client
        do {
            if side == .upstream {
                // Resume with the last ticket from this endpoint, if one is kept: no
                // signatures or chain checks, only the key exchange.
                var session: TLSSession?
                if let pod = conn.pod, let target = conn.tunnelTarget,
                    let kept = sessions[SessionKey(pod: pod.id, endpoint: target)], kept.context === context
                {
                    session = kept.session
                }
                conn.tls = try TLSStream.client(context: context, fd: fd.rawValue, session: session)
            } else {
                conn.tls = try TLSStream.server(context: context, fd: fd.rawValue)
            }
        } catch {
            close(conn, reason: .handshakeFailed("\(error)"))
            return
        }
        conn.tlsSide = side
        conn.tlsSummary = TLSSummary(
            role: side == .upstream ? "client" : "server",
            localIdentity: context.certificate.identity.uri,
            localSerial: context.certificate.serial
        )
        conn.handshakeStartedMicros = SystemProcess.nowMicroseconds()
        conn.state.startHandshake(now: now)
        advanceHandshake(conn)
    }

    /// Drives the handshake (or, inbound, the tunnel header) as far as the socket allows.
    func advanceHandshake(_ conn: Connection) {
        guard let tls = conn.tls else { return }
        if conn.awaitingHeader {
            readTunnelHeader(conn, tls)
            return
        }
        switch tls.handshake() {
        case .done:
            break
        case .wantRead, .wantWrite:
            return
        case .closed:
            close(conn, reason: .handshakeFailed("the peer closed the connection during the handshake"))
            return
        case .failed(let failure):
            close(conn, reason: .handshakeFailed(failure.reason))
            return
        }
        metrics.handshakeLatency.observe(micros: SystemProcess.nowMicroseconds() - conn.handshakeStartedMicros)
        let kernel = tls.kernelTLS
        conn.tlsSummary?.peerIdentity = tls.peerURI
        conn.tlsSummary?.version = tls.version
        conn.tlsSummary?.cipher = tls.cipher
        conn.tlsSummary?.dataPath = kernel.send && kernel.receive ? "kernel" : "user"
        conn.tlsSummary?.resumed = tls.sessionReused
        if tls.sessionReused { metrics.handshakesResumed.add() }
        // The handshake may have consumed the readiness edges: look again.
        setReadable(conn, conn.tlsSide, true)
        setWritable(conn, conn.tlsSide, true)
        if conn.tlsSide == .upstream {
            metrics.handshakesClient.add()
            guard let presented = tls.peerURI, presented == conn.expectedPeer, let target = conn.tunnelTarget else {
                close(
                    conn,
                    reason: .identityMismatch(
                        expected: conn.expectedPeer ?? "?",
                        presented: tls.peerURI ?? "a certificate without a SPIFFE ID"
                    )
                )
                return
            }
            if let pod = conn.pod { conn.sessionKey = SessionKey(pod: pod.id, endpoint: target) }
            // The tunnel header leads the client's bytes.
            let header = TunnelHeader(
                source: TunnelAddress(conn.clientAddress.address),
                destination: TunnelAddress(target)
            )
            let buffer = takeCopyBuffer()
            conn.tlsOut.buffer = buffer
            conn.tlsOut.start = 0
            conn.tlsOut.end = header.encode(into: buffer)
            conn.tlsOut.uncounted = conn.tlsOut.end
            conn.tlsSummary?.tunnel = conn.upstreamTarget.address.description
            relayStarted(conn)
            drive(conn)
        } else {
            metrics.handshakesServer.add()
            guard tls.peerURI != nil else {
                close(conn, reason: .handshakeFailed("the client certificate carries no SPIFFE ID"))
                return
            }
            conn.awaitingHeader = true
            readTunnelHeader(conn, tls)
        }
    }

    /// Inbound: reads the tunnel header; bytes after it stay in the buffer for the app.
    /// The buffer lives in `conn.tlsOut` throughout, so a close (which returns it to the
    /// pool) always sees it.
    private func readTunnelHeader(_ conn: Connection, _ tls: TLSStream) {
        if conn.tlsOut.buffer == nil { conn.tlsOut.buffer = takeCopyBuffer() }
        guard let buffer = conn.tlsOut.buffer else { return }
        while true {
            switch TunnelHeader.parse(UnsafeRawBufferPointer(start: buffer, count: conn.tlsOut.end)) {
            case .header(let header, let length):
                conn.tlsOut.start = length
                tunnelOpened(conn, header)
                return
            case .invalid(let why):
                close(conn, reason: .badTunnelHeader(why))
                return
            case .needMore:
                break
            }
            switch tls.read(into: buffer + conn.tlsOut.end, count: Self.copyBufferSize - conn.tlsOut.end) {
            case .done(let n):
                conn.tlsOut.end += n
            case .wantRead, .wantWrite:
                return
            case .closed:
                close(conn, reason: .badTunnelHeader("the peer closed before sending it"))
                return
            case .failed(let failure):
                close(conn, reason: .handshakeFailed(failure.reason))
                return
            }
        }
    }

    /// Inbound: the header names the destination. It must be this pod (the address the
    /// tunnel arrived on), and the policy must allow the client's identity.
    private func tunnelOpened(_ conn: Connection, _ header: TunnelHeader) {
        conn.awaitingHeader = false
        let destination = header.destination.socketAddress
        conn.clientAddress = header.client
        conn.destination = OriginalDestination(destination)
        guard let local = conn.client.localAddress(), local.with(port: 0) == destination.with(port: 0) else {
            close(
                conn,
                reason: .badTunnelHeader(
                    "destination \(destination) is not this pod (\(conn.client.localAddress()?.description ?? "?"))"
                )
            )
            return
        }
        guard let pod = conn.pod else { return }
        refreshRouting()
        let peer = conn.tlsSummary?.peerIdentity
        let decision = routing.snapshot.authorize(
            sourceIdentity: peer,
            sourceNamespace: peer.flatMap { SpiffeID(uri: $0)?.namespace },
            destinationNamespace: pod.namespace,
            destination: destination
        )
        guard decision.allowed else {
            metrics.decided(.deniedPolicy)
            close(conn, reason: .denied(decision.reason))
            return
        }
        conn.state.startConnecting(now: now)
        connectUpstream(conn, to: UpstreamAddress(destination))
    }

    // MARK: - Copy relay

    /// Pumps both directions of an mTLS connection within the fairness budget.
    func driveCopy(_ conn: Connection) {
        var budget = Self.fairnessBudget
        if let reason = pumpCopy(conn, .outbound, budget: &budget) ?? pumpCopy(conn, .inbound, budget: &budget) {
            close(conn, reason: reason)
            return
        }
        if conn.tlsOut.isDone && conn.tlsIn.isDone {
            close(conn, reason: .finished)
        } else if budget <= 0 && !conn.scheduled {
            conn.scheduled = true
            ready.append(conn.identity)
        }
    }

    private func pumpCopy(_ conn: Connection, _ direction: Direction, budget: inout Int) -> CloseReason? {
        let outbound = direction == .outbound
        let source: Side = outbound ? .client : .upstream
        let sink: Side = outbound ? .upstream : .client
        var flow = outbound ? conn.tlsOut : conn.tlsIn
        defer {
            if outbound { conn.tlsOut = flow } else { conn.tlsIn = flow }
        }
        while budget > 0 {
            if flow.end > flow.start {
                guard flow.writeWantsRead ? isReadable(conn, sink) : isWritable(conn, sink) else { return nil }
                budget -= 1
                // Safe to force: pending bytes live in the direction's buffer.
                switch write(conn, sink, flow.buffer! + flow.start, flow.end - flow.start, &flow) {
                case .bytes(let n):
                    flow.start += n
                    let own = min(n, flow.uncounted)
                    flow.uncounted -= own
                    flow.bytes &+= UInt64(n - own)
                    relayed(n - own, outbound: outbound, conn)
                    if flow.start == flow.end {
                        returnCopyBuffer(flow.buffer!)
                        flow.buffer = nil
                        flow.start = 0
                        flow.end = 0
                    }
                case .blocked:
                    return nil
                case .ended:
                    return .error(call: "write", errno: Errno.brokenPipe)
                case .failed(let reason):
                    return reason
                }
                continue
            }
            if flow.sourceEnded {
                if !flow.sinkShut {
                    if let reason = shutdownSink(conn, sink) { return reason }
                    flow.sinkShut = true
                }
                return nil
            }
            guard flow.readWantsWrite ? isWritable(conn, source) : isReadable(conn, source) else { return nil }
            budget -= 1
            let buffer = flow.buffer ?? takeCopyBuffer()
            flow.buffer = buffer
            switch read(conn, source, buffer, &flow) {
            case .bytes(let n):
                flow.start = 0
                flow.end = n
                conn.state.touched(now: now)
            case .ended:
                flow.sourceEnded = true
                returnCopyBuffer(buffer)
                flow.buffer = nil
            case .blocked:
                returnCopyBuffer(buffer)
                flow.buffer = nil
                return nil
            case .failed(let reason):
                return reason
            }
        }
        return nil
    }

    /// Reads into `buffer` from `side`: decrypted through OpenSSL on the TLS side, recv on
    /// the other.
    private func read(
        _ conn: Connection,
        _ side: Side,
        _ buffer: UnsafeMutableRawPointer,
        _ flow: inout CopyFlow
    ) -> CopyResult {
        if side == conn.tlsSide, let tls = conn.tls {
            let status = tls.read(into: buffer, count: Self.copyBufferSize)
            flow.readWantsWrite = false
            switch status {
            case .done(let n):
                return n > 0 ? .bytes(n) : .blocked
            case .wantRead:
                setReadable(conn, side, false)
                return .blocked
            case .wantWrite:
                setWritable(conn, side, false)
                flow.readWantsWrite = true
                return .blocked
            case .closed:
                return .ended
            case .failed(let failure):
                return .failed(tlsFailure(failure, side: side, call: "SSL_read"))
            }
        }
        let fd = side == .client ? conn.client : conn.upstream
        do {
            guard let n = try fd.receive(into: buffer, count: Self.copyBufferSize).value else {
                setReadable(conn, side, false)
                return .blocked
            }
            if n == 0 { return .ended }
            // A short read emptied the socket (unless a FIN waits behind it).
            if n < Self.copyBufferSize && !hungUp(conn, side) { setReadable(conn, side, false) }
            return .bytes(n)
        } catch {
            return .failed(resetReason(side: side, errno: error.errno, call: "recv"))
        }
    }

    private func write(
        _ conn: Connection,
        _ side: Side,
        _ buffer: UnsafeRawPointer,
        _ count: Int,
        _ flow: inout CopyFlow
    ) -> CopyResult {
        if side == conn.tlsSide, let tls = conn.tls {
            let status = tls.write(from: buffer, count: count)
            flow.writeWantsRead = false
            switch status {
            case .done(let n):
                return .bytes(n)
            case .wantWrite:
                setWritable(conn, side, false)
                return .blocked
            case .wantRead:
                setReadable(conn, side, false)
                flow.writeWantsRead = true
                return .blocked
            case .closed:
                return .ended
            case .failed(let failure):
                return .failed(tlsFailure(failure, side: side, call: "SSL_write"))
            }
        }
        let fd = side == .client ? conn.client : conn.upstream
        do {
            guard let n = try fd.send(from: buffer, count: count).value else {
                setWritable(conn, side, false)
                return .blocked
            }
            if n < count { setWritable(conn, side, false) }
            return .bytes(n)
        } catch {
            return .failed(resetReason(side: side, errno: error.errno, call: "send"))
        }
    }

    /// Forwards end of stream: close_notify then FIN on the TLS side, FIN on the other.
    private func shutdownSink(_ conn: Connection, _ side: Side) -> CloseReason? {
        if side == conn.tlsSide, let tls = conn.tls {
            if case .failed(let failure) = tls.shutdown() {
                return tlsFailure(failure, side: side, call: "SSL_shutdown")
            }
        }
        do {
            try (side == .client ? conn.client : conn.upstream).shutdownWrite()
        } catch  where error.errno == Errno.notConnected {
            // The peer already closed; a FIN has nowhere to go.
        } catch {
            return resetReason(side: side, errno: error.errno, call: "shutdown")
        }
        return nil
    }

    /// A failed TLS read or write: a reset or a truncated stream resets the other side
    /// too, as a plaintext reset would.
    private func tlsFailure(_ failure: TLSFailure, side: Side, call: String) -> CloseReason {
        switch failure.kind {
        case .reset, .truncated:
            return side == .client ? .clientReset : .upstreamReset
        default:
            return .error(call: "\(call) (\(failure.reason))", errno: failure.errno)
        }
    }

    // Readiness of each socket lives in the flows' flags (client readable is the
    // outbound source, client writable the inbound sink, and so on).

    @inline(__always)
    func isReadable(_ conn: Connection, _ side: Side) -> Bool {
        side == .client ? conn.state.outbound.sourceReadable : conn.state.inbound.sourceReadable
    }

    @inline(__always)
    func isWritable(_ conn: Connection, _ side: Side) -> Bool {
        side == .client ? conn.state.inbound.sinkWritable : conn.state.outbound.sinkWritable
    }

    @inline(__always)
    private func hungUp(_ conn: Connection, _ side: Side) -> Bool {
        side == .client ? conn.state.outbound.sourceHungUp : conn.state.inbound.sourceHungUp
    }

    func setReadable(_ conn: Connection, _ side: Side, _ value: Bool) {
        if side == .client {
            conn.state.outbound.sourceReadable = value
        } else {
            conn.state.inbound.sourceReadable = value
        }
    }

    func setWritable(_ conn: Connection, _ side: Side, _ value: Bool) {
        if side == .client { conn.state.inbound.sinkWritable = value } else { conn.state.outbound.sinkWritable = value }
    }

    /// Frees what an mTLS connection holds (at close), keeping a verified server's
    /// session ticket for the next connection.
    func releaseTLS(_ conn: Connection) {
        if let key = conn.sessionKey, let tls = conn.tls, let session = tls.takeSession() {
            if sessions.count >= Self.sessionCache { sessions.removeAll(keepingCapacity: true) }
            sessions[key] = (tls.context, session)
        }
        conn.sessionKey = nil
        for buffer in [conn.tlsOut.buffer, conn.tlsIn.buffer] {
            if let buffer { returnCopyBuffer(buffer) }
        }
        conn.tlsOut = CopyFlow()
        conn.tlsIn = CopyFlow()
        conn.tls = nil
        conn.tunnelTarget = nil
        conn.expectedPeer = nil
        conn.awaitingHeader = false
        conn.tlsSummary = nil
    }
}
