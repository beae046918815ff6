// The admin API: HTTP/1.1 over a root-only Unix socket, and optionally `GET /metrics`
// over TCP for Prometheus. SwiftNIO serves it on one event loop thread of its own, away
// from the relay loops; route handlers (which may program nf_tables for tens of
// milliseconds) run on a small thread pool, never on the event loop.
import Logging
import LoomSystem
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Serves admin requests on a Unix socket (and `/metrics` on TCP if asked).
final class AdminServer: Sendable {
    /// Largest request body accepted (413 beyond).
    static let bodyLimit = 1 << 20
    /// A connection that sends nothing for this long while no answer is pending is closed.
    static let idleTimeout = TimeAmount.seconds(90)
    /// How often a stream is polled.
    static let pollInterval = TimeAmount.milliseconds(50)

    private let path: String
    private let group: MultiThreadedEventLoopGroup
    private let pool: NIOThreadPool
    private let listeners: [Channel]
    private let connections: AdminConnections
    private let streams: AdminStreamRegistry
    /// The bound metrics address (port 0 resolved), if any.
    let metricsLocalAddress: NIOCore.SocketAddress?

    init(
        path: String,
        metricsAddress: (host: String, port: Int)?,
        logger: Logger,
        handler: @escaping @Sendable (AdminHTTPRequest) -> AdminAnswer
    ) throws {
        self.path = path
        if let slash = path.lastIndex(of: "/"), slash != path.startIndex {
            makeDirectories(String(path[..<slash]), mode: 0o700)
        }
        // A live loomd answers on this path: replacing its socket would orphan it.
        if let other = try? LoomSystem.FileDescriptor.unixConnect(path: path) {
            other.close()
            throw AdminError(path: path, error: SystemError("bind", errno: Errno.addressInUse))
        }
        // Bound (mode 0600) and listening before NIO takes it over.
        let unixSocket: LoomSystem.FileDescriptor
        do {
            unixSocket = try LoomSystem.FileDescriptor.unixListener(path: path)
        } catch {
            throw AdminError(path: path, error: error)
        }

        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let pool = NIOThreadPool(numberOfThreads: 2)
        pool.start()
        let connections = AdminConnections()
        let streams = AdminStreamRegistry()
        let shared = AdminHTTPHandler.Shared(pool: pool, handler: handler, logger: logger, streams: streams)
        var listeners: [Channel] = []
        func shutDown() {
            for channel in listeners { try? channel.close().wait() }
            try? pool.syncShutdownGracefully()
            try? group.syncShutdownGracefully()
        }

        let unixBootstrap = Self.bootstrap(group: group, connections: connections) { channel in
            peerCredentials(channel).flatMap { credentials in
                channel.eventLoop.makeCompletedFuture {
                    try Self.configure(channel, shared: shared, viaTCP: false, peerUID: credentials.uid)
                }
            }.flatMapErrorThrowing { error in
                logger.debug("admin connection refused: cannot read its peer credentials: \(error)")
                throw error
            }
        }
        do {
            listeners.append(try unixBootstrap.withBoundSocket(unixSocket.rawValue).wait())
        } catch {
            // NIO owns (and has closed) the descriptor.
            removeFile(path)
            shutDown()
            throw AdminListenError(what: "the admin socket", address: path, reason: "\(error)")
        }

        var metricsLocalAddress: NIOCore.SocketAddress?
        if let metricsAddress {
            let tcpBootstrap = Self.bootstrap(group: group, connections: connections) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try Self.configure(channel, shared: shared, viaTCP: true, peerUID: nil)
                }
            }.serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            let asked = MetricsAddress(host: metricsAddress.host, port: metricsAddress.port)
            do {
                let channel = try tcpBootstrap.bind(host: metricsAddress.host, port: metricsAddress.port).wait()
                listeners.append(channel)
                metricsLocalAddress = channel.localAddress
                let port = channel.localAddress?.port ?? metricsAddress.port
                logger.info("metrics on http://\(MetricsAddress(host: metricsAddress.host, port: port))/metrics")
            } catch {
                removeFile(path)
                shutDown()
                throw AdminListenError(what: "metrics", address: asked.description, reason: "\(error)")
            }
        }
        self.group = group
        self.pool = pool
        self.listeners = listeners
        self.connections = connections
        self.streams = streams
        self.metricsLocalAddress = metricsLocalAddress
    }

    /// Closes the listeners and every connection (cancelling open streams), waits for
    /// handlers still running, removes the socket file and stops the event loop. Blocks;
    /// call it from outside the server's event loop and handlers. A second call does
    /// nothing.
    func stop() {
        guard streams.beginStopping() else { return }
        for channel in listeners { try? channel.close().wait() }
        for channel in connections.all() { try? channel.close().wait() }
        try? pool.syncShutdownGracefully()
        streams.cancelAll()
        removeFile(path)
        try? group.syncShutdownGracefully()
    }

    private static func bootstrap(
        group: EventLoopGroup,
        connections: AdminConnections,
        _ initialize: @escaping @Sendable (Channel) -> EventLoopFuture<Void>
    ) -> ServerBootstrap {
        ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.backlog, value: 64)
            .childChannelOption(ChannelOptions.maxMessagesPerRead, value: 4)
            .childChannelOption(
                ChannelOptions.writeBufferWaterMark,
                value: ChannelOptions.Types.WriteBufferWaterMark(low: 32 * 1024, high: 64 * 1024)
            )
            .childChannelInitializer { channel in
                connections.add(channel)
                return initialize(channel)
            }
    }

    private static func configure(_ channel: Channel, shared: AdminHTTPHandler.Shared, viaTCP: Bool, peerUID: UInt32?)
        throws
    {
        let pipeline = channel.pipeline.syncOperations
        try pipeline.addHandler(IdleStateHandler(readTimeout: idleTimeout))
        try pipeline.configureHTTPServerPipeline(withErrorHandling: true)
        try pipeline.addHandler(AdminHTTPHandler(shared: shared, viaTCP: viaTCP, peerUID: peerUID))
    }
}

/// `struct ucred` (Glibc's module hides it behind _GNU_SOURCE): pid, uid, gid.
private struct PeerCredentials: Sendable {
    var pid: Int32 = 0
    var uid: UInt32 = 0
    var gid: UInt32 = 0
}

/// SO_PEERCRED of a Unix connection: who is on the other end. (Not public, not
/// inlinable: NIO asks so for its unsafe socket option calls.)
private func peerCredentials(_ channel: Channel) -> EventLoopFuture<PeerCredentials> {
    guard let provider = channel as? SocketOptionProvider else {
        return channel.eventLoop.makeFailedFuture(ChannelError.operationUnsupported)
    }
    return provider.unsafeGetSocketOption(level: SocketOptionLevel(SOL_SOCKET), name: SocketOptionName(SO_PEERCRED))
}

/// Open connections, so that `stop()` can close them.
private final class AdminConnections: Sendable {
    private let channels = Mutex<[ObjectIdentifier: Channel]>([:])

    func add(_ channel: Channel) {
        let id = ObjectIdentifier(channel)
        channels.withLock { $0[id] = channel }
        channel.closeFuture.whenComplete { [self] _ in
            _ = channels.withLock { $0.removeValue(forKey: id) }
        }
    }

    func all() -> [Channel] { channels.withLock { Array($0.values) } }
}

/// A stream the server holds, with the promise to cancel it exactly once.
final class AdminStreamBox: Sendable {
    let stream: AdminStream
    private let finished = Atomic<Bool>(false)
    private let registry: AdminStreamRegistry

    fileprivate init(_ stream: AdminStream, registry: AdminStreamRegistry) {
        self.stream = stream
        self.registry = registry
    }

    var isFinished: Bool { finished.load(ordering: .acquiring) }

    /// Cancels the stream the first time; does nothing after.
    func finish() {
        guard !finished.exchange(true, ordering: .acquiringAndReleasing) else { return }
        stream.cancel()
        registry.remove(self)
    }
}

/// Every stream not finished yet, so that `stop()` cancels them.
final class AdminStreamRegistry: Sendable {
    private let state = Mutex<(stopping: Bool, open: [ObjectIdentifier: AdminStreamBox])>((false, [:]))

    /// Takes a stream a handler returned; after `stop()` began, it is cancelled at once.
    func adopt(_ stream: AdminStream) -> AdminStreamBox {
        let box = AdminStreamBox(stream, registry: self)
        let stopping = state.withLock { state in
            if !state.stopping { state.open[ObjectIdentifier(box)] = box }
            return state.stopping
        }
        if stopping { box.finish() }
        return box
    }

    fileprivate func remove(_ box: AdminStreamBox) {
        _ = state.withLock { $0.open.removeValue(forKey: ObjectIdentifier(box)) }
    }

    /// False if stopping had already begun.
    func beginStopping() -> Bool {
        state.withLock { state in
            defer { state.stopping = true }
            return !state.stopping
        }
    }

    func cancelAll() {
        let boxes = state.withLock { Array($0.open.values) }
        for box in boxes { box.finish() }
    }
}

/// One admin connection: reads a request (body limited), refuses non-root peers, runs
/// the route handler on the thread pool and writes its answer or its stream.
private final class AdminHTTPHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    struct Shared: Sendable {
        let pool: NIOThreadPool
        let handler: @Sendable (AdminHTTPRequest) -> AdminAnswer
        let logger: Logger
        let streams: AdminStreamRegistry
    }

    private enum State {
        case idle
        /// A request is coming in; `refusal` is sent instead of calling the handler.
        case reading(HTTPRequestHead, body: [UInt8], refusal: AdminHTTPResponse?)
        /// The handler runs on the pool.
        case answering(HTTPRequestHead)
        case streaming(AdminStreamBox, RepeatedTask?)
        case closed
    }

    private let shared: Shared
    private let viaTCP: Bool
    /// The Unix peer's uid; nil over TCP.
    private let peerUID: UInt32?
    private var state = State.idle

    init(shared: Shared, viaTCP: Bool, peerUID: UInt32?) {
        self.shared = shared
        self.viaTCP = viaTCP
        self.peerUID = peerUID
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            guard case .idle = state else { return }
            let refusal = refusal(for: head)
            state = .reading(head, body: [], refusal: refusal)
            if refusal == nil, head.headers.first(name: "expect")?.lowercased() == "100-continue" {
                // curl asks so before bodies over 1 KiB, and would wait a second otherwise.
                let proceed = HTTPResponseHead(version: head.version, status: .continue)
                context.writeAndFlush(wrapOutboundOut(.head(proceed)), promise: nil)
            }
        case .body(var buffer):
            guard case .reading(let head, var body, var refusal) = state else { return }
            state = .idle  // body is uniquely referenced while it grows
            if refusal == nil {
                if body.count + buffer.readableBytes > AdminServer.bodyLimit {
                    refusal = .error(413, "request body over \(AdminServer.bodyLimit) bytes")
                    body = []
                } else {
                    body += buffer.readBytes(length: buffer.readableBytes) ?? []
                }
            }
            state = .reading(head, body: body, refusal: refusal)
        case .end:
            guard case .reading(let head, let body, let refusal) = state else { return }
            if let refusal {
                shared.logger.debug("admin: \(head.method) \(head.uri): \(refusal.status) \(refusal.body)")
                respond(context: context, head: head, response: refusal, keepAlive: false)
                return
            }
            run(context: context, head: head, body: body)
        }
    }

    /// The answer to send instead of calling the handler, if any.
    private func refusal(for head: HTTPRequestHead) -> AdminHTTPResponse? {
        if let uid = peerUID, uid != 0 {
            return .error(403, "the admin API is root-only (peer uid \(uid))")
        }
        if viaTCP, head.method != .GET || head.uri.split(separator: "?", maxSplits: 1).first != "/metrics" {
            return .error(404, "only GET /metrics is served on this address")
        }
        if let length = head.headers.first(name: "content-length").flatMap(Int.init), length > AdminServer.bodyLimit {
            return .error(413, "request body over \(AdminServer.bodyLimit) bytes")
        }
        return nil
    }

    private func run(context: ChannelHandlerContext, head: HTTPRequestHead, body: [UInt8]) {
        state = .answering(head)
        let request = AdminHTTPRequest(method: head.method.rawValue, target: head.uri, body: body, viaTCP: viaTCP)
        let handler = shared.handler
        let streams = shared.streams
        let answer = shared.pool.runIfActive(eventLoop: context.eventLoop) { () -> AdminOutcome in
            switch handler(request) {
            case .response(let response): return .response(response)
            case .stream(let stream): return .stream(streams.adopt(stream))
            }
        }
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        answer.whenComplete { result in
            let (handler, context) = bound.value
            handler.answered(result, context: context)
        }
    }

    private func answered(_ result: Result<AdminOutcome, Error>, context: ChannelHandlerContext) {
        guard case .answering(let head) = state else {
            // The client went away meanwhile.
            if case .success(.stream(let box)) = result { box.finish() }
            return
        }
        switch result {
        case .failure(let error):
            shared.logger.debug("admin: \(head.method) \(head.uri): handler not run: \(error)")
            respond(context: context, head: head, response: .error(503, "loomd is stopping"), keepAlive: false)
        case .success(.response(let response)):
            if response.status >= 400 {
                shared.logger.debug(
                    "admin: \(head.method) \(head.uri): \(response.status) \(response.body.prefix(300))"
                )
            }
            respond(context: context, head: head, response: response, keepAlive: head.isKeepAlive)
        case .success(.stream(let box)):
            startStream(box, head: head, context: context)
        }
    }

    private func respond(
        context: ChannelHandlerContext,
        head request: HTTPRequestHead,
        response: AdminHTTPResponse,
        keepAlive: Bool
    ) {
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: response.contentType)
        headers.add(name: "content-length", value: String(response.body.utf8.count))
        if !keepAlive { headers.add(name: "connection", value: "close") }
        let head = HTTPResponseHead(
            version: request.version,
            status: HTTPResponseStatus(statusCode: response.status),
            headers: headers
        )
        state = keepAlive ? .idle : .closed
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        let body = context.channel.allocator.buffer(string: response.body)
        context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        let sent = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        if !keepAlive {
            let channel = context.channel
            sent.whenComplete { _ in channel.close(promise: nil) }
        }
    }

    private func startStream(_ box: AdminStreamBox, head request: HTTPRequestHead, context: ChannelHandlerContext) {
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: "application/x-ndjson")
        headers.add(name: "cache-control", value: "no-store")
        headers.add(name: "connection", value: "close")
        let chunked = request.version.major > 1 || (request.version.major == 1 && request.version.minor >= 1)
        if chunked { headers.add(name: "transfer-encoding", value: "chunked") }
        let head = HTTPResponseHead(version: request.version, status: .ok, headers: headers)
        context.writeAndFlush(wrapOutboundOut(.head(head)), promise: nil)
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let task = context.eventLoop.scheduleRepeatedTask(initialDelay: .zero, delay: AdminServer.pollInterval) { _ in
            let (handler, context) = bound.value
            handler.pollStream(context: context)
        }
        state = .streaming(box, task)
    }

    private func pollStream(context: ChannelHandlerContext) {
        guard case .streaming(let box, let task) = state else { return }
        // A client that does not read stops the polling: nothing piles up here.
        guard context.channel.isWritable else { return }
        let (lines, ended) = box.isFinished ? ([], true) : box.stream.poll()
        if !lines.isEmpty {
            var buffer = context.channel.allocator.buffer(capacity: lines.reduce(0) { $0 + $1.utf8.count + 1 })
            for line in lines {
                buffer.writeString(line)
                buffer.writeInteger(UInt8(ascii: "\n"))
            }
            context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        }
        guard ended else {
            if !lines.isEmpty { context.flush() }
            return
        }
        task?.cancel()
        state = .closed
        box.finish()
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if case .streaming(let box, let task) = state {
            task?.cancel()
            box.finish()
        }
        state = .closed
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent {
            switch state {
            case .idle, .reading: context.close(promise: nil)
            default: break  // waiting for the handler, or streaming to a client that only listens
            }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        // A malformed request: HTTPServerProtocolErrorHandler has just sent (flushed) 400.
        shared.logger.debug("admin connection error: \(error)")
        context.close(promise: nil)
    }
}

/// A handler's answer as it crosses from the pool to the event loop.
private enum AdminOutcome: Sendable {
    case response(AdminHTTPResponse)
    case stream(AdminStreamBox)
}

/// The admin socket could not be opened.
public struct AdminError: Error, CustomStringConvertible {
    public let path: String
    public let error: SystemError
    public var description: String {
        if error.errno == Errno.addressInUse {
            return "admin socket \(path) is in use by a running loomd; stop it, or pass --admin-socket PATH"
        }
        return "cannot open the admin socket \(path): \(error); pass --admin-socket PATH to use another path"
    }
}

/// A listener of the admin API could not be set up.
public struct AdminListenError: Error, CustomStringConvertible {
    /// "metrics" or "the admin socket".
    public let what: String
    public let address: String
    public let reason: String
    public var description: String {
        what == "metrics"
            ? "cannot listen for metrics on \(address): \(reason); pass another --metrics-address HOST:PORT"
            : "cannot serve \(what) \(address): \(reason)"
    }
}
