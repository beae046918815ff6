// A relayed connection's resources: two sockets, up to two pipes, and its state machine.
// Objects are recycled through the loop's slot table, so accepting a connection
// allocates nothing once the table has grown.
import LoomMesh
import LoomSystem
import LoomTLS

/// Which socket of a connection an event is for.
public enum Side: UInt64, Sendable {
    case client = 0
    case upstream = 1
}

/// One relayed connection, owned by exactly one relay loop.
final class Connection {
    /// Position in the loop's slot table.
    let index: Int
    /// Bumped each time the slot is reused, so stale epoll tokens are recognised.
    var generation: UInt32 = 0
    var inUse = false
    /// Queued on the loop's ready list (work left after a fairness budget ran out).
    var scheduled = false

    var client = FileDescriptor(rawValue: -1)
    var upstream = FileDescriptor(rawValue: -1)
    /// Pipe for client -> upstream bytes, while bytes are in flight.
    var outboundPipe: Pipe?
    /// Pipe for upstream -> client bytes, while bytes are in flight.
    var inboundPipe: Pipe?
    var state = ConnectionState(now: 0)

    /// The pod whose listener accepted it (per-pod counters; reset when the pod goes).
    var pod: PodContext?
    var clientAddress = ClientAddress(.v4(address: 0, port: 0))
    var destination = OriginalDestination(.v4(address: 0, port: 0))
    /// Where the current upstream socket connects (the original destination, or an
    /// endpoint chosen by routing).
    var upstreamTarget = UpstreamAddress(.v4(address: 0, port: 0))

    // Routing (set when the destination is a service; `runtime` nil: pass-through).
    /// The mesh snapshot the connection was routed with (kept across reloads).
    var runtime: MeshRuntime?
    /// The service port the original destination belongs to.
    var ref = ServiceRef(service: -1, port: -1)
    /// The service and port connected to (after routes), and the endpoint.
    var service = -1
    var servicePort = -1
    var endpoint = -1
    var tried = TriedEndpoints()
    var retriesLeft = 0
    var connectTimeoutMs: Int64 = 0
    /// Counted in the service's active connections (the circuit breaker).
    var countedInService = false
    /// The route chosen within `ref`'s port (-1: none, or the port has no routes).
    var route = -1

    // Trace and metrics.
    var capture = CaptureKind.outbound
    /// Monotonic milliseconds when it was accepted.
    var openedAt: Int64 = 0
    /// Microseconds when the current upstream connect started; how long the one that
    /// completed took (-1: none yet).
    var connectStartedMicros: Int64 = 0
    var connectMicros: Int64 = -1

    // mTLS (nil `tls`: plaintext on both sides, spliced).
    /// The TLS side's OpenSSL stream; bytes then copy through `tlsOut`/`tlsIn`.
    var tls: TLSStream?
    /// Which socket speaks TLS: `.upstream` when this Loom opened the tunnel, `.client`
    /// when it accepted one on the tunnel port.
    var tlsSide = Side.upstream
    /// Outbound tunnel: the endpoint (pod address and port) the far Loom connects to, and
    /// the identity its certificate must carry. nil: no tunnel.
    var tunnelTarget: SocketAddress?
    var expectedPeer: String?
    /// Inbound tunnel: the handshake is done and the tunnel header is being read.
    var awaitingHeader = false
    var handshakeStartedMicros: Int64 = 0
    /// Outbound tunnel whose server proved the expected identity: its session ticket is
    /// kept for the next connection to the same endpoint.
    var sessionKey: SessionKey?
    var tlsSummary: TLSSummary?
    /// Client -> upstream and upstream -> client copy state of an mTLS connection.
    var tlsOut = CopyFlow()
    var tlsIn = CopyFlow()

    init(index: Int) { self.index = index }

    /// The epoll token for one side: generation in the high half, index and side below.
    @inline(__always)
    func token(_ side: Side) -> UInt64 {
        UInt64(generation) << 32 | UInt64(index) << 1 | side.rawValue
    }

    /// Token identifying the connection itself (side bit clear), for queues.
    @inline(__always)
    var identity: UInt64 { token(.client) }
}

/// Where a kept TLS session can resume: the pod's own identity to one endpoint.
struct SessionKey: Hashable {
    var pod: Int
    var endpoint: SocketAddress
}

/// One direction of an mTLS connection: bytes are read into a buffer (from the socket
/// or decrypted by OpenSSL) and written from it. The buffer comes from the loop's pool
/// when a read needs it and goes back when it is empty, so an idle connection holds none.
struct CopyFlow {
    var buffer: UnsafeMutableRawPointer?
    /// Unsent bytes are `start..<end` of the buffer.
    var start = 0
    var end = 0
    var sourceEnded = false
    var sinkShut = false
    /// The last TLS read asked for writability (or a write for readability) first.
    var readWantsWrite = false
    var writeWantsRead = false
    /// Bytes delivered to the sink (the tunnel header excluded).
    var bytes: UInt64 = 0
    /// Leading buffered bytes that are Loom's own (the tunnel header), not counted.
    var uncounted = 0

    var pending: Int { end - start }
    var isDone: Bool { sinkShut && end == start }
}

/// Decoding of epoll tokens. Bit 31 of the low half marks a listener.
enum Token {
    static let listenerFlag: UInt64 = 1 << 31
    /// The loop's control-message bell.
    static let mailbox: UInt64 = listenerFlag | 0x7fff_ffff

    @inline(__always)
    static func listener(_ number: Int) -> UInt64 { listenerFlag | UInt64(number) }

    @inline(__always)
    static func isListener(_ token: UInt64) -> Bool { token & listenerFlag != 0 && token >> 32 == 0 }

    @inline(__always)
    static func decode(_ token: UInt64) -> (index: Int, generation: UInt32, side: Side) {
        (Int((token & 0x7fff_ffff) >> 1), UInt32(truncatingIfNeeded: token >> 32), token & 1 == 0 ? .client : .upstream)
    }
}
