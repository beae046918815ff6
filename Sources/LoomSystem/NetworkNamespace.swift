// Network namespaces: a pod's netns is named (/var/run/netns/NAME), a path, or a PID.
// Sockets keep the netns they were created in, so a thread enters the pod's netns to
// create listeners and upstream sockets there; the process as a whole never moves.
import CLoomLinux

#if canImport(Glibc)
    import Glibc
#endif

/// An open handle on a network namespace.
public struct NetworkNamespace: Sendable, CustomStringConvertible {
    /// What the user named it (name, path or PID), for messages.
    public let name: String
    /// The file that was opened.
    public let path: String
    /// An open descriptor on the namespace file, kept for setns.
    public let fd: FileDescriptor

    /// Resolves a selector: all digits is a PID (/proc/PID/ns/net), a value with a `/` is a
    /// path, anything else is a name under /var/run/netns (as `ip netns add` creates).
    public static func resolvePath(_ selector: String) -> String {
        if !selector.isEmpty, selector.allSatisfy(\.isNumber) { return "/proc/\(selector)/ns/net" }
        if selector.contains("/") { return selector }
        return "/var/run/netns/\(selector)"
    }

    /// Opens the namespace named by `selector`.
    public static func open(_ selector: String) throws(NetworkNamespaceError) -> NetworkNamespace {
        let path = resolvePath(selector)
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 { throw NetworkNamespaceError(selector: selector, path: path, errno: Glibc.errno) }
        return NetworkNamespace(name: selector, path: path, fd: FileDescriptor(rawValue: fd))
    }

    /// The namespace the calling thread is in now.
    public static func current() throws(NetworkNamespaceError) -> NetworkNamespace {
        try open("/proc/thread-self/ns/net")
    }

    /// Which namespace this is (nsfs device and inode): equal for every handle on the
    /// same namespace, whichever name or path opened it.
    public var identity: FileIdentity? { FileIdentity(fd) }

    /// Whether the file this handle was opened from still names the same namespace. A
    /// deleted `ip netns` name, an exited PID, or a name reused for a new namespace all
    /// answer false, although this handle keeps the old namespace alive.
    public var isStillNamed: Bool {
        guard let now = FileIdentity(path: path), let mine = identity else { return false }
        return now == mine
    }

    /// Runs `body` with the calling thread in this namespace, then moves it back to the
    /// namespace it was in.
    public func withEntered<T>(_ body: () throws -> T) throws -> T {
        let home = try NetworkNamespace.current()
        defer { home.fd.close() }
        try enter()
        defer { try? home.enter() }
        return try body()
    }

    /// Moves the calling thread (only) into this namespace.
    public func enter() throws(SystemError) {
        _ = try syscall("setns") { cloom_setns_net(fd.rawValue) }
    }

    public var description: String { name }
}

/// A namespace that could not be opened, with what to check.
public struct NetworkNamespaceError: Error, CustomStringConvertible, Sendable {
    public let selector: String
    public let path: String
    public let errno: CInt

    public init(selector: String, path: String, errno: CInt) {
        self.selector = selector
        self.path = path
        self.errno = errno
    }

    public var description: String {
        let hint =
            errno == ENOENT
            ? "no such network namespace; check `ip netns list` or that the PID is alive"
            : Errno.describe(errno)
        return "cannot open network namespace '\(selector)' (\(path)): \(hint)"
    }
}
