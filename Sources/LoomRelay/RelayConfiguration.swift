// Settings of the relay core and the resource budget derived from them.
import LoomSystem

/// Settings shared by every relay loop.
public struct RelayConfiguration: Sendable, Equatable {
    /// Number of relay loops (threads); default one per core.
    public var loops: Int
    /// Port of the outbound capture listener inside the pod (15001).
    public var outboundPort: UInt16
    /// SO_MARK set on every upstream socket; the nf_tables rules exempt it.
    public var socketMark: UInt32
    /// Give up on an upstream connect after this long (milliseconds).
    public var connectTimeoutMs: Int64
    /// Close a connection with no bytes either way for this long (milliseconds; 0: never).
    public var idleTimeoutMs: Int64
    /// Size a bulk direction's pipe grows to (pipes start at the kernel's 64 KiB; 65536 or
    /// less: never grow).
    public var pipeSize: Int
    /// Connections across all loops; nil: as many as the fd budget allows.
    public var maxConnections: Int?
    /// Listen backlog.
    public var backlog: Int32
    /// Also listen on [::] for IPv6.
    public var ipv6: Bool
    /// After handling events, keep polling epoll without sleeping for this long
    /// (microseconds; 0: sleep at once).
    public var busyPollMicroseconds: Int64
    /// How long a connection to a port whose routes read the first bytes waits for them
    /// before it is routed without them (milliseconds). Server-speaks-first protocols
    /// belong on `tcp` ports, which never wait.
    public var peekTimeoutMs: Int64
    /// The port other Loom nodes' mTLS tunnels arrive on, in every pod (15008).
    public var tunnelPort: UInt16
    /// An mTLS handshake (with the tunnel header, inbound) must finish within this long
    /// (milliseconds), or the connection is closed.
    public var handshakeTimeoutMs: Int64

    public init(
        loops: Int = 1,
        outboundPort: UInt16 = LoomPorts.outbound,
        socketMark: UInt32 = LoomPorts.socketMark,
        connectTimeoutMs: Int64 = 10_000,
        idleTimeoutMs: Int64 = 3_600_000,
        pipeSize: Int = 1 << 20,
        maxConnections: Int? = nil,
        backlog: Int32 = 4096,
        ipv6: Bool = true,
        busyPollMicroseconds: Int64 = 0,
        peekTimeoutMs: Int64 = 500,
        tunnelPort: UInt16 = LoomPorts.tunnel,
        handshakeTimeoutMs: Int64 = 10_000
    ) {
        self.loops = loops
        self.outboundPort = outboundPort
        self.socketMark = socketMark
        self.connectTimeoutMs = connectTimeoutMs
        self.idleTimeoutMs = idleTimeoutMs
        self.pipeSize = pipeSize
        self.maxConnections = maxConnections
        self.backlog = backlog
        self.ipv6 = ipv6
        self.busyPollMicroseconds = busyPollMicroseconds
        self.peekTimeoutMs = peekTimeoutMs
        self.tunnelPort = tunnelPort
        self.handshakeTimeoutMs = handshakeTimeoutMs
    }

}

/// How many connections and pipes fit in the process's limits.
///
/// An idle connection holds 2 fds (client and upstream sockets). A pipe holds 2 fds and
/// at least 16 pages (64 KiB) of the per-user pipe budget (`fs.pipe-user-pages-soft`);
/// bulk pipes take more pages, never more fds. Pipes are held only while bytes are in
/// flight, so the pipe count is capped separately and charged in full to the fd budget.
public struct ResourceBudget: Equatable, Sendable, CustomStringConvertible {
    /// Open-files limit of the process.
    public let fileLimit: Int
    /// Fds kept for listeners, epoll, the admin socket, logs, and the like.
    public let reservedFiles: Int
    /// Pipe pages allowed in total.
    public let pipePages: Int
    /// Pages the smallest pipe (64 KiB) takes.
    public let pagesPerPipe: Int
    /// Pipes allowed across all loops.
    public let maxPipes: Int
    /// Connections allowed across all loops.
    public let maxConnections: Int
    /// Whether a requested connection limit was lowered to fit.
    public let clamped: Bool

    /// Computes the budget. `requestedConnections` is the user's limit, if any.
    public init(fileLimit: Int, pipePages: Int, pageSize: Int, loops: Int, requestedConnections: Int?) {
        self.fileLimit = fileLimit
        self.reservedFiles = 64 + 4 * loops
        self.pipePages = pipePages
        self.pagesPerPipe = max(1, 65536 / pageSize)
        // Pipes (2 fds each) may take at most half of the fds that are not reserved.
        let pipeFdRoom = max(0, (fileLimit - reservedFiles) / 4)
        self.maxPipes = max(2 * loops, min(pipePages / pagesPerPipe, pipeFdRoom))
        let fit = max(loops, (fileLimit - reservedFiles - 2 * maxPipes) / 2)
        if let requested = requestedConnections, requested <= fit {
            maxConnections = max(1, requested)
            clamped = false
        } else {
            maxConnections = fit
            clamped = requestedConnections != nil
        }
    }

    /// Pipe pages one loop may use: its share of what the pipe count allows.
    public func pipePagesPerLoop(loops: Int) -> Int { maxPipes * pagesPerPipe / max(1, loops) }

    public var description: String {
        "\(fileLimit) fds = \(reservedFiles) reserved + \(2 * maxPipes) for \(maxPipes) pipes "
            + "(\(pipePages) pipe pages / \(pagesPerPipe) per pipe) + 2 x \(maxConnections) connections"
    }
}
