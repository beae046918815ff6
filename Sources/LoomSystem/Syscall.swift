// The one place where Loom calls into the kernel. Every syscall goes through `syscall`
// (or `syscallIO` for calls that may block), which retries EINTR, turns EAGAIN into
// `.wouldBlock`, treats EBADF/EFAULT as a bug, and throws `SystemError` otherwise.
#if canImport(Glibc)
    import Glibc
#endif

/// A failed system call: which call, and the errno it returned.
public struct SystemError: Error, Equatable, CustomStringConvertible, Sendable {
    /// The system call's name, e.g. "connect".
    public let call: StaticString
    /// The errno value.
    public let errno: CInt

    public init(_ call: StaticString, errno: CInt) {
        self.call = call
        self.errno = errno
    }

    public var description: String {
        "\(call): \(String(cString: strerror(errno))) (errno \(errno))"
    }

    public static func == (a: SystemError, b: SystemError) -> Bool {
        a.errno == b.errno && a.call.description == b.call.description
    }
}

/// The result of a non-blocking I/O call.
public enum IOResult<T: Sendable>: Sendable {
    /// The call did its work and returned this value.
    case processed(T)
    /// The kernel answered EAGAIN: try again after readiness.
    case wouldBlock
}

extension IOResult: Equatable where T: Equatable {}

extension IOResult {
    /// The value, or nil for `.wouldBlock`.
    @inline(__always)
    public var value: T? {
        if case .processed(let v) = self { return v }
        return nil
    }
}

@inline(__always)
private func isBug(_ err: CInt) -> Bool { err == EBADF || err == EFAULT }

/// Runs `body` until it does not fail with EINTR. A negative return throws
/// `SystemError(call, errno)`; EBADF and EFAULT are programming errors and trap.
@inline(__always)
public func syscall<T: FixedWidthInteger>(_ call: StaticString, _ body: () -> T) throws(SystemError) -> T {
    while true {
        let result = body()
        if result >= 0 { return result }
        let err = Glibc.errno
        if err == EINTR { continue }
        precondition(!isBug(err), "\(call) failed with \(err): a file descriptor was misused")
        throw SystemError(call, errno: err)
    }
}

/// Like `syscall`, but EAGAIN/EWOULDBLOCK becomes `.wouldBlock` instead of an error.
@inline(__always)
public func syscallIO<T: FixedWidthInteger>(_ call: StaticString, _ body: () -> T) throws(SystemError)
    -> IOResult<T>
{
    while true {
        let result = body()
        if result >= 0 { return .processed(result) }
        let err = Glibc.errno
        if err == EINTR { continue }
        if err == EAGAIN || err == EWOULDBLOCK { return .wouldBlock }
        precondition(!isBug(err), "\(call) failed with \(err): a file descriptor was misused")
        throw SystemError(call, errno: err)
    }
}

/// Well-known errno values, named so that callers outside LoomSystem need not import Glibc.
public enum Errno {
    public static let connectionReset = ECONNRESET
    public static let connectionRefused = ECONNREFUSED
    public static let timedOut = ETIMEDOUT
    public static let brokenPipe = EPIPE
    public static let inProgress = EINPROGRESS
    public static let tooManyFiles = EMFILE
    public static let tooManyFilesSystem = ENFILE
    public static let noBuffers = ENOBUFS
    public static let noMemory = ENOMEM
    public static let noEntry = ENOENT
    public static let hostUnreachable = EHOSTUNREACH
    public static let networkUnreachable = ENETUNREACH
    public static let connectionAborted = ECONNABORTED
    public static let addressInUse = EADDRINUSE
    public static let addressNotAvailable = EADDRNOTAVAIL
    public static let notConnected = ENOTCONN
    public static let familyNotSupported = EAFNOSUPPORT

    /// The text of an errno value, e.g. "Connection refused".
    public static func describe(_ err: CInt) -> String { String(cString: strerror(err)) }
}
