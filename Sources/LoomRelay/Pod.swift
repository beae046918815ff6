// A pod as the relay loops see it: its netns (where upstream sockets are created), its
// listeners, and counters the admin API reads per pod.
import Dispatch
import LoomSystem
import LoomTLS
import Synchronization

/// One intercepted pod, shared by every loop that holds one of its listeners. The netns
/// handle closes when the last reference goes (the controller's and the loops').
public final class PodContext: Sendable {
    /// Stable number for the daemon's lifetime.
    public let id: Int
    /// The pod's name for logs (its netns selector).
    public let name: String
    public let netns: NetworkNamespace
    /// Mesh namespace (decides what happens to destinations that are no service).
    public let namespace: String
    /// Service account (with the namespace, the pod's workload identity).
    public let serviceAccount: String
    /// The pod's workload certificate as a TLS context, replaced at rotation.
    public let tls = PodTLS()
    public let stats = PodStats()
    /// Trace subscriptions and access logs covering this pod. The loops build a
    /// `RelayEvent` only while it is non-zero.
    public let traced = Atomic<Int>(0)

    public init(
        id: Int,
        name: String,
        netns: NetworkNamespace,
        namespace: String = "default",
        serviceAccount: String = "default"
    ) {
        self.id = id
        self.name = name
        self.netns = netns
        self.namespace = namespace
        self.serviceAccount = serviceAccount
    }

    deinit { netns.fd.close() }
}

/// A pod's current TLS context (its workload certificate and the mesh CA). The control
/// plane installs a new one at rotation; a loop takes the current one when an mTLS
/// connection starts, and the connection keeps it (OpenSSL counts the references), so a
/// rotation never touches a connection in flight.
public final class PodTLS: Sendable {
    private let current = Mutex<TLSContext?>(nil)

    public init() {}

    /// The context new connections use (nil: no certificate, mTLS unavailable).
    public var context: TLSContext? { current.withLock { $0 } }

    public func install(_ context: TLSContext?) { current.withLock { $0 = context } }
}

/// Per-pod connection counters, updated by the loops when connections open and close
/// (never per byte).
public final class PodStats: Sendable {
    let active = Atomic<Int>(0)
    let accepted = Atomic<Int>(0)
    let refused = Atomic<Int>(0)
    let failed = Atomic<Int>(0)
    /// Bytes that reached their sink: client -> upstream and upstream -> client.
    public let bytesOut = Counter()
    public let bytesIn = Counter()
    /// Connections ended, by `EndCode` (refusals at accept included).
    public let closed: [Counter] = EndCode.allCases.map { _ in Counter() }

    public init() {}

    public struct Snapshot: Sendable, Equatable {
        public var active = 0
        public var accepted = 0
        public var refused = 0
        public var failed = 0

        public init(active: Int = 0, accepted: Int = 0, refused: Int = 0, failed: Int = 0) {
            self.active = active
            self.accepted = accepted
            self.refused = refused
            self.failed = failed
        }
    }

    public func snapshot() -> Snapshot {
        Snapshot(
            active: active.load(ordering: .relaxed),
            accepted: accepted.load(ordering: .relaxed),
            refused: refused.load(ordering: .relaxed),
            failed: failed.load(ordering: .relaxed)
        )
    }
}

/// Which capture a listener serves.
public enum CaptureKind: String, Sendable {
    /// Connections the pod makes (15001).
    case outbound
    /// Connections made to the pod (15006).
    case inbound
    /// mTLS tunnel connections from other Loom nodes to the pod (15008).
    case tunnel
}

/// A listening socket the controller opened in a pod's netns, handed to one loop.
public struct PodListener: Sendable {
    public let fd: FileDescriptor
    public let family: CInt
    public let port: UInt16
    public let kind: CaptureKind
    public let pod: PodContext

    public init(fd: FileDescriptor, family: CInt, port: UInt16, kind: CaptureKind, pod: PodContext) {
        self.fd = fd
        self.family = family
        self.port = port
        self.kind = kind
        self.pod = pod
    }
}

/// A control message to a loop, queued by the controller and read by the loop between
/// event batches.
public enum LoopCommand: Sendable {
    /// Start accepting on these listeners.
    case addListeners([PodListener])
    /// Close the pod's listeners; with `resetConnections`, also reset its connections (the
    /// pod is gone). `done` is signalled once the loop holds nothing of the pod's.
    case removePod(id: Int, resetConnections: Bool, done: CompletionSignal?)
}

/// Signals from several loops that a controller waits for, with a deadline.
public final class CompletionSignal: Sendable {
    private let semaphore = DispatchSemaphore(value: 0)
    private let expected: Int

    public init(expected: Int) { self.expected = expected }

    public func signal() { semaphore.signal() }

    /// Waits until `expected` signals arrived or `timeoutMs` passed; true if they all did.
    public func wait(timeoutMs: Int) -> Bool {
        let deadline = DispatchTime.now() + .milliseconds(timeoutMs)
        for _ in 0..<expected where semaphore.wait(timeout: deadline) == .timedOut { return false }
        return true
    }
}
