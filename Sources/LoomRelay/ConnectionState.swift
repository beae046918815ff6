// The lifecycle of one relayed connection, apart from I/O: connecting, relaying, and the
// timeouts that end it. The loop asks `timeoutCheck(now:)` periodically and acts on it.

/// Why a connection ended (for logs and counters).
public enum CloseReason: Equatable, Sendable, CustomStringConvertible {
    /// Both directions forwarded FIN after their last byte.
    case finished
    /// The client reset; the upstream was reset too.
    case clientReset
    /// The upstream reset; the client was reset too.
    case upstreamReset
    /// The upstream refused the connection (nothing listening).
    case upstreamRefused
    /// The upstream could not be reached (errno of the failed connect).
    case upstreamUnreachable(errno: Int32)
    /// No answer from the upstream within the connect timeout.
    case connectTimeout
    /// No bytes either way within the idle timeout.
    case idleTimeout
    /// Loom is shutting down and the drain time ran out.
    case shutdown
    /// The pod's network namespace was deleted.
    case podGone
    /// The destination is no service and the pod's namespace refuses unmatched ones.
    case unmatchedRefused
    /// The service's circuit breaker (max connections) is open.
    case circuitOpen
    /// The service (or the route's destination) has no endpoint to try.
    case noEndpoint
    /// The first bytes were malformed HTTP/TLS and the service refuses those.
    case malformedRequest
    /// An unexpected error on a call.
    case error(call: String, errno: Int32)
    /// The mTLS handshake failed (bad or missing certificate, protocol error, peer gone).
    case handshakeFailed(String)
    /// The mTLS handshake (and, inbound, the tunnel header) did not finish in time.
    case handshakeTimeout
    /// The server's certificate names another workload than the endpoint's identity.
    case identityMismatch(expected: String, presented: String)
    /// The authorization policy denies the source (the deciding policy in the text).
    case denied(String)
    /// A plaintext connection to a pod whose namespace is STRICT.
    case plaintextRefused
    /// The tunnel header after the handshake was malformed or names another pod.
    case badTunnelHeader(String)
    /// The pod has no workload certificate (loomd runs without a CA).
    case noCertificate

    public var description: String {
        switch self {
        case .finished: return "finished"
        case .clientReset: return "reset by client"
        case .upstreamReset: return "reset by upstream"
        case .upstreamRefused: return "refused by upstream"
        case .upstreamUnreachable(let e): return "upstream unreachable (errno \(e))"
        case .connectTimeout: return "connect timeout"
        case .idleTimeout: return "idle timeout"
        case .shutdown: return "shutdown"
        case .podGone: return "pod network namespace deleted (or its process exited)"
        case .unmatchedRefused: return "refused: no service, and the namespace refuses unmatched destinations"
        case .circuitOpen: return "refused: circuit breaker open (service at max connections)"
        case .noEndpoint: return "refused: no endpoint available"
        case .malformedRequest: return "refused: malformed first bytes (service policy)"
        case .error(let call, let e): return "\(call) failed (errno \(e))"
        case .handshakeFailed(let why): return "mTLS handshake failed: \(why)"
        case .handshakeTimeout: return "mTLS handshake timeout"
        case .identityMismatch(let expected, let presented):
            return "refused: server identity \(presented) is not the endpoint's \(expected)"
        case .denied(let why): return "refused: \(why)"
        case .plaintextRefused: return "refused: plaintext inbound and the namespace's mTLS mode is STRICT"
        case .badTunnelHeader(let why): return "refused: bad tunnel header: \(why)"
        case .noCertificate: return "refused: no workload certificate (loomd has no CA)"
        }
    }

    /// Whether the peers must see a reset rather than a clean close.
    public var resets: Bool {
        switch self {
        case .finished: return false
        case .idleTimeout: return false
        default: return true
        }
    }
}

/// Connection lifecycle with timeouts (milliseconds on a monotonic clock).
public struct ConnectionState: Equatable, Sendable {
    public enum Phase: Equatable, Sendable {
        /// Waiting for the client's first bytes to choose a route (MSG_PEEK: nothing is
        /// read yet); `since` is when it started.
        case peeking(since: Int64)
        /// Waiting for the upstream connect; `since` is when it started.
        case connecting(since: Int64)
        /// The mTLS handshake (and, on the tunnel port, the tunnel header) is under way;
        /// `since` is when it started.
        case handshaking(since: Int64)
        /// Both sockets are up; bytes flow.
        case relaying
    }

    public private(set) var phase: Phase
    /// Client -> upstream.
    public var outbound = FlowState()
    /// Upstream -> client.
    public var inbound = FlowState()
    /// Last time bytes moved either way (or the connection started).
    public private(set) var lastActivity: Int64

    public init(now: Int64) {
        phase = .connecting(since: now)
        lastActivity = now
    }

    /// The connection waits for its first bytes before routing.
    public mutating func startPeeking(now: Int64) { phase = .peeking(since: now) }

    /// An upstream connect (the first, or a retry on another endpoint) starts at `now`.
    public mutating func startConnecting(now: Int64) { phase = .connecting(since: now) }

    /// An mTLS handshake starts at `now`.
    public mutating func startHandshake(now: Int64) { phase = .handshaking(since: now) }

    /// The upstream connect completed.
    public mutating func connected(now: Int64) {
        phase = .relaying
        lastActivity = now
    }

    /// Bytes moved at `now`.
    public mutating func touched(now: Int64) { lastActivity = now }

    /// Both directions have ended cleanly.
    public var isFinished: Bool { outbound.isDone && inbound.isDone }

    /// True when any bytes sit in a pipe.
    public var hasBufferedBytes: Bool { outbound.buffered > 0 || inbound.buffered > 0 }

    /// A timeout that has fired at `now`, if any.
    public func timeoutCheck(
        now: Int64,
        connectTimeoutMs: Int64,
        idleTimeoutMs: Int64,
        handshakeTimeoutMs: Int64 = 10_000
    ) -> CloseReason? {
        switch phase {
        case .peeking:
            return nil  // the loop decides when peeking has waited long enough
        case .handshaking(let since):
            return now - since >= handshakeTimeoutMs ? .handshakeTimeout : nil
        case .connecting(let since):
            return now - since >= connectTimeoutMs ? .connectTimeout : nil
        case .relaying:
            guard idleTimeoutMs > 0, now - lastActivity >= idleTimeoutMs else { return nil }
            return .idleTimeout
        }
    }
}
