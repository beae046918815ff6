// Owning wrapper for file descriptors. Ownership is by discipline, not by the type system:
// exactly one owner (a Connection, the PipePool, a Listener) calls `close()` once and then
// forgets the value. `FileDescriptor` is a plain value so it can live in arrays and pools
// without an allocation per descriptor.
import CLoomLinux

#if canImport(Glibc)
    import Glibc
#endif

/// A file descriptor number. Closing is explicit (`close()`), exactly once, by its owner.
public struct FileDescriptor: Hashable, Sendable, CustomStringConvertible {
    /// The kernel's number for it.
    public let rawValue: CInt

    public init(rawValue: CInt) { self.rawValue = rawValue }

    /// Closes the descriptor. EINTR is not retried: on Linux the fd is gone either way.
    public func close() {
        _ = Glibc.close(rawValue)
    }

    public var description: String { "fd \(rawValue)" }
}

/// A non-blocking pipe: bytes spliced into `write` come out of `read`.
public struct Pipe: Sendable {
    public let read: FileDescriptor
    public let write: FileDescriptor
    /// Capacity in bytes as granted by the kernel.
    public let capacity: Int

    /// Creates a non-blocking pipe and asks for `size` bytes of capacity (0: kernel default).
    public static func make(size: Int) throws(SystemError) -> Pipe {
        var fds: (CInt, CInt) = (-1, -1)
        _ = try withUnsafeMutableBytes(of: &fds) { (raw) throws(SystemError) -> CInt in
            // Safe: a tuple of two CInt is laid out as int[2], which pipe2 fills.
            try syscall("pipe2") { cloom_pipe(raw.baseAddress!.assumingMemoryBound(to: CInt.self)) }
        }
        let read = FileDescriptor(rawValue: fds.0)
        let write = FileDescriptor(rawValue: fds.1)
        var capacity = Int(cloom_pipe_get_size(write.rawValue))
        if size > 0 && size != capacity {
            let granted = cloom_pipe_set_size(write.rawValue, CInt(size))
            // EPERM past the per-user limit: keep the default size rather than fail.
            if granted > 0 { capacity = Int(granted) }
        }
        return Pipe(read: read, write: write, capacity: capacity)
    }

    /// The same pipe with its capacity changed to `size` (F_SETPIPE_SZ), or nil if the
    /// kernel refused (bytes inside exceed the size, or the per-user limit is reached).
    public func resized(to size: Int) -> Pipe? {
        let granted = cloom_pipe_set_size(write.rawValue, CInt(size))
        return granted > 0 ? Pipe(read: read, write: write, capacity: Int(granted)) : nil
    }

    /// Closes both ends (bytes still inside are discarded).
    public func close() {
        read.close()
        write.close()
    }
}

/// splice(2) between two descriptors, non-blocking, with SPLICE_F_MOVE.
/// Returns bytes moved, 0 at end of stream of `from`, or `.wouldBlock`.
@inline(__always)
public func splice(from: FileDescriptor, to: FileDescriptor, count: Int, more: Bool = false)
    throws(SystemError) -> IOResult<Int>
{
    switch try syscallIO("splice", { cloom_splice(from.rawValue, to.rawValue, count, more ? 1 : 0) }) {
    case .processed(let n): return .processed(n)
    case .wouldBlock: return .wouldBlock
    }
}
